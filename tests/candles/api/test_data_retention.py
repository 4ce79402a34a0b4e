"""GET /data and the retention horizon: a range wholly behind it is 410 EXPIRED_BY_POLICY; a range reaching
behind it is served from the horizon on and says where that is."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pyarrow.parquet as pq
import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Timeframe
from tests.candles.api.fixtures import envelope_of

pytestmark = pytest.mark.django_db

URL = "/api/v1/data/BTC-USDT/1m"
RETENTION = timedelta(days=1)


def whole_minute(moment: datetime) -> datetime:
    return ms_to_datetime(datetime_to_ms(moment) // 60_000 * 60_000)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def horizon(btc, stored_candles) -> datetime:
    """1m keeps a day; candles every ten minutes from 30 minutes behind the horizon to 30 minutes inside it.
    Returns the horizon as the test starts (the one a request sees is a few milliseconds later)."""
    Timeframe.objects.filter(code="1m").update(retention=RETENTION)
    now = timezone.now()
    h = now - RETENTION
    stored_candles(btc, "1m", [whole_minute(h) + k * timedelta(minutes=10) for k in range(-3, 4)])
    return h


def test_a_range_wholly_behind_the_horizon_is_410_expired_by_policy_with_the_horizon(api, horizon):
    before = horizon

    response = api.get(URL, {"start_time": iso(horizon - timedelta(days=3)),
                             "end_time": iso(horizon - timedelta(days=2))})

    assert response.status_code == 410
    body = envelope_of(response)
    assert body["error_code"] == "EXPIRED_BY_POLICY"
    details = body["details"]
    assert (details["symbol"], details["timeframe"]) == ("BTC-USDT", "1m")
    told = parse(details["horizon"])
    assert before <= told <= timezone.now() - RETENTION
    assert details["horizon_ms"] == datetime_to_ms(told)


def test_a_range_ending_just_behind_the_horizon_is_410_too(api, horizon):
    response = api.get(URL, {"end_time": iso(horizon - timedelta(minutes=10))})

    assert response.status_code == 410
    assert envelope_of(response)["error_code"] == "EXPIRED_BY_POLICY"


def test_a_range_crossing_the_horizon_is_served_from_the_horizon_on_and_says_where_it_is(api, horizon):
    start, end = horizon - timedelta(hours=1), horizon + timedelta(hours=1)

    response = api.get(URL, {"start_time": iso(start), "end_time": iso(end), "sort": "asc"})

    assert response.status_code == 200, response.content
    body = response.json()
    told = parse(body["retention"]["horizon"])
    assert horizon <= told < horizon + timedelta(minutes=1)
    assert list(body) == ["symbol", "timeframe", "count", "data", "pagination", "retention"]
    served = [parse(c["timestamp"]) for c in body["data"]]
    assert served == [whole_minute(horizon) + k * timedelta(minutes=10) for k in range(1, 4)]


def test_without_a_start_the_range_reaches_behind_the_horizon(api, horizon):
    body = api.get(URL).json()

    assert "retention" in body
    assert body["count"] == 3


def test_a_range_wholly_inside_the_horizon_has_no_retention_key(api, horizon):
    body = api.get(URL, {"start_time": iso(horizon + timedelta(minutes=5))}).json()

    assert "retention" not in body
    assert body["count"] == 3


def test_a_bar_kept_forever_serves_any_range_without_a_retention_key(api, btc, stored_candles):
    Timeframe.objects.filter(code="1m").update(retention=None)
    long_ago = ms_to_datetime(datetime_to_ms(timezone.now() - timedelta(days=2000)) // 60_000 * 60_000)
    stored_candles(btc, "1m", [long_ago])

    body = api.get(URL, {"start_time": iso(long_ago - timedelta(days=1)),
                         "end_time": iso(long_ago + timedelta(days=1))}).json()

    assert "retention" not in body
    assert body["count"] == 1


def test_csv_of_a_range_crossing_the_horizon_carries_it_in_a_header(api, horizon):
    response = api.get(URL, {"format": "csv", "start_time": iso(horizon - timedelta(hours=1))})

    assert response.status_code == 200
    told = parse(response["X-Retention-Horizon"])
    assert horizon <= told < horizon + timedelta(minutes=1)
    assert len(b"".join(response.streaming_content).decode().splitlines()) == 1 + 3


def test_parquet_of_a_range_crossing_the_horizon_carries_it_in_a_header_and_in_the_file(api, horizon):
    response = api.get(URL, {"format": "parquet", "start_time": iso(horizon - timedelta(hours=1))})

    assert response.status_code == 200
    told = parse(response["X-Retention-Horizon"])
    assert horizon <= told < horizon + timedelta(minutes=1)
    data = io.BytesIO(b"".join(response.streaming_content))
    assert pq.read_metadata(data).metadata[b"okx_candles.retention_horizon"] == response["X-Retention-Horizon"].encode()
    assert pq.read_table(data).num_rows == 3


def test_an_unknown_symbol_is_404_whatever_the_range(api, horizon):
    response = api.get("/api/v1/data/NOPE-USDT/1m", {"end_time": iso(horizon - timedelta(days=2))})

    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "SYMBOL_NOT_FOUND"


def test_the_schema_documents_the_410(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    operation = schema["paths"]["/api/v1/data/{symbol}/{timeframe}"]["get"]
    assert "EXPIRED_BY_POLICY" in operation["responses"]["410"]["description"]
    page = schema["components"]["schemas"]["CandlePage"]
    assert "retention" in page["properties"]
    assert "retention" not in page.get("required", [])
