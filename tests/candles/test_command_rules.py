"""`manage.py rules list|add|remove|apply`."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from candles.models import Subscription, SubscriptionRule

pytestmark = pytest.mark.django_db


@pytest.fixture
def market(instrument):
    instrument("BTC-USDT", quote_ccy="USDT")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT")


def rules(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("rules", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_add_subscribes_and_list_shows_the_rule(market):
    out, _ = rules("add", "swaps", "--type", "SWAP", "--bar", "1m", "--bar", "1H")
    assert "rule 'swaps' saved: matches 1 instruments (2 pairs); subscriptions: 2 created" in out
    assert Subscription.objects.filter(is_active=True, rule__name="swaps").count() == 2

    listed, _ = rules("list")
    assert "swaps" in listed
    assert "1m,1H" in listed
    assert "1 × bars = 2" in listed


def test_add_with_all_bars_a_pattern_and_a_history_start(market):
    rules("add", "btc", "--pattern", "btc-*", "--all-bars", "--backfill-from", "2026-11-01")
    rule = SubscriptionRule.objects.get()
    assert (rule.inst_id_pattern, rule.all_bars, rule.backfill_from.isoformat()) == (
        "BTC-*", True, "2026-11-01T00:00:00+00:00")
    assert Subscription.objects.filter(is_active=True).count() == 2 * 27


def test_a_rule_matching_nothing_warns_on_stderr(market):
    _, err = rules("add", "later", "--pattern", "SOL-*", "--bar", "1m")
    assert "warning: Rule 'later' matches no collectable instrument" in err


@pytest.mark.parametrize(("args", "message"), [
    (["add", "x", "--bar", "1h"], "bars: Unknown bars: 1h"),
    (["add", "x", "--bar", "1m", "--pattern", "BTC-%"], "inst_id_pattern: An instId pattern"),
    (["add", "x", "--bar", "1m", "--backfill-from", "soon"], "--backfill-from: 'soon' is neither"),
    (["remove", "nope"], "no rule 'nope' (rules: none)"),
    (["add", "x", "--price", "mark", "--bar", "1s"], "bars: OKX has no 1s mark candles"),
    (["add", "x", "--price", "mark", "--type", "SPOT", "--bar", "1m"], "inst_type: OKX publishes mark prices for"),
])
def test_bad_input_is_a_clear_command_error(market, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rules(*args)
    assert not SubscriptionRule.objects.exists()


def test_add_a_mark_rule_and_list_shows_its_price(market, instrument):
    instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT", price="mark")
    out, _ = rules("add", "swap-marks", "--price", "mark", "--type", "SWAP", "--bar", "1m", "--bar", "1H")

    assert "matches 1 instruments (2 pairs); subscriptions: 2 created" in out
    assert set(Subscription.objects.values_list("instrument__price", flat=True)) == {"mark"}
    header, row = rules("list")[0].splitlines()
    assert (header.split()[2], row.split()[2]) == ("price", "mark")


def test_remove_ends_the_rules_subscriptions_and_apply_is_idempotent(market):
    rules("add", "swaps", "--type", "SWAP", "--bar", "1m")
    out, _ = rules("remove", "swaps")
    assert "rule 'swaps' removed; subscriptions: 0 created, 0 updated, 1 ended (no rule)" in out
    assert not Subscription.objects.filter(is_active=True).exists()
    out, _ = rules("apply")
    assert "subscriptions: 0 created, 0 updated, 0 ended" in out


def test_the_help_names_every_subcommand_with_examples():
    from candles.management.commands.rules import Command

    text = Command().create_parser("manage.py", "rules").format_help()
    assert "{list,add,remove,apply}" in text
    assert "manage.py rules add swaps --type SWAP --bar 1m --bar 1H" in text
