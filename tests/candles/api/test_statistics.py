"""GET /statistics/{symbol} and GET /market/overview: exact figures over stored candles."""

from __future__ import annotations

from decimal import Context, Decimal

import pytest
from django.utils import timezone

from candles.models import Subscription
from candles.subscriptions import subscriptions_create
from tests.candles.api.fixtures import envelope_of
from tests.conftest import utc

pytestmark = pytest.mark.django_db

NOW = utc(2024, 1, 16, 20, 0, 30)


@pytest.fixture(autouse=True)
def frozen_now(monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)


def candle(stored_candles, inst, code, moment, o, h, l, c, vol, vol_ccy, quote, confirmed=True):  # noqa: E741
    stored_candles(inst, code, [moment], open=Decimal(o), high=Decimal(h), low=Decimal(l), close=Decimal(c),
                   vol=Decimal(vol), vol_ccy=Decimal(vol_ccy), vol_ccy_quote=None if quote is None else Decimal(quote),
                   confirmed=confirmed)


@pytest.fixture
def hour(btc, stored_candles):
    """Three 1m candles in the last hour (the newest still open) and one just before it."""
    candle(stored_candles, btc, "1m", utc(2024, 1, 16, 18, 59), "1", "1000", "1", "1", "99", "99", "99")
    candle(stored_candles, btc, "1m", utc(2024, 1, 16, 19, 10), "100", "110", "95", "105", "2", "210", "210")
    candle(stored_candles, btc, "1m", utc(2024, 1, 16, 19, 30), "105", "120", "100", "118", "1", "118", "118")
    candle(stored_candles, btc, "1m", utc(2024, 1, 16, 20, 0), "118", "119", "90", "91.5", "0.5", "45.75", None,
           confirmed=False)
    return btc


def test_statistics_of_the_last_hour_are_exact(api, hour):
    response = api.get("/api/v1/statistics/BTC-USDT", {"period": "1h", "timeframe": "1m"})
    assert response.status_code == 200
    body = response.json()
    assert (body["symbol"], body["timeframe"], body["period"]) == ("BTC-USDT", "1m", "1h")
    assert (body["start"], body["end"]) == ("2024-01-16T19:00:30Z", "2024-01-16T20:00:30Z")
    vwap = Context(prec=18).plus(Context(prec=40).divide(Decimal("373.75"), Decimal("3.5"))).normalize()
    assert body["statistics"] == {
        "open": "100", "close": "91.5", "change": "-8.5", "change_percent": "-8.5000", "high": "120",
        "low": "90", "volume": "3.5", "volume_currency": "373.75", "volume_quote": None,
        "vwap": format(vwap, "f"), "vwap_method": "quote_volume",
        "candle_count": 3, "expected_candles": 60, "completeness_percent": "5.00",
    }
    assert body["statistics"]["vwap"] == "106.785714285714286"


def test_the_default_period_is_24h_and_the_default_bar_1m(api, hour):
    body = api.get("/api/v1/statistics/BTC-USDT").json()
    assert (body["period"], body["timeframe"]) == ("24h", "1m")
    assert body["statistics"]["candle_count"] == 4
    assert body["statistics"]["expected_candles"] == 24 * 60


def test_completeness_counts_from_the_listing_when_it_is_later(api, hour):
    hour.listed_at = utc(2024, 1, 16, 19, 30)
    hour.save()
    figures = api.get("/api/v1/statistics/BTC-USDT", {"period": "1h"}).json()["statistics"]
    assert (figures["expected_candles"], figures["completeness_percent"]) == (31, "9.68")  # 3 of 31


def test_a_derivative_s_vwap_is_quote_over_base_volume_and_typical_price_without_quotes(
        api, instrument, stored_candles):
    swap = instrument("BTC-USDT-SWAP", inst_type="SWAP")
    candle(stored_candles, swap, "1H", utc(2024, 1, 16, 19), "100", "110", "90", "100", "10", "0.1", "10.5")
    figures = api.get("/api/v1/statistics/BTC-USDT-SWAP", {"period": "24h", "timeframe": "1H"}).json()["statistics"]
    assert (figures["vwap"], figures["vwap_method"]) == ("105", "quote_volume")
    candle(stored_candles, swap, "1H", utc(2024, 1, 16, 20), "100", "120", "90", "90", "10", "0.1", None)
    figures = api.get("/api/v1/statistics/BTC-USDT-SWAP", {"period": "24h", "timeframe": "1H"}).json()["statistics"]
    # ((110 + 90 + 100) / 3 × 10 + (120 + 90 + 90) / 3 × 10) / 20
    assert (figures["vwap"], figures["vwap_method"]) == ("100", "typical_price")


def test_without_candles_the_figures_are_null_and_completeness_zero(api, btc):
    figures = api.get("/api/v1/statistics/BTC-USDT", {"period": "7d", "timeframe": "1D"}).json()["statistics"]
    assert figures["open"] is None
    assert figures["vwap"] is None
    assert (figures["candle_count"], figures["expected_candles"], figures["completeness_percent"]) == (0, 7, "0.00")


def test_monthly_bars_count_calendar_months(api, btc):
    figures = api.get("/api/v1/statistics/BTC-USDT", {"period": "30d", "timeframe": "1M"}).json()["statistics"]
    assert figures["expected_candles"] == 1  # 2024-01-01 00:00 UTC+8 is before the period; February's is after


@pytest.mark.parametrize(("query", "status", "code"), [
    ("period=2h", 400, "VALIDATION_ERROR"),
    ("period=24H", 400, "VALIDATION_ERROR"),
    ("timeframe=1h", 400, "INVALID_TIMEFRAMES"),
    ("timeframe=%00", 400, "VALIDATION_ERROR"),
])
def test_bad_statistics_parameters(api, btc, query, status, code):
    response = api.get(f"/api/v1/statistics/BTC-USDT?{query}")
    assert response.status_code == status
    assert envelope_of(response)["error_code"] == code


def test_statistics_of_an_unknown_symbol_is_404(api, db):
    response = api.get("/api/v1/statistics/NOPE-USDT")
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "SYMBOL_NOT_FOUND"


# --- market overview ------------------------------------------------------------------------------


def test_the_overview_lists_every_actively_subscribed_symbol_from_its_shortest_bar_of_a_minute_or_more(
        api, instrument, stored_candles):
    btc, sol = instrument("BTC-USDT"), instrument("SOL-USDT")
    instrument("ETH-USDT")
    subscriptions_create(inst_ids=["BTC-USDT"], bars=["1s", "1m", "1H"])
    subscriptions_create(inst_ids=["ETH-USDT"], bars=["1H"])
    subscriptions_create(inst_ids=["SOL-USDT"], bars=["1m"])
    Subscription.objects.filter(instrument=sol).update(is_active=False)
    candle(stored_candles, btc, "1m", utc(2024, 1, 15, 20, 0), "1", "1", "1", "1", "1", "1", "1")  # before 24 h
    candle(stored_candles, btc, "1m", utc(2024, 1, 15, 20, 1), "40000", "41000", "39000", "40500", "2", "81000",
           "81000")
    candle(stored_candles, btc, "1m", utc(2024, 1, 16, 20, 0), "40500", "42500", "40400", "42000", "1.5", "63000",
           "63000", confirmed=False)
    candle(stored_candles, btc, "1s", utc(2024, 1, 16, 20, 0, 29), "9", "9", "9", "9", "9", "9", "9")

    response = api.get("/api/v1/market/overview")
    assert response.status_code == 200
    body = response.json()
    assert (body["timestamp"], body["count"]) == ("2024-01-16T20:00:30Z", 2)
    assert body["symbols"] == [
        {"symbol": "BTC-USDT", "timeframe": "1m", "last_price": "42000", "last_time": "2024-01-16T20:00:00Z",
         "open_24h": "40000", "change_24h_percent": "5.0000", "high_24h": "42500", "low_24h": "39000",
         "volume_24h": "3.5", "volume_quote_24h": "144000"},
        {"symbol": "ETH-USDT", "timeframe": "1H", "last_price": None, "last_time": None, "open_24h": None,
         "change_24h_percent": None, "high_24h": None, "low_24h": None, "volume_24h": None,
         "volume_quote_24h": None},
    ]


def test_the_overview_shows_the_last_price_of_a_symbol_that_has_not_traded_for_days(api, instrument, stored_candles):
    eth = instrument("ETH-USDT")
    subscriptions_create(inst_ids=["ETH-USDT"], bars=["1H"])
    candle(stored_candles, eth, "1H", utc(2023, 12, 31, 23, 0), "2300", "2310", "2290", "2305.50", "3", "6900", "6900")

    (line,) = api.get("/api/v1/market/overview").json()["symbols"]

    assert (line["last_price"], line["last_time"], line["open_24h"]) == ("2305.50", "2023-12-31T23:00:00Z", None)


def test_the_overview_without_subscriptions_is_empty(api, db):
    assert api.get("/api/v1/market/overview").json()["symbols"] == []
