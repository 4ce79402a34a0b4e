"""Subscription rules: validation, set-based materialization, ownership and overlap with explicit subscriptions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from candles.models import Instrument, Subscription, SubscriptionRule, Timeframe
from candles.rules import rule_create, rule_delete, rule_matches, rule_update, rules_materialize
from candles.signals import subscriptions_changed
from candles.subscriptions import subscription_update, subscriptions_create, subscriptions_pause

pytestmark = pytest.mark.django_db


@pytest.fixture
def market(instrument):
    instrument("BTC-USDT", base_ccy="BTC", quote_ccy="USDT")
    instrument("ETH-USDT", base_ccy="ETH", quote_ccy="USDT")
    instrument("ETH-BTC", base_ccy="ETH", quote_ccy="BTC")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT", inst_family="BTC-USDT")
    instrument("BTC-USD-SWAP", inst_type="SWAP", settle_ccy="BTC", inst_family="BTC-USD")
    instrument("OLD-USDT", quote_ccy="USDT", delisted_at=timezone.now())


def held() -> set[tuple[str, str, bool, str | None]]:
    return {(s.instrument.inst_id, s.timeframe.code, s.is_active, s.rule and s.rule.name)
            for s in Subscription.objects.select_related("instrument", "timeframe", "rule")}


def active_pairs() -> set[tuple[str, str]]:
    return {(i, b) for i, b, active, _ in held() if active}


def test_a_swap_rule_subscribes_every_swap_in_its_bars(market):
    outcome = rule_create(name="swaps", inst_type="SWAP", bars=["1m", "1H"])

    assert held() == {(i, b, True, "swaps") for i in ("BTC-USDT-SWAP", "BTC-USD-SWAP") for b in ("1m", "1H")}
    assert (outcome.materialized.created, outcome.matches.instruments, outcome.matches.pairs) == (4, 2, 4)
    assert outcome.warnings == []


def test_quote_currency_matches_spot_quote_and_swap_instid(market):
    rule_create(name="usdt", quote_ccy="usdt", bars=["1D"])

    assert active_pairs() == {("BTC-USDT", "1D"), ("ETH-USDT", "1D"), ("BTC-USDT-SWAP", "1D")}
    assert SubscriptionRule.objects.get().quote_ccy == "USDT"  # normalized


def test_all_bars_means_every_active_bar(market):
    Timeframe.objects.filter(code="1s").update(is_active=False)
    rule_create(name="btc", inst_id_pattern="BTC-USDT", all_bars=True)

    assert {b for _, b in active_pairs()} == set(Timeframe.objects.filter(is_active=True)
                                                 .values_list("code", flat=True))


@pytest.mark.parametrize(("pattern", "expected"), [
    ("BTC-*", {"BTC-USDT", "BTC-USDT-SWAP", "BTC-USD-SWAP"}),
    ("*-USDT-SWAP", {"BTC-USDT-SWAP"}),
    ("???-USDT", {"BTC-USDT", "ETH-USDT"}),
    ("eth-btc", {"ETH-BTC"}),
])
def test_the_instid_pattern_is_a_glob(market, pattern, expected):
    rule_create(name="p", inst_id_pattern=pattern, bars=["1m"])
    assert {i for i, _ in active_pairs()} == expected


def test_an_underscore_in_a_pattern_is_literal(instrument):
    instrument("A_B-USDT")
    instrument("AXB-USDT")
    rule_create(name="p", inst_id_pattern="A_B-*", bars=["1m"])
    assert active_pairs() == {("A_B-USDT", "1m")}


@pytest.mark.parametrize(("fields", "field_name"), [
    ({"bars": ["1h"]}, "bars"),  # 1H exists; 1h does not
    ({"bars": []}, "bars"),
    ({"bars": ["1m"], "inst_id_pattern": "BTC-%"}, "inst_id_pattern"),
    ({"bars": ["1m"], "inst_id_pattern": "BTC USDT"}, "inst_id_pattern"),
    ({"bars": ["1m"], "inst_type": "STOCK"}, "inst_type"),
    ({"bars": ["1m"], "webhook_url": "not a url"}, "webhook_url"),
])
def test_bad_rules_are_refused_with_the_field_named(market, fields, field_name):
    with pytest.raises(ValidationError) as caught:
        rule_create(name="bad", **fields)
    assert field_name in caught.value.message_dict
    assert not SubscriptionRule.objects.exists()
    assert not Subscription.objects.exists()


def test_a_rule_that_matches_nothing_is_saved_with_a_warning(market):
    outcome = rule_create(name="later", inst_id_pattern="BTC-USDT-270326", bars=["1m"])
    assert outcome.rule.pk is not None
    assert outcome.matches.instruments == 0
    assert "matches no collectable instrument" in outcome.warnings[0]


def test_changing_a_rule_ends_what_it_no_longer_matches_and_keeps_candles_rows(market):
    outcome = rule_create(name="r", inst_type="SWAP", bars=["1m", "1H"])
    result = rule_update(rule=outcome.rule, bars=["1m"]).materialized

    assert (result.created, result.ended) == (0, 2)
    ended = Subscription.objects.get(instrument__inst_id="BTC-USDT-SWAP", timeframe__code="1H")
    assert (ended.is_active, ended.ended_at is not None) == (False, True)
    assert ended.status_message.startswith("no active rule matches since ")

    rule_update(rule=outcome.rule, bars=["1m", "1H"])  # and back: the ended rows are resumed, not duplicated
    assert Subscription.objects.count() == 4
    assert len(active_pairs()) == 4


def test_deleting_a_rule_ends_its_subscriptions(market):
    outcome = rule_create(name="r", inst_type="SWAP", bars=["1m"])
    result = rule_delete(rule=outcome.rule)
    assert result.ended == 2
    assert not active_pairs()
    assert not SubscriptionRule.objects.exists()
    # Ended, so a later rule resumes them.
    rule_create(name="again", inst_type="SWAP", bars=["1m"])
    assert held() == {("BTC-USDT-SWAP", "1m", True, "again"), ("BTC-USD-SWAP", "1m", True, "again")}


def test_an_explicit_subscription_is_never_touched_by_a_rule(market):
    explicit = subscriptions_create(inst_ids=["BTC-USDT-SWAP"], bars=["1m"], webhook_url="https://mine.example")
    outcome = rule_create(name="r", inst_type="SWAP", bars=["1m"], webhook_url="https://rule.example")
    rule_delete(rule=outcome.rule)

    sub = Subscription.objects.get(pk=explicit.created[0].pk)
    assert (sub.is_active, sub.rule_id, sub.webhook_url) == (True, None, "https://mine.example")
    assert active_pairs() == {("BTC-USDT-SWAP", "1m")}


def test_an_operators_pause_of_a_held_subscription_sticks(market):
    rule_create(name="r", inst_id_pattern="BTC-USDT", bars=["1m"])
    subscriptions_pause(inst_id="BTC-USDT")

    rules_materialize()

    assert held() == {("BTC-USDT", "1m", False, "r")}


def test_subscribing_a_held_pair_explicitly_makes_it_explicit(market):
    outcome = rule_create(name="r", inst_id_pattern="BTC-USDT", bars=["1m"])
    result = subscriptions_create(inst_ids=["BTC-USDT"], bars=["1m"])
    assert len(result.unchanged) == 1
    rule_delete(rule=outcome.rule)
    assert held() == {("BTC-USDT", "1m", True, None)}


def test_overlapping_rules_hand_a_pair_over_without_a_pause(market):
    first = rule_create(name="a", inst_id_pattern="BTC-USDT", bars=["1m"]).rule
    rule_create(name="b", quote_ccy="USDT", bars=["1m"])
    assert ("BTC-USDT", "1m", True, "a") in held()

    result = rule_delete(rule=first)

    assert result.ended == 0
    assert ("BTC-USDT", "1m", True, "b") in held()


def test_a_deactivated_rule_ends_and_a_reactivated_one_resumes(market):
    rule = rule_create(name="r", inst_type="SWAP", bars=["1m"]).rule
    rule_update(rule=rule, is_active=False)
    assert not active_pairs()
    rule_update(rule=rule, is_active=True)
    assert len(active_pairs()) == 2


def test_a_held_subscription_follows_its_rules_settings(market):
    rule = rule_create(name="r", inst_id_pattern="BTC-USDT", bars=["1m"]).rule
    start = timezone.now() - timedelta(days=3)
    rule_update(rule=rule, webhook_url="https://h.example", backfill_from=start)
    sub = Subscription.objects.get()
    assert (sub.webhook_url, sub.backfill_from) == ("https://h.example", start)


def test_materializing_twice_changes_nothing_and_sends_one_signal_per_change(
        market, django_capture_on_commit_callbacks):
    sent = []
    subscriptions_changed.connect(receiver := lambda sender, **kw: sent.append(sender))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            rule_create(name="r", quote_ccy="USDT", all_bars=True)
        assert sent == [Subscription]
        with django_capture_on_commit_callbacks(execute=True):
            again = rules_materialize()
    finally:
        subscriptions_changed.disconnect(receiver)
    assert not again.changed
    assert sent == [Subscription]


def test_an_operator_resume_after_an_end_clears_the_end(market):
    rule = rule_create(name="r", inst_id_pattern="BTC-USDT", bars=["1m"]).rule
    rule_update(rule=rule, is_active=False)
    sub = Subscription.objects.get()
    assert sub.ended_at is not None
    subscription_update(subscription=sub, is_active=True)
    sub.refresh_from_db()
    assert (sub.is_active, sub.ended_at) == (True, None)


def test_rule_matches_counts_an_unsaved_rule(market):
    rule = SubscriptionRule(name="x", inst_id_pattern="BTC-*", bars=["1m", "5m"])
    assert rule_matches(rule=rule).pairs == 6
    assert rule_matches(rule=rule).instruments == 3


def test_expired_instruments_are_not_matched(market, instrument):
    instrument("BTC-USDT-261225", inst_type="FUTURES", settle_ccy="USDT",
               expires_at=timezone.now() - timedelta(minutes=1))
    instrument("BTC-USDT-270326", inst_type="FUTURES", settle_ccy="USDT",
               expires_at=timezone.now() + timedelta(days=90))
    rule_create(name="futures", inst_type="FUTURES", bars=["1m"])
    assert active_pairs() == {("BTC-USDT-270326", "1m")}


def _instruments(n: int) -> None:
    Instrument.objects.bulk_create(
        [Instrument(inst_id=f"C{k:04d}-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT") for k in range(n)])


@pytest.mark.parametrize("count", [10, 300])
def test_materializing_is_set_based_its_queries_do_not_grow_with_instruments(
        count, django_assert_max_num_queries):
    _instruments(count)
    rule = SubscriptionRule(name="swaps", inst_type="SWAP", all_bars=True)

    # Validation (unique name, bars), savepoints, the insert, the lock, the end of finished instruments, the
    # materializing statement and the match count: the same 13 for 270 pairs as for 8,100.
    with django_assert_max_num_queries(13):
        outcome = rule_create(name=rule.name, inst_type=rule.inst_type, all_bars=True)
    bars = Timeframe.objects.filter(is_active=True).count()
    assert outcome.materialized.created == count * bars

    with django_assert_max_num_queries(14):
        rule_update(rule=outcome.rule, all_bars=False, bars=["1m"])
    assert Subscription.objects.filter(is_active=True).count() == count
