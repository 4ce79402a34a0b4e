"""GET/POST /rules, GET/PATCH/DELETE /rules/{id}: rules declared over HTTP, bad ones refused with the envelope."""

from __future__ import annotations

import pytest

from candles.models import Subscription, SubscriptionRule
from tests.candles.api.fixtures import envelope_of

pytestmark = pytest.mark.django_db

RULES = "/api/v1/rules"


@pytest.fixture
def market(instrument):
    instrument("BTC-USDT", quote_ccy="USDT")
    instrument("ETH-USDT", quote_ccy="USDT")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT")
    instrument("ETH-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT")


def active() -> set[tuple[str, str]]:
    return set(Subscription.objects.filter(is_active=True).values_list("instrument__inst_id", "timeframe__code"))


def test_creating_a_rule_subscribes_what_it_matches_and_answers_201(token_api, market):
    response = token_api.post(RULES, {"name": "swaps", "inst_type": "SWAP", "bars": ["1m", "1H"]}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["rule"]["name"] == "swaps"
    assert body["rule"]["bars"] == ["1m", "1H"]
    assert body["rule"]["active_subscriptions"] == 4
    assert body["matches"] == {"instruments": 2, "pairs": 4}
    assert body["materialized"]["created"] == 4
    assert body["warnings"] == []
    assert active() == {(i, b) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP") for b in ("1m", "1H")}


def test_all_bars_is_written_and_read_as_all(token_api, market):
    body = token_api.post(RULES, {"name": "btc", "inst_id_pattern": "BTC-USDT", "bars": "all"},
                          format="json").json()
    assert body["rule"]["bars"] == "all"
    assert body["matches"]["pairs"] == 27


def test_a_rule_matching_nothing_is_created_with_a_warning(token_api, market):
    response = token_api.post(RULES, {"name": "later", "inst_id_pattern": "SOL-*", "bars": ["1m"]}, format="json")
    assert response.status_code == 201
    assert response.json()["matches"] == {"instruments": 0, "pairs": 0}
    assert "matches no collectable instrument" in response.json()["warnings"][0]


def test_rules_need_authentication_to_write(api, market):
    response = api.post(RULES, {"name": "x", "bars": ["1m"]}, format="json")
    assert response.status_code == 401
    assert envelope_of(response)["error_code"] == "NOT_AUTHENTICATED"


def test_an_unknown_bar_is_400_invalid_timeframes(token_api, market):
    response = token_api.post(RULES, {"name": "x", "bars": ["1m", "1h", "2x"]}, format="json")
    assert response.status_code == 400
    envelope = envelope_of(response)
    assert envelope["error_code"] == "INVALID_TIMEFRAMES"
    assert envelope["details"] == {"invalid_timeframes": ["1h", "2x"]}
    assert not SubscriptionRule.objects.exists()


@pytest.mark.parametrize(("payload", "field"), [
    ({"name": "x", "bars": ["1m"], "inst_id_pattern": "BTC-%"}, "inst_id_pattern"),
    ({"name": "x", "bars": ["1m"], "inst_id_pattern": "[BE]TC-*"}, "inst_id_pattern"),
    ({"name": "x", "bars": []}, "bars"),
    ({"name": "x", "bars": "some"}, "bars"),
    ({"name": "x", "bars": [1]}, "bars"),
    ({"name": "x", "bars": ["1m"], "inst_type": "STOCK"}, "inst_type"),
    ({"name": "x", "bars": ["1m"], "webhook_url": "nope"}, "webhook_url"),
    ({"name": "x", "bars": ["1m"], "backfill_from": "yesterday-ish"}, "backfill_from"),
    ({"bars": ["1m"]}, "name"),
    ({"name": "x"}, "bars"),
])
def test_a_malformed_rule_is_400_validation_error_naming_the_field(token_api, market, payload, field):
    response = token_api.post(RULES, payload, format="json")
    assert response.status_code == 400, response.content
    envelope = envelope_of(response)
    assert envelope["error_code"] == "VALIDATION_ERROR"
    assert field in envelope["details"]
    assert not SubscriptionRule.objects.exists()


def test_a_duplicate_name_is_400(token_api, market):
    token_api.post(RULES, {"name": "x", "bars": ["1m"], "inst_type": "SWAP"}, format="json")
    response = token_api.post(RULES, {"name": "x", "bars": ["1H"]}, format="json")
    assert response.status_code == 400
    assert "name" in envelope_of(response)["details"]


def test_a_body_that_is_not_json_is_400(token_api, market):
    response = token_api.post(RULES, "{", content_type="application/json")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "MALFORMED_REQUEST"


@pytest.fixture
def rule_id(token_api, market) -> int:
    return token_api.post(RULES, {"name": "swaps", "inst_type": "SWAP", "bars": ["1m", "1H"]},
                          format="json").json()["rule"]["id"]


def test_list_and_read_one(api, rule_id):
    listed = api.get(RULES).json()
    assert listed["count"] == 1
    assert listed["results"][0]["id"] == rule_id
    one = api.get(f"{RULES}/{rule_id}")
    assert one.status_code == 200
    assert one.json()["active_subscriptions"] == 4


def test_an_unknown_rule_is_404_rule_not_found(api, db):
    response = api.get(f"{RULES}/999999")
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "RULE_NOT_FOUND"


def test_patching_a_rule_ends_what_it_no_longer_matches(token_api, rule_id):
    response = token_api.patch(f"{RULES}/{rule_id}", {"bars": ["1m"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["materialized"]["ended"] == 2
    assert active() == {("BTC-USDT-SWAP", "1m"), ("ETH-USDT-SWAP", "1m")}


def test_a_bad_patch_is_400_and_changes_nothing(token_api, rule_id):
    response = token_api.patch(f"{RULES}/{rule_id}", {"bars": ["1M", "1y"]}, format="json")
    assert response.status_code == 400
    assert envelope_of(response)["details"] == {"invalid_timeframes": ["1y"]}
    assert SubscriptionRule.objects.get().bars == ["1m", "1H"]
    assert len(active()) == 4


def test_deleting_a_rule_ends_its_subscriptions(token_api, rule_id):
    response = token_api.delete(f"{RULES}/{rule_id}")
    assert response.status_code == 204
    assert not active()
    assert Subscription.objects.count() == 4  # paused, not deleted: their candles and history stay


def test_the_schema_documents_the_rules_endpoints(api, db):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    assert {"/api/v1/rules", "/api/v1/rules/{id}"} <= set(schema["paths"])


def test_subscriptions_name_the_rule_that_holds_them(api, token_api, rule_id):
    token_api.post("/api/v1/subscribe", {"symbols": ["BTC-USDT"], "timeframes": ["1m"]}, format="json")
    rows = api.get("/api/v1/subscriptions", {"limit": 10}).json()["results"]
    assert {(r["symbol"], r["timeframe"], r["rule"]) for r in rows} == {
        ("BTC-USDT", "1m", None), ("BTC-USDT-SWAP", "1m", rule_id), ("BTC-USDT-SWAP", "1H", rule_id),
        ("ETH-USDT-SWAP", "1m", rule_id), ("ETH-USDT-SWAP", "1H", rule_id)}


# --- price kinds (docs/price-kinds.md) ------------------------------------------------------------------


@pytest.fixture
def priced_market(market, instrument):
    """The market's swaps with their mark rows, and two indices."""
    for inst_id in ("BTC-USDT-SWAP", "ETH-USDT-SWAP"):
        instrument(inst_id, inst_type="SWAP", settle_ccy="USDT", price="mark")
    instrument("BTC-USD", inst_type="INDEX", price="index", quote_ccy="USD")
    instrument("BTC-USDT", inst_type="INDEX", price="index", quote_ccy="USDT")


def active_series() -> set[tuple[str, str, str]]:
    return set(Subscription.objects.filter(is_active=True).values_list(
        "instrument__inst_id", "instrument__price", "timeframe__code"))


def test_a_mark_rule_subscribes_mark_series_and_says_its_price(api, token_api, priced_market):
    response = token_api.post(RULES, {"name": "swap marks", "price": "mark", "inst_type": "SWAP",
                                      "bars": ["1m", "1H"]}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["rule"]["price"] == "mark"
    assert active_series() == {(i, "mark", b) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP") for b in ("1m", "1H")}
    rows = api.get("/api/v1/subscriptions", {"limit": 10}).json()["results"]
    assert {(r["symbol"], r["price"], r["timeframe"]) for r in rows} == active_series()


def test_an_index_rule_by_quote_and_a_rule_without_price_is_trade(token_api, priced_market):
    index = token_api.post(RULES, {"name": "usd", "price": "index", "quote_ccy": "USD", "bars": ["1m"]},
                           format="json")
    trade = token_api.post(RULES, {"name": "btc", "inst_id_pattern": "BTC-USDT", "bars": ["1m"]}, format="json")

    assert (index.json()["rule"]["price"], trade.json()["rule"]["price"]) == ("index", "trade")
    assert active_series() == {("BTC-USD", "index", "1m"), ("BTC-USDT", "trade", "1m")}


def test_patching_the_price_keeps_the_other_filters(token_api, rule_id, priced_market):
    response = token_api.patch(f"{RULES}/{rule_id}", {"price": "mark"}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["rule"]["price"], response.json()["rule"]["inst_type"]) == ("mark", "SWAP")
    assert active_series() == {(i, "mark", b) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP") for b in ("1m", "1H")}


@pytest.mark.parametrize(("payload", "code", "details"), [
    ({"price": "bogus", "bars": ["1m"]}, "VALIDATION_ERROR", "price"),
    ({"price": "mark", "inst_type": "SPOT", "bars": ["1m"]}, "VALIDATION_ERROR", "inst_type"),
    ({"price": "index", "inst_type": "SWAP", "bars": ["1m"]}, "VALIDATION_ERROR", "inst_type"),
    ({"price": "index", "settle_ccy": "USDT", "bars": ["1m"]}, "VALIDATION_ERROR", "settle_ccy"),
    ({"price": "mark", "bars": ["1s", "1m"]}, "INVALID_TIMEFRAMES", {"invalid_timeframes": ["1s"], "price": "mark"}),
])
def test_a_rule_its_price_cannot_have_is_400(token_api, priced_market, payload, code, details):
    response = token_api.post(RULES, {"name": "x", **payload}, format="json")

    assert response.status_code == 400, response.content
    envelope = envelope_of(response)
    assert envelope["error_code"] == code
    if isinstance(details, dict):
        assert envelope["details"] == details
    else:
        assert details in envelope["details"]  # the field named
    assert not SubscriptionRule.objects.exists()
