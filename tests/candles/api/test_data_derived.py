"""GET /data/{symbol}/{bar} for a bar OKX does not offer: rows built from a stored bar, their coverage, the same
filters, cursors and CSV as a stored bar, and a 400 naming what can be asked for."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from tests.candles.api.fixtures import envelope_of
from tests.conftest import utc

pytestmark = pytest.mark.django_db

T0 = utc(2024, 1, 16, 18, 57)  # a 7m boundary: 28,423,857 minutes since the epoch, a multiple of 7
MINUTE = timedelta(minutes=1)


@pytest.fixture
def minutes(btc, stored_candles):
    """50 one-minute candles from T0, closes 100.00, 100.01, …; the minute at T0 + 10 (19:07) is missing and the
    last one is still open."""
    for i in range(50):
        if i != 10:
            stored_candles(btc, "1m", [T0 + i * MINUTE], confirmed=i < 49, close=Decimal(f"100.{i:02d}"))
    return btc


def page(api, url: str) -> dict:
    response = api.get(url)
    assert response.status_code == 200, response.content
    return response.json()


def test_a_derived_candle_has_the_stored_shape_plus_its_coverage(api, minutes):
    body = page(api, "/api/v1/data/BTC-USDT/7m?sort=asc&limit=2")
    assert body["timeframe"] == "7m"
    assert body["derived_from"] == "1m"
    assert body["data"] == [
        {"timestamp": "2024-01-16T18:57:00Z", "open_time_ms": 1705431420000, "open": "100", "high": "110",
         "low": "90", "close": "100.06", "volume": "10.5", "volume_currency": "1102.5", "volume_quote": "1102.5",
         "confirm": True, "constituents": 7, "expected": 7},
        {"timestamp": "2024-01-16T19:04:00Z", "open_time_ms": 1705431840000, "open": "100", "high": "110",
         "low": "90", "close": "100.13", "volume": "9.0", "volume_currency": "945.0", "volume_quote": "945.0",
         "confirm": False, "constituents": 6, "expected": 7},  # 19:07 was never stored
    ]


def test_the_bucket_holding_the_open_candle_is_not_confirmed(api, minutes):
    newest = page(api, "/api/v1/data/BTC-USDT/7m?limit=1")["data"][0]
    assert (newest["timestamp"], newest["close"], newest["constituents"], newest["confirm"]) == (
        "2024-01-16T19:46:00Z", "100.49", 1, False)


def test_latest_of_a_derived_bar_is_its_newest_bucket_with_its_coverage(api, minutes):
    body = page(api, "/api/v1/data/BTC-USDT/7m/latest")

    assert (body["timeframe"], body["derived_from"]) == ("7m", "1m")
    assert body["candle"] == page(api, "/api/v1/data/BTC-USDT/7m?limit=1")["data"][0]
    assert (body["candle"]["constituents"], body["candle"]["expected"], body["candle"]["confirm"]) == (1, 7, False)


def test_latest_of_a_derived_bar_with_nothing_stored_is_no_data_and_a_bad_name_is_400(api, minutes):
    response = api.get("/api/v1/data/BTC-USDT/7H/latest")  # built from 1H: none stored
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "NO_DATA_FOUND"

    response = api.get("/api/v1/data/BTC-USDT/1h/latest")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "INVALID_TIMEFRAMES"


@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_following_next_links_misses_nothing(api, minutes, sort):
    seen, url = [], f"/api/v1/data/BTC-USDT/7m?limit=2&sort={sort}&start_time=2024-01-16T19:00:00Z"
    while url:
        body = page(api, url)
        seen += [c["open_time_ms"] for c in body["data"]]
        following = body["pagination"]["next"]
        url = following and urlsplit(following)._replace(scheme="", netloc="").geturl()
    expected = [1705431420000 + k * 420_000 for k in range(1, 8)]  # 19:04 … 19:46; 18:57 opens before 19:00
    assert seen == (expected if sort == "asc" else expected[::-1])


def test_confirmed_filters_on_the_derived_candle(api, minutes):
    assert [c["timestamp"][11:16] for c in page(api, "/api/v1/data/BTC-USDT/7m?confirmed=false")["data"]] == [
        "19:46", "19:04"]


def test_csv_carries_the_coverage_columns(api, minutes):
    response = api.get("/api/v1/data/BTC-USDT/7m?format=csv&sort=asc")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 8
    assert (rows[1]["timestamp"], rows[1]["constituents"], rows[1]["expected"], rows[1]["confirm"]) == (
        "2024-01-16T19:04:00Z", "6", "7", "false")
    assert list(rows[0])[-2:] == ["constituents", "expected"]


def test_an_empty_range_of_a_derived_bar_is_an_empty_page(api, minutes):
    body = page(api, "/api/v1/data/BTC-USDT/7m?start_time=2030-01-01T00:00:00Z")
    assert (body["count"], body["data"], body["pagination"]["next"]) == (0, [], None)


def test_an_unknown_symbol_is_still_404(api, minutes):
    response = api.get("/api/v1/data/ETH-USDT/7m")
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "SYMBOL_NOT_FOUND"


@pytest.mark.parametrize("code", ["1h", "0m", "01m", "7X", "5mutc", "7mUTC"])
def test_a_bar_neither_stored_nor_derivable_is_400_naming_the_bars_it_can_serve(api, minutes, code):
    response = api.get(f"/api/v1/data/BTC-USDT/{code}")
    assert response.status_code == 400
    body = envelope_of(response)
    assert body["error_code"] == "INVALID_TIMEFRAMES"
    assert body["details"]["invalid_timeframes"] == [code]
    assert {"1m", "1D", "3Mutc"} <= set(body["details"]["stored_bars"])
    assert "7m" in body["message"]


def test_a_bar_derived_from_a_bar_with_retention_keeps_its_horizon(api, btc, stored_candles, tf):
    one_second = tf("1s")
    one_second.retention = timedelta(days=7)
    one_second.save()
    response = api.get("/api/v1/data/BTC-USDT/10s?end_time=2020-01-01T00:00:00Z")
    assert response.status_code == 410
    assert envelope_of(response)["error_code"] == "EXPIRED_BY_POLICY"
