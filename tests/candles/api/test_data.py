"""GET /data/{symbol}/{timeframe} (JSON pages, streamed CSV) and /latest: exact values, filters, errors."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from candles.bars import datetime_to_ms
from tests.candles.api.fixtures import envelope_of
from tests.conftest import utc

pytestmark = pytest.mark.django_db

T0 = utc(2024, 1, 16, 19, 0)
MINUTE = timedelta(minutes=1)
URL = "/api/v1/data/BTC-USDT/1m"


def at(i: int):
    return T0 + i * MINUTE


@pytest.fixture
def minutes(btc, stored_candles):
    """30 one-minute candles from T0; the last one still open; closes 100.00, 100.01, ..."""
    for i in range(30):
        stored_candles(btc, "1m", [at(i)], confirmed=i < 29, close=Decimal(f"100.{i:02d}"))
    return btc


def open_times(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [c["timestamp"] for c in response.json()["data"]]


def iso(i: int) -> str:
    return at(i).isoformat().replace("+00:00", "Z")


def test_a_candle_has_exactly_the_documented_shape_with_exact_decimal_strings(api, btc, stored_candles):
    stored_candles(btc, "1m", [T0], open=Decimal("43000.10"), high=Decimal("43100"), low=Decimal("0.00000001"),
                   close=Decimal("43000.0"), vol=Decimal("0.00000001"), vol_ccy=Decimal("17447600.212916623"),
                   vol_ccy_quote=None, confirmed=True)
    body = api.get(URL).json()
    assert body == {"symbol": "BTC-USDT", "timeframe": "1m", "count": 1, "data": [{
        "timestamp": "2024-01-16T19:00:00Z", "open_time_ms": 1705431600000, "open": "43000.10", "high": "43100",
        "low": "0.00000001", "close": "43000.0", "volume": "0.00000001", "volume_currency": "17447600.212916623",
        "volume_quote": None, "confirm": True,
    }], "pagination": {"next": None, "next_cursor": None, "has_more": False, "limit": 100}}


def test_by_default_the_newest_hundred_come_first(api, btc, stored_candles):
    stored_candles(btc, "1m", [at(i) for i in range(150)])
    times = open_times(api.get(URL))
    assert len(times) == 100
    assert times[0] == iso(149)
    assert times[-1] == iso(50)


def test_limit_and_ascending_order(api, minutes):
    assert open_times(api.get(URL, {"limit": 3, "sort": "asc"})) == [iso(0), iso(1), iso(2)]


@pytest.mark.parametrize(("start", "end"), [
    (iso(10), iso(12)),
    (str(datetime_to_ms(at(10))), str(datetime_to_ms(at(12)))),
    ("2024-01-16T19:10:00", "2024-01-16 19:12:00"),
    ("2024-01-17T03:10:00+08:00", "2024-01-17T03:12:00+08:00"),
    ("2024-01-17T03:10:00 08:00", "2024-01-17T03:12:00 08:00"),  # a + sent unencoded arrives as a space
    ("2024-01-16T19:09:30Z", "2024-01-16T19:12:59.999Z"),
])
def test_start_and_end_are_inclusive_in_every_accepted_spelling(api, minutes, start, end):
    times = open_times(api.get(URL, {"start_time": start, "end_time": end, "sort": "asc"}))
    assert times == [iso(10), iso(11), iso(12)]


def test_the_confirmed_filter(api, minutes):
    assert open_times(api.get(URL, {"confirmed": "false"})) == [iso(29)]
    assert len(open_times(api.get(URL, {"confirmed": "true", "limit": 1000}))) == 29


def test_an_empty_range_is_an_empty_page_not_an_error(api, minutes):
    body = api.get(URL, {"start_time": "2030-01-01"}).json()
    assert (body["count"], body["data"], body["pagination"]["next"], body["pagination"]["has_more"]) == (
        0, [], None, False)


@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_following_next_links_returns_every_candle_once_with_the_filters_kept(api, minutes, sort):
    seen, url, pages = [], URL + f"?limit=7&sort={sort}&start_time={iso(3)}", 0
    while url:
        body = api.get(url).json()
        seen += [c["timestamp"] for c in body["data"]]
        pagination = body["pagination"]
        url, pages = pagination["next"], pages + 1
        assert pagination["has_more"] is (url is not None)
        assert pagination["limit"] == 7
        if url:
            assert parse_qs(urlsplit(url).query)["cursor"] == [pagination["next_cursor"]]
            assert url.startswith("http://testserver/api/v1/data/BTC-USDT/1m?")
            assert parse_qs(urlsplit(url).query)["start_time"] == [iso(3)]
    expected = [iso(i) for i in range(3, 30)]
    assert seen == (expected if sort == "asc" else expected[::-1])
    assert pages == 4


def test_1m_and_1M_are_different_bars(api, btc, stored_candles):
    stored_candles(btc, "1m", [utc(2024, 1, 31, 16, 0)])
    stored_candles(btc, "1M", [utc(2024, 1, 31, 16, 0)], close=Decimal("7"))  # 1M opens at 00:00 UTC+8
    assert api.get("/api/v1/data/BTC-USDT/1M").json()["data"][0]["close"] == "7"
    assert api.get("/api/v1/data/BTC-USDT/1m").json()["data"][0]["close"] == "105"


def test_an_unknown_symbol_is_404_symbol_not_found(api, minutes):
    for url in ("/api/v1/data/ETH-USDT/1m", "/api/v1/data/btc-usdt/1m", "/api/v1/data/%E2%82%AC%00/1m",
                "/api/v1/data/ETH-USDT/1m/latest"):
        response = api.get(url)
        assert response.status_code == 404, url
        assert envelope_of(response)["error_code"] == "SYMBOL_NOT_FOUND"


def test_a_name_that_cannot_be_a_bar_is_404_invalid_timeframes(api, minutes):
    # A name of bar shape that is neither stored nor derivable (1h) is 400: tests/candles/api/test_data_derived.py.
    for code in ("x" * 40, "1m%00", "m1"):
        response = api.get(f"/api/v1/data/BTC-USDT/{code}")
        assert response.status_code == 404
        body = envelope_of(response)
        assert body["error_code"] == "INVALID_TIMEFRAMES"


@pytest.mark.parametrize("query", [
    "limit=0", "limit=1001", "limit=-5", "limit=abc", "limit=99999999999999999999999999", "limit=1.5",
    "start_time=yesterday", "end_time=2024-13-01", "start_time=99999999999999999", "start_time=%00",
    "start_time=0001-01-01T00:00:00%2B08:00", "sort=ASC", "sort=up", "confirmed=1", "confirmed=True",
    "cursor=" + "c" * 65,
])
def test_bad_parameters_are_400_validation_error_naming_the_parameter(api, minutes, query):
    response = api.get(f"{URL}?{query}")
    assert response.status_code == 400
    body = envelope_of(response)
    assert body["error_code"] == "VALIDATION_ERROR"
    assert list(body["details"]) == [query.split("=")[0]]


def test_every_bad_parameter_is_reported_at_once(api, minutes):
    body = envelope_of(api.get(URL, {"limit": "0", "sort": "sideways", "confirmed": "maybe"}))
    assert set(body["details"]) == {"limit", "sort", "confirmed"}


def test_start_after_end_is_400_invalid_time_range(api, minutes):
    response = api.get(URL, {"start_time": iso(5), "end_time": iso(4)})
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "INVALID_TIME_RANGE"


@pytest.mark.parametrize("cursor", ["garbage", "ZDE3MDU0MzE3ODAwMDA", "!!!"])
def test_a_cursor_not_issued_for_this_order_is_400_invalid_cursor(api, minutes, cursor):
    response = api.get(URL, {"cursor": cursor, "sort": "asc"})
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "INVALID_CURSOR"


# --- CSV ----------------------------------------------------------------------------------------------


def read_csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_csv_streams_every_candle_of_the_range_beyond_any_page_size(api, btc, stored_candles):
    stored_candles(btc, "1m", [at(i) for i in range(6_200)], vol_ccy_quote=None)
    rows = read_csv(api.get(URL, {"format": "csv", "sort": "asc"}))
    assert len(rows) == 6_200
    assert [r["open_time_ms"] for r in rows] == [str(datetime_to_ms(at(i))) for i in range(6_200)]
    assert rows[0] == {"timestamp": "2024-01-16T19:00:00Z", "open_time_ms": "1705431600000", "open": "100",
                       "high": "110", "low": "90", "close": "105", "volume": "1.5", "volume_currency": "157.5",
                       "volume_quote": "", "confirm": "true"}


def test_csv_by_accept_header_with_filters_and_limit(api, minutes):
    rows = read_csv(api.get(URL, {"limit": 2, "confirmed": "true"}, HTTP_ACCEPT="text/csv"))
    assert [r["timestamp"] for r in rows] == [iso(28), iso(27)]
    assert rows[0]["close"] == "100.28"


def test_csv_of_an_empty_range_is_the_header_alone(api, minutes):
    response = api.get(URL, {"format": "csv", "start_time": "2030-01-01"})
    assert b"".join(response.streaming_content).decode() == (
        "timestamp,open_time_ms,open,high,low,close,volume,volume_currency,volume_quote,confirm\n")
    assert response["Content-Disposition"] == 'attachment; filename="BTC-USDT_1m.csv"'


def test_errors_of_a_csv_request_are_json_envelopes(api, minutes):
    response = api.get(URL, {"format": "csv", "limit": "0"})
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "VALIDATION_ERROR"
    response = api.get(URL, {"format": "csv", "cursor": "garbage"})
    assert envelope_of(response)["error_code"] == "INVALID_CURSOR"


# --- latest ---------------------------------------------------------------------------------------------


def test_latest_is_the_newest_candle_even_while_open(api, minutes):
    body = api.get(URL + "/latest").json()
    assert (body["symbol"], body["timeframe"]) == ("BTC-USDT", "1m")
    assert (body["candle"]["timestamp"], body["candle"]["confirm"], body["candle"]["close"]) == (
        iso(29), False, "100.29")


def test_latest_without_candles_is_404_no_data_found(api, btc):
    response = api.get(URL + "/latest")
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "NO_DATA_FOUND"
