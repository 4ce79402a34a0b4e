"""POST /subscribe, DELETE /subscribe/{symbol} and the subscription list by price kind: `price=trade|mark|index`.

A mark subscription is a subscription of the instrument's mark row (docs/price-kinds.md); bad input is the same
clear 400 as the reads' (tests/candles/api/test_data_price.py).
"""

from __future__ import annotations

import pytest

from candles.models import Subscription
from tests.candles.api.fixtures import envelope_of

pytestmark = pytest.mark.django_db

SUBSCRIBE = "/api/v1/subscribe"


@pytest.fixture
def market(instrument):
    """A spot pair (also an index id), two swaps with their mark rows, an index, and a swap whose mark row the sync
    has not made yet."""
    instrument("BTC-USDT", quote_ccy="USDT")
    instrument("BTC-USDT", inst_type="INDEX", price="index", quote_ccy="USDT")
    for inst_id in ("BTC-USDT-SWAP", "ETH-USDT-SWAP"):
        instrument(inst_id, inst_type="SWAP", settle_ccy="USDT")
        instrument(inst_id, inst_type="SWAP", settle_ccy="USDT", price="mark")
    instrument("BTC-USD", inst_type="INDEX", price="index", quote_ccy="USD")
    instrument("SOL-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT")


def series() -> set[tuple[str, str, str, bool]]:
    """(symbol, price, bar, active) of every subscription."""
    return set(Subscription.objects.values_list("instrument__inst_id", "instrument__price", "timeframe__code",
                                                "is_active"))


def subscribe(token_api, symbols: list[str], timeframes: list[str], **fields):
    return token_api.post(SUBSCRIBE, {"symbols": symbols, "timeframes": timeframes, **fields}, format="json")


def test_price_mark_subscribes_the_mark_series_and_each_row_says_its_price(token_api, market):
    response = subscribe(token_api, ["BTC-USDT-SWAP", "ETH-USDT-SWAP"], ["1m", "1H"], price="mark")

    assert response.status_code == 201, response.content
    assert {(s["symbol"], s["price"], s["timeframe"]) for s in response.json()["subscriptions"]} == {
        (i, "mark", b) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP") for b in ("1m", "1H")}
    assert series() == {(i, "mark", b, True) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP") for b in ("1m", "1H")}


def test_price_index_subscribes_the_index_not_the_spot_pair_of_the_same_id(token_api, market):
    response = subscribe(token_api, ["BTC-USDT", "BTC-USD"], ["1m"], price="index")

    assert response.status_code == 201, response.content
    assert series() == {("BTC-USDT", "index", "1m", True), ("BTC-USD", "index", "1m", True)}


def test_without_price_it_is_trade_as_before_and_each_kind_is_its_own_pair(token_api, market):
    assert subscribe(token_api, ["BTC-USDT-SWAP"], ["1m"]).json()["subscriptions"][0]["price"] == "trade"
    again = subscribe(token_api, ["BTC-USDT-SWAP"], ["1m"], price="mark")

    assert (again.status_code, again.json()["created"]) == (201, 1)  # not "unchanged": another series
    assert series() == {("BTC-USDT-SWAP", "trade", "1m", True), ("BTC-USDT-SWAP", "mark", "1m", True)}


@pytest.mark.parametrize(("symbols", "timeframes", "price", "code", "details"), [
    (["BTC-USDT-SWAP"], ["1m"], "bogus", "VALIDATION_ERROR", {"price"}),
    # An instrument id is not an index; a spot pair has no mark price: the symbols that cannot, every one.
    (["BTC-USDT-SWAP", "BTC-USD", "ETH-USDT-SWAP"], ["1m"], "index", "INVALID_PRICE",
     {"price": "index", "invalid_symbols": ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]}),
    (["BTC-USDT", "BTC-USDT-SWAP"], ["1m"], "mark", "INVALID_PRICE",
     {"price": "mark", "invalid_symbols": ["BTC-USDT"]}),
    (["BTC-USD"], ["1m"], "mark", "INVALID_PRICE", {"price": "mark", "invalid_symbols": ["BTC-USD"]}),
    # Mark and index candles start at 1m.
    (["BTC-USDT-SWAP"], ["1s", "1m"], "mark", "INVALID_TIMEFRAMES", {"invalid_timeframes": ["1s"], "price": "mark"}),
    (["BTC-USD"], ["1s"], "index", "INVALID_TIMEFRAMES", {"invalid_timeframes": ["1s"], "price": "index"}),
    # No such series (yet): unknown, as an unknown trade symbol is.
    (["SOL-USDT-SWAP", "NOPE-USD"], ["1m"], "mark", "INVALID_SYMBOLS",
     {"invalid_symbols": ["SOL-USDT-SWAP", "NOPE-USD"], "invalid_timeframes": []}),
])
def test_bad_price_requests_are_clear_400s_and_subscribe_nothing(token_api, market, symbols, timeframes, price, code,
                                                                 details):
    response = subscribe(token_api, symbols, timeframes, price=price)

    assert response.status_code == 400, response.content
    envelope = envelope_of(response)
    assert envelope["error_code"] == code
    assert (set(envelope["details"]) if isinstance(details, set) else envelope["details"]) == details
    assert not Subscription.objects.exists()


def test_invalid_price_says_why_for_each_symbol(token_api, market):
    message = envelope_of(subscribe(token_api, ["BTC-USDT", "BTC-USDT-SWAP"], ["1m"], price="mark"))["message"]
    assert "'BTC-USDT' is SPOT: OKX publishes mark prices for SWAP, FUTURES and OPTION." in message


# --- DELETE /subscribe/{symbol}?price= and GET /subscriptions?price= ----------------------------------------


@pytest.fixture
def both(token_api, market):
    """BTC-USDT-SWAP in 1m and 1H, trade and mark."""
    for price in ("trade", "mark"):
        assert subscribe(token_api, ["BTC-USDT-SWAP"], ["1m", "1H"], price=price).status_code == 201


def test_unsubscribing_without_price_pauses_the_trade_series_only(token_api, both):
    response = token_api.delete("/api/v1/subscribe/BTC-USDT-SWAP")

    assert (response.status_code, response.json()["paused"]) == (200, 2)
    assert {s["price"] for s in response.json()["subscriptions"]} == {"trade"}
    assert series() == {("BTC-USDT-SWAP", p, b, p == "mark") for p in ("trade", "mark") for b in ("1m", "1H")}


def test_unsubscribing_with_price_mark_pauses_the_mark_series(token_api, both):
    response = token_api.delete("/api/v1/subscribe/BTC-USDT-SWAP?price=mark&timeframe=1H")

    assert (response.status_code, response.json()["paused"]) == (200, 1)
    assert series() == {("BTC-USDT-SWAP", "trade", "1m", True), ("BTC-USDT-SWAP", "trade", "1H", True),
                        ("BTC-USDT-SWAP", "mark", "1m", True), ("BTC-USDT-SWAP", "mark", "1H", False)}
    again = token_api.delete("/api/v1/subscribe/BTC-USDT-SWAP?price=mark&timeframe=1H")
    assert (again.status_code, envelope_of(again)["error_code"]) == (404, "SUBSCRIPTION_NOT_FOUND")
    assert envelope_of(again)["details"] == {"symbol": "BTC-USDT-SWAP", "timeframe": "1H", "price": "mark"}


@pytest.mark.parametrize(("url", "code"), [
    ("/api/v1/subscribe/BTC-USDT-SWAP?price=bogus", "VALIDATION_ERROR"),
    ("/api/v1/subscribe/BTC-USDT-SWAP?price=index", "INVALID_PRICE"),
    ("/api/v1/subscribe/BTC-USDT?price=mark", "INVALID_PRICE"),
    ("/api/v1/subscribe/BTC-USDT-SWAP?price=mark&timeframe=1s", "INVALID_TIMEFRAMES"),
])
def test_bad_unsubscribe_prices_are_400_and_pause_nothing(token_api, both, url, code):
    response = token_api.delete(url)

    assert (response.status_code, envelope_of(response)["error_code"]) == (400, code)
    assert all(active for *_, active in series())


def test_the_list_shows_each_rows_price_and_filters_by_it(api, both):
    everything = api.get("/api/v1/subscriptions").json()
    marks = api.get("/api/v1/subscriptions", {"price": "mark"}).json()

    assert everything["count"] == 4
    assert {(r["price"], r["timeframe"]) for r in marks["results"]} == {("mark", "1m"), ("mark", "1H")}
    one = api.get(f"/api/v1/subscriptions/{marks['results'][0]['id']}").json()
    assert (one["symbol"], one["price"]) == ("BTC-USDT-SWAP", "mark")
    bogus = api.get("/api/v1/subscriptions", {"price": "bogus"})
    assert (bogus.status_code, envelope_of(bogus)["error_code"]) == (400, "VALIDATION_ERROR")
