"""Rules of a price kind: "every SWAP × mark × {1m, 1H}", "every USD index × 1m" (docs/price-kinds.md).

A rule matches the instrument rows of its kind only, never the trade rows of the same ids; mark and index rules
have no 1s bar.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from candles.models import Instrument, Subscription, SubscriptionRule, Timeframe
from candles.rules import rule_create, rule_matches, rule_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def market(instrument):
    """Trade rows, the derivatives' mark rows and indices, as the instrument sync keeps them."""
    instrument("BTC-USDT", base_ccy="BTC", quote_ccy="USDT")
    instrument("BTC-USD", base_ccy="BTC", quote_ccy="USD")  # a spot pair and an index share this id
    for inst_id, settle in (("BTC-USDT-SWAP", "USDT"), ("ETH-USDT-SWAP", "USDT"), ("BTC-USD-SWAP", "BTC")):
        for price in ("trade", "mark"):
            instrument(inst_id, inst_type="SWAP", settle_ccy=settle, price=price)
    for price in ("trade", "mark"):
        instrument("BTC-USDT-270326", inst_type="FUTURES", settle_ccy="USDT", price=price)
    # The sync stores the quote an index was listed under; the id's second part is its quote all the same.
    for inst_id, listed_under in (("BTC-USD", "USD"), ("ETH-USD", ""), ("BTC-USDT", "USDT"), ("SOL-USD", "USDT")):
        instrument(inst_id, inst_type="INDEX", price="index", quote_ccy=listed_under)
    instrument("OLD-USD", inst_type="INDEX", price="index", quote_ccy="USD", delisted_at=timezone.now())


def held() -> set[tuple[str, str, str, bool, str | None]]:
    """(inst_id, price, bar, active, rule name) of every subscription."""
    return {(s.instrument.inst_id, s.instrument.price, s.timeframe.code, s.is_active, s.rule and s.rule.name)
            for s in Subscription.objects.select_related("instrument", "timeframe", "rule")}


def test_every_swap_mark_in_1m_and_1h_subscribes_the_swaps_mark_series_and_no_trade_series(market):
    outcome = rule_create(name="swap marks", price="mark", inst_type="SWAP", bars=["1m", "1H"])

    assert held() == {(inst_id, "mark", bar, True, "swap marks")
                      for inst_id in ("BTC-USDT-SWAP", "ETH-USDT-SWAP", "BTC-USD-SWAP") for bar in ("1m", "1H")}
    assert (outcome.materialized.created, outcome.matches.instruments, outcome.matches.pairs) == (6, 3, 6)
    assert SubscriptionRule.objects.get().price == "mark"


def test_every_usd_index_in_1m_subscribes_the_live_indices_whose_id_is_quoted_in_usd(market):
    outcome = rule_create(name="usd indices", price="index", quote_ccy="usd", bars=["1m"])

    # SOL-USD was listed under USDT, BTC-USDT is quoted in USDT, OLD-USD is delisted, the spot pair BTC-USD has
    # trades only.
    assert held() == {("BTC-USD", "index", "1m", True, "usd indices"),
                      ("ETH-USD", "index", "1m", True, "usd indices"),
                      ("SOL-USD", "index", "1m", True, "usd indices")}
    assert (outcome.matches.instruments, outcome.matches.pairs) == (3, 3)


def test_a_trade_rule_keeps_matching_trade_rows_only(market):
    rule_create(name="usdt swaps", inst_type="SWAP", quote_ccy="USDT", bars=["1m"])
    rule_create(name="usd", quote_ccy="USD", bars=["1m"])

    assert held() == {("BTC-USDT-SWAP", "trade", "1m", True, "usdt swaps"),
                      ("ETH-USDT-SWAP", "trade", "1m", True, "usdt swaps"),
                      ("BTC-USD", "trade", "1m", True, "usd"),
                      ("BTC-USD-SWAP", "trade", "1m", True, "usd")}


def test_a_trade_and_a_mark_rule_over_the_same_instruments_hold_one_series_each(market):
    rule_create(name="trades", inst_id_pattern="BTC-USDT-*", bars=["1m"])
    rule_create(name="marks", price="mark", inst_id_pattern="BTC-USDT-*", bars=["1m"])

    assert held() == {("BTC-USDT-SWAP", "trade", "1m", True, "trades"),
                      ("BTC-USDT-270326", "trade", "1m", True, "trades"),
                      ("BTC-USDT-SWAP", "mark", "1m", True, "marks"),
                      ("BTC-USDT-270326", "mark", "1m", True, "marks")}


def test_a_mark_rule_without_a_type_matches_every_derivative(market):
    rule_create(name="marks", price="mark", bars=["5m"])
    assert {(i, p) for i, p, *_ in held()} == {
        ("BTC-USDT-SWAP", "mark"), ("ETH-USDT-SWAP", "mark"), ("BTC-USD-SWAP", "mark"), ("BTC-USDT-270326", "mark")}


@pytest.mark.parametrize("price", ["mark", "index"])
def test_all_bars_of_a_mark_or_index_rule_is_every_active_bar_but_1s(market, price):
    assert Timeframe.objects.get(code="1s").is_active
    rule_create(name="all", price=price, inst_id_pattern="BTC-USD*", all_bars=True)

    expected = set(Timeframe.objects.filter(is_active=True).exclude(code="1s").values_list("code", flat=True))
    assert {bar for _, _, bar, _, _ in held()} == expected
    assert rule_matches(rule=SubscriptionRule.objects.get()).pairs == len(held())


def test_changing_a_rules_price_ends_the_old_kinds_series(market):
    outcome = rule_create(name="btc", inst_id_pattern="BTC-USDT-SWAP", bars=["1m"])
    result = rule_update(rule=outcome.rule, price="mark").materialized

    assert (result.created, result.ended) == (1, 1)
    assert held() == {("BTC-USDT-SWAP", "trade", "1m", False, "btc"), ("BTC-USDT-SWAP", "mark", "1m", True, "btc")}


@pytest.mark.parametrize(("fields", "field_name", "message"), [
    ({"price": "bogus", "bars": ["1m"]}, "price", "not a valid choice"),
    ({"price": "mark", "inst_type": "SPOT", "bars": ["1m"]}, "inst_type", "SWAP, FUTURES and OPTION"),
    ({"price": "index", "inst_type": "SWAP", "bars": ["1m"]}, "inst_type", "choose INDEX"),
    ({"price": "trade", "inst_type": "INDEX", "bars": ["1m"]}, "inst_type", "price index"),
    ({"price": "index", "settle_ccy": "USDT", "bars": ["1m"]}, "settle_ccy", "no settlement currency"),
    ({"price": "mark", "bars": ["1s", "1m"]}, "bars", "no 1s mark candles"),
    ({"price": "index", "bars": ["1s"]}, "bars", "no 1s index candles"),
])
def test_rules_a_price_kind_cannot_have_are_refused_with_the_field_named(market, fields, field_name, message):
    with pytest.raises(ValidationError) as caught:
        rule_create(name="bad", **fields)
    assert message in " ".join(caught.value.message_dict[field_name])
    assert not SubscriptionRule.objects.exists()
    assert not Subscription.objects.exists()


def test_materializing_mark_rules_is_set_based(market, django_assert_max_num_queries):
    Instrument.objects.bulk_create([Instrument(inst_id=f"C{k:04d}-USDT-SWAP", inst_type="SWAP", price=price)
                                    for k in range(300) for price in ("trade", "mark")])
    # The same 13 queries as a trade rule's (tests/candles/test_rules.py), for 303 × 26 mark pairs.
    with django_assert_max_num_queries(13):
        outcome = rule_create(name="marks", price="mark", inst_type="SWAP", all_bars=True)
    assert outcome.materialized.created == 303 * Timeframe.objects.filter(is_active=True).exclude(code="1s").count()
