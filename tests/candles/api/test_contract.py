"""The v1 contract of the original design, field by field: /data, /latest, the CSV of /data and of
`manage.py export`, webhook bodies and the error envelope.

The expected field sets are written out here from /work/shared/seed/original-design.md (app/api/models.py of
its gateway), not read from the code, so that a rename anywhere shows up as a broken contract:

    class CandleData(BaseModel):            class CandleDataResponse(BaseModel):
        timestamp: datetime                     symbol: str
        open: float                             timeframe: str
        high: float                             count: int
        low: float                              data: List[CandleData]
        close: float                            pagination: Optional[Dict[str, Any]] = None
        volume: float
        volume_currency: Optional[float]    class ErrorResponse(BaseModel):
        confirm: bool = False                   status: str = "error"
        trade_count: Optional[int]              error_code: str
        vwap: Optional[float]                   message: str
                                                details: Optional[Dict[str, Any]] = None
                                                timestamp: datetime
                                                request_id: Optional[str] = None

Two deliberate differences: numbers are exact decimal strings, never floats (the seed's README lists its floats
among its defects), and `trade_count`/`vwap` are absent because OKX's candles carry neither (docs/api.md).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.core.management import call_command

from collectors.delivery.webhooks import webhook_body
from tests.candles.api.fixtures import envelope_of
from tests.conftest import build_row, utc

pytestmark = pytest.mark.django_db

SEED_CANDLE_DATA = {"timestamp", "open", "high", "low", "close", "volume", "volume_currency", "confirm",
                    "trade_count", "vwap"}
# OKX sends no trade count and no VWAP per candle: absent, not always null.
NOT_FROM_OKX = {"trade_count", "vwap"}
# The project's additions beside the seed's names: OKX's ts (the candle's key for clients) and volCcyQuote.
PROJECT_CANDLE_FIELDS = {"open_time_ms", "volume_quote"}
CANDLE = (SEED_CANDLE_DATA - NOT_FROM_OKX) | PROJECT_CANDLE_FIELDS
EXACT_NUMBERS = ("open", "high", "low", "close", "volume", "volume_currency")

SEED_CANDLE_DATA_RESPONSE = {"symbol", "timeframe", "count", "data", "pagination"}
# Inside `pagination`: the seed's has_more, and the project's cursor as a link and bare.
PAGINATION = {"next", "next_cursor", "has_more", "limit"}

SEED_ERROR_RESPONSE = {"status", "error_code", "message", "details", "timestamp", "request_id"}

URL = "/api/v1/data/BTC-USDT/1m"
T0 = utc(2024, 1, 16, 19, 0)


@pytest.fixture
def candles(btc, stored_candles):
    """Three closed candles with awkward exact values, one open one without a quote volume."""
    stored_candles(btc, "1m", [T0 + timedelta(minutes=i) for i in range(3)], open=Decimal("43000.10"),
                   low=Decimal("0.00000001"), vol=Decimal("123456789012345678.123456789"))
    stored_candles(btc, "1m", [T0 + timedelta(minutes=3)], confirmed=False, vol_ccy_quote=None)


def assert_is_a_contract_candle(candle: dict) -> None:
    assert set(candle) == CANDLE, candle
    assert datetime.fromisoformat(candle["timestamp"]).utcoffset() == timedelta(0)
    assert candle["timestamp"].endswith("Z")
    assert isinstance(candle["open_time_ms"], int)
    assert datetime.fromisoformat(candle["timestamp"]).timestamp() * 1000 == candle["open_time_ms"]
    for name in EXACT_NUMBERS:
        assert isinstance(candle[name], str), (name, candle[name])
        assert Decimal(candle[name]).is_finite()
    assert candle["volume_quote"] is None or isinstance(candle["volume_quote"], str)
    assert isinstance(candle["confirm"], bool)


def test_data_is_the_seed_s_candle_data_response(api, candles):
    body = api.get(URL, {"limit": 2}).json()

    assert set(body) == SEED_CANDLE_DATA_RESPONSE
    assert (body["symbol"], body["timeframe"]) == ("BTC-USDT", "1m")
    assert isinstance(body["count"], int)
    assert body["count"] == len(body["data"]) == 2
    assert set(body["pagination"]) == PAGINATION
    assert body["pagination"]["has_more"] is True
    assert isinstance(body["pagination"]["next"], str)
    assert isinstance(body["pagination"]["next_cursor"], str)
    assert body["pagination"]["limit"] == 2
    for candle in body["data"]:
        assert_is_a_contract_candle(candle)


def test_candles_keep_the_stored_digits_as_strings(api, candles):
    data = api.get(URL, {"sort": "asc"}).json()["data"]

    assert (data[0]["open"], data[0]["low"], data[0]["volume"]) == (
        "43000.10", "0.00000001", "123456789012345678.123456789")
    assert [c["confirm"] for c in data] == [True, True, True, False]
    assert data[3]["volume_quote"] is None


def test_the_seed_s_trade_count_and_vwap_are_absent_not_null(api, candles):
    candle = api.get(URL).json()["data"][0]

    assert NOT_FROM_OKX.isdisjoint(candle)


def test_latest_holds_one_candle_of_the_same_shape(api, candles):
    body = api.get(URL + "/latest").json()

    assert set(body) == {"symbol", "timeframe", "candle"}
    assert_is_a_contract_candle(body["candle"])
    assert body["candle"]["confirm"] is False


def test_the_csv_header_names_the_json_fields_in_the_json_order(api, candles):
    json_fields = list(api.get(URL).json()["data"][0])
    response = api.get(URL, {"format": "csv", "sort": "asc"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))

    assert rows[0] == json_fields
    assert set(rows[0]) == CANDLE
    assert rows[1][json_fields.index("timestamp")] == "2024-01-16T19:00:00Z"


def test_manage_py_export_writes_the_same_header_as_the_api(api, candles, tmp_path):
    path = tmp_path / "btc.csv"
    call_command("export", "BTC-USDT", "1m", "--from", "2024-01-16T19:00Z", "--to", "2024-01-16T19:03Z",
                 "--output", str(path), "--quiet")
    response = api.get(URL, {"format": "csv", "sort": "asc"})

    assert path.read_text() == b"".join(response.streaming_content).decode()


def test_a_webhook_body_is_symbol_timeframe_and_the_same_candle():
    body = orjson.loads(webhook_body(build_row(T0, low="0.00000001", vol_ccy_quote=None)))

    assert list(body)[:2] == ["symbol", "timeframe"]
    candle = {name: value for name, value in body.items() if name not in {"symbol", "timeframe"}}
    assert_is_a_contract_candle(candle)
    assert (candle["timestamp"], candle["low"], candle["volume_quote"], candle["confirm"]) == (
        "2024-01-16T19:00:00Z", "0.00000001", None, True)


def test_a_webhook_body_orders_its_candle_as_the_api_does(api, candles):
    webhook_fields = list(orjson.loads(webhook_body(build_row(T0))))[2:]

    assert webhook_fields == list(api.get(URL).json()["data"][0])


@pytest.mark.parametrize(("method", "url", "status"), [
    ("get", "/api/v1/data/NOPE-USDT/1m", 404),
    ("get", URL + "?limit=0", 400),
    ("get", URL + "?format=csv&limit=0", 400),
    ("post", URL, 405),
    ("get", "/api/v1/no-such-route", 404),
])
def test_every_error_is_the_seed_s_error_response_with_status_error(api, candles, method, url, status):
    response = getattr(api, method)(url)

    assert response.status_code == status
    body = envelope_of(response)
    assert set(body) == SEED_ERROR_RESPONSE
    assert body["status"] == "error"
    assert isinstance(body["error_code"], str)
    assert isinstance(body["details"], dict)
    assert datetime.fromisoformat(body["timestamp"]).utcoffset() == timedelta(0)


def test_the_openapi_schema_documents_the_contract(api):
    schema = orjson.loads(api.get("/api/schema/?format=json").content)["components"]["schemas"]

    # Added beside the seed's names, never required: a trade page has exactly the seed's keys.
    assert set(schema["CandlePage"]["properties"]) == SEED_CANDLE_DATA_RESPONSE | {"retention", "price"}
    assert {"retention", "price"}.isdisjoint(schema["CandlePage"]["required"])
    assert set(schema["CandlePagination"]["properties"]) == PAGINATION
    assert set(schema["Candle"]["properties"]) == CANDLE
    assert set(schema["ErrorEnvelope"]["properties"]) == SEED_ERROR_RESPONSE
