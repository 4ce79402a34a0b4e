"""GET /api/v1/archives: the Parquet archive's files, newest first, filtered by bar, symbol, status and days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from candles.models import ArchiveFile, ArchiveStatus, Timeframe

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def files(db) -> list[ArchiveFile]:
    """1s on Dec 1-3 (BTC-USDT and ETH-USDT; the 3rd failed), 1m and 1M on Dec 1 (BTC-USDT only)."""

    def make(bar: str, day: int, inst_ids: list[str], status: str = ArchiveStatus.OK) -> ArchiveFile:
        start = DEC_1 + (day - 1) * DAY
        return ArchiveFile.objects.create(
            timeframe=Timeframe.objects.get(code=bar), start=start, end=start + DAY, rows=1000 * len(inst_ids),
            instruments=len(inst_ids), inst_ids=inst_ids, bytes=26_000, sha256="ab" * 32, status=status,
            path=f"/srv/archive/{bar}/2026/{bar}_{start.date()}.parquet", source_table=f"candles_candle_{bar}_x",
            verified_at=start + 8 * DAY if status == ArchiveStatus.OK else None)

    both = ["BTC-USDT", "ETH-USDT"]
    return [make("1s", 1, both), make("1s", 2, both), make("1s", 3, both, ArchiveStatus.FAILED),
            make("1m", 1, ["BTC-USDT", "BTC-USDT-SWAP|mark"]), make("1M", 1, ["BTC-USDT"])]


def listed(response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.content
    return [(item["bar"], item["day"]) for item in response.json()["results"]]


def test_files_are_listed_newest_first_with_what_they_hold(api, files):
    response = api.get("/api/v1/archives")

    assert listed(response) == [("1s", "2026-12-03"), ("1s", "2026-12-02"), ("1s", "2026-12-01"),
                                ("1m", "2026-12-01"), ("1M", "2026-12-01")]
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (5, None, None)
    assert body["results"][2] == {
        "id": files[0].pk, "bar": "1s", "day": "2026-12-01", "start": "2026-12-01T00:00:00Z",
        "end": "2026-12-02T00:00:00Z", "rows": 2000, "instruments": 2, "bytes": 26_000,
        "path": "/srv/archive/1s/2026/1s_2026-12-01.parquet", "sha256": "ab" * 32, "status": "ok", "error": "",
        "table": "candles_candle_1s_x", "created_at": body["results"][2]["created_at"],
        "updated_at": body["results"][2]["updated_at"], "verified_at": "2026-12-09T00:00:00Z",
    }


@pytest.mark.parametrize(("query", "expected"), [
    ("bar=1m", [("1m", "2026-12-01")]),
    ("bar=1M", [("1M", "2026-12-01")]),
    ("symbol=ETH-USDT", [("1s", "2026-12-03"), ("1s", "2026-12-02"), ("1s", "2026-12-01")]),
    ("symbol=DOGE-USDT", []),
    ("symbol=BTC-USDT-SWAP&price=mark", [("1m", "2026-12-01")]),  # the series, by its archive name
    ("symbol=BTC-USDT-SWAP", []),  # its trade candles are in no file
    ("symbol=BTC-USDT&price=index", []),
    ("status=failed", [("1s", "2026-12-03")]),
    ("bar=1s&start=2026-12-02", [("1s", "2026-12-03"), ("1s", "2026-12-02")]),
    ("bar=1s&end=2026-12-02", [("1s", "2026-12-02"), ("1s", "2026-12-01")]),
    ("bar=1s&start=2026-12-02T18:00:00Z&end=2026-12-02T19:00:00Z", [("1s", "2026-12-02")]),
    ("bar=1s&start=1796169600000", [("1s", "2026-12-03"), ("1s", "2026-12-02")]),
    ("bar=1s&status=ok&symbol=BTC-USDT&start=2026-12-01&end=2026-12-01", [("1s", "2026-12-01")]),
])
def test_files_filter_by_bar_symbol_status_and_days(api, files, query, expected):
    assert listed(api.get(f"/api/v1/archives?{query}")) == expected


def test_files_are_paged(api, files):
    response = api.get("/api/v1/archives?limit=2&offset=2")

    assert listed(response) == [("1s", "2026-12-01"), ("1m", "2026-12-01")]
    assert response.json()["count"] == 5
    assert "offset=4" in response.json()["next"]
    assert "offset=0" in response.json()["previous"]


@pytest.mark.parametrize(("query", "code", "field"), [
    ("bar=1%20m", "VALIDATION_ERROR", "bar"),
    ("symbol=BTC%2FUSDT", "VALIDATION_ERROR", "symbol"),
    ("status=verified", "VALIDATION_ERROR", "status"),
    ("price=bogus", "VALIDATION_ERROR", "price"),
    ("start=yesterday", "VALIDATION_ERROR", "start"),
    ("end=2026-13-01", "VALIDATION_ERROR", "end"),
    ("limit=0", "VALIDATION_ERROR", "limit"),
    ("bar=1S", "INVALID_TIMEFRAMES", "invalid_timeframes"),
    ("start=2026-12-03&end=2026-12-02", "INVALID_TIME_RANGE", "start"),
])
def test_bad_filters_are_400_in_the_error_envelope(api, files, query, code, field):
    response = api.get(f"/api/v1/archives?{query}")

    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == code
    assert field in body["details"]
    assert set(body) == {"status", "error_code", "message", "details", "request_id", "timestamp"}


def test_a_day_range_within_one_day_is_not_reversed(api, files):
    assert listed(api.get("/api/v1/archives?bar=1s&start=2026-12-02T20:00:00Z&end=2026-12-02T01:00:00Z")) == [
        ("1s", "2026-12-02")]


@override_settings(API_READ_AUTH=True)
def test_with_read_auth_on_the_list_needs_credentials_like_every_read(api, token_api, files):
    response = api.get("/api/v1/archives")

    assert response.status_code == 401
    assert response.json()["error_code"] == "NOT_AUTHENTICATED"
    assert token_api.get("/api/v1/archives").status_code == 200


def test_the_list_is_open_to_anonymous_reads_by_default(api, files):
    assert api.get("/api/v1/archives").status_code == 200


def test_the_endpoint_is_in_the_openapi_schema_with_its_filters_and_errors(api):
    schema = api.get("/api/schema/?format=json").json()

    operation = schema["paths"]["/api/v1/archives"]["get"]
    assert {parameter["name"] for parameter in operation["parameters"]} == {
        "bar", "symbol", "price", "status", "start", "end", "limit", "offset"}
    assert {"200", "400", "429"} <= set(operation["responses"])
    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"}
    assert schema["components"]["schemas"]["ArchiveStatusEnum"]["enum"] == ["written", "ok", "failed"]
