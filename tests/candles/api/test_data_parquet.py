"""GET /data/{symbol}/{timeframe}?format=parquet: one Parquet file, streamed, every digit exact, read by pandas and
polars; the same filters, order, limit and cursors as JSON and CSV; errors stay JSON envelopes."""

from __future__ import annotations

import io
import urllib.request
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from candles.api import parquet as api_parquet
from candles.archive_format import file_schema as _file_schema
from candles.bars import datetime_to_ms
from tests.candles.api.fixtures import envelope_of
from tests.conftest import utc

pytestmark = pytest.mark.django_db

T0 = utc(2024, 1, 16, 19, 0)
MINUTE = timedelta(minutes=1)
URL = "/api/v1/data/BTC-USDT/1m"
MEDIA_TYPE = "application/vnd.apache.parquet"
COLUMNS = ["timestamp", "open_time_ms", "open", "high", "low", "close", "volume", "volume_currency",
           "volume_quote", "confirm"]


def at(i: int):
    return T0 + i * MINUTE


def body_of(response) -> bytes:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == MEDIA_TYPE
    return b"".join(response.streaming_content)


def table_of(response) -> pa.Table:
    return pq.read_table(io.BytesIO(body_of(response)))


@pytest.fixture
def exact(btc, stored_candles):
    """Two candles whose digits a float would lose: trailing zeros, 1e-8, a NULL quote volume; the newer one open."""
    stored_candles(btc, "1m", [at(0)], open=Decimal("43000.10"), high=Decimal("43100"), low=Decimal("0.00000001"),
                   close=Decimal("43000.0"), vol=Decimal("0.00000001"), vol_ccy=Decimal("17447600.212916623"),
                   vol_ccy_quote=None, confirmed=True)
    stored_candles(btc, "1m", [at(1)], open=Decimal("43000.0"), high=Decimal("43000.10"), low=Decimal("42999.99"),
                   close=Decimal("43000.00"), vol=Decimal("0"), vol_ccy=Decimal("0.000"),
                   vol_ccy_quote=Decimal("1.50"), confirmed=False)
    return btc


EXPECTED = [
    {"timestamp": pd.Timestamp("2024-01-16T19:00:00Z"), "open_time_ms": 1705431600000, "open": "43000.10",
     "high": "43100", "low": "0.00000001", "close": "43000.0", "volume": "0.00000001",
     "volume_currency": "17447600.212916623", "volume_quote": None, "confirm": True},
    {"timestamp": pd.Timestamp("2024-01-16T19:01:00Z"), "open_time_ms": 1705431660000, "open": "43000.0",
     "high": "43000.10", "low": "42999.99", "close": "43000.00", "volume": "0", "volume_currency": "0.000",
     "volume_quote": "1.50", "confirm": False},
]


def test_pandas_reads_every_digit_as_stored_with_null_and_unconfirmed_rows(api, exact):
    frame = pd.read_parquet(io.BytesIO(body_of(api.get(URL, {"format": "parquet", "sort": "asc"}))))

    assert list(frame.columns) == COLUMNS
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    assert rows == EXPECTED
    # Exact Decimals, as docs/api.md shows: the strings convert without a float in between.
    assert frame["open"].map(Decimal).tolist() == [Decimal("43000.10"), Decimal("43000.0")]
    assert str(frame["open"].map(Decimal)[0]) == "43000.10"


def test_polars_reads_the_same_strings_and_makes_them_decimals(api, exact):
    frame = pl.read_parquet(io.BytesIO(body_of(api.get(URL, {"format": "parquet", "sort": "asc"}))))

    assert frame.columns == COLUMNS
    assert frame["open"].to_list() == ["43000.10", "43000.0"]
    assert frame["volume_quote"].to_list() == [None, "1.50"]
    assert frame["confirm"].to_list() == [True, False]
    assert frame["timestamp"].dtype == pl.Datetime("ms", "UTC")
    decimals = frame.select(pl.col("low").str.to_decimal(scale=8))["low"].to_list()
    assert decimals == [Decimal("0.00000001"), Decimal("42999.99000000")]


def test_the_file_shares_the_archive_encoding(api, exact):
    """One encoding for every Parquet of the project: exact strings, timestamp[ms, UTC], zstd (candles.parquet)."""
    data = body_of(api.get(URL, {"format": "parquet"}))
    schema = pq.read_schema(io.BytesIO(data))
    archive = _file_schema()

    assert schema.field("timestamp").type == archive.field("open_time").type == pa.timestamp("ms", tz="UTC")
    for name in ("open", "high", "low", "close", "volume", "volume_currency", "volume_quote"):
        assert schema.field(name).type == archive.field("open").type == pa.string()
    assert schema.field("volume_quote").nullable
    assert not schema.field("close").nullable
    assert schema.field("open_time_ms").type == pa.int64()
    assert schema.field("confirm").type == pa.bool_()
    metadata = pq.read_metadata(io.BytesIO(data))
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert {k: v for k, v in metadata.metadata.items() if k.startswith(b"okx_candles.")} == {
        b"okx_candles.format": b"1", b"okx_candles.symbol": b"BTC-USDT", b"okx_candles.bar": b"1m",
        b"okx_candles.sort": b"desc"}


def test_every_candle_of_the_range_streams_out_row_group_by_row_group(api, btc, stored_candles, monkeypatch):
    monkeypatch.setattr(api_parquet, "ROW_GROUP_ROWS", 1000)
    monkeypatch.setattr(api_parquet, "PAGE_ROWS", 1000)
    stored_candles(btc, "1m", [at(i) for i in range(6_200)])

    response = api.get(URL, {"format": "parquet", "sort": "asc"})
    chunks = list(response.streaming_content)
    data = b"".join(chunks)

    # The magic bytes go out before any row is read, each row group once it holds ROW_GROUP_ROWS rows (the
    # first page, of 5,000 as CSV's, is one group; then a group per 1,000-row page), the last group with the
    # footer: bytes leave while rows are still being read, and the server never holds the file.
    parquet_file = pq.ParquetFile(io.BytesIO(data))
    groups = [parquet_file.metadata.row_group(i).num_rows for i in range(parquet_file.num_row_groups)]
    assert groups == [5000, 1000, 200]
    assert chunks[0] == b"PAR1"
    assert len(chunks) == 1 + len(groups)
    assert chunks[-1].endswith(b"PAR1")
    assert parquet_file.read(columns=["open_time_ms"])["open_time_ms"].to_pylist() == [
        datetime_to_ms(at(i)) for i in range(6_200)]
    assert response["Content-Disposition"] == 'attachment; filename="BTC-USDT_1m.parquet"'


def test_by_accept_header_with_filters_limit_and_the_default_newest_first(api, btc, stored_candles):
    for i in range(30):
        stored_candles(btc, "1m", [at(i)], confirmed=i < 29, close=Decimal(f"100.{i:02d}"))

    table = table_of(api.get(URL, {"limit": 3, "confirmed": "true", "end_time": at(20).isoformat()},
                             HTTP_ACCEPT=MEDIA_TYPE))

    assert table["close"].to_pylist() == ["100.20", "100.19", "100.18"]
    assert table["confirm"].to_pylist() == [True, True, True]


def test_a_cursor_from_a_json_page_continues_in_parquet(api, btc, stored_candles):
    stored_candles(btc, "1m", [at(i) for i in range(5)])
    first = api.get(URL, {"limit": 2, "sort": "asc"}).json()
    cursor = first["pagination"]["next_cursor"]

    table = table_of(api.get(URL, {"format": "parquet", "sort": "asc", "cursor": cursor}))

    assert table["open_time_ms"].to_pylist() == [datetime_to_ms(at(i)) for i in (2, 3, 4)]


def test_an_empty_range_is_a_valid_file_with_the_columns_and_no_rows(api, exact):
    frame = pd.read_parquet(io.BytesIO(body_of(api.get(URL, {"format": "parquet", "start_time": "2030-01-01"}))))

    assert list(frame.columns) == COLUMNS
    assert len(frame) == 0


def test_errors_of_a_parquet_request_are_json_envelopes(api, exact):
    response = api.get(URL, {"format": "parquet", "limit": "0"})
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "VALIDATION_ERROR"

    # A cursor of the other order (from a newest-first page) read oldest first: refused before any byte is sent.
    descending_cursor = api.get(URL, {"limit": 1}).json()["pagination"]["next_cursor"]
    response = api.get(URL, {"format": "parquet", "sort": "asc", "cursor": descending_cursor})
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "INVALID_CURSOR"

    response = api.get("/api/v1/data/ETH-USDT/1m", {"format": "parquet"})
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "SYMBOL_NOT_FOUND"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pandas_reads_it_straight_from_the_url_and_polars_from_its_bytes(live_server, btc, stored_candles):
    """docs/api.md's recipe against a real server. polars' URL reader asks for byte ranges, which a file written
    while it is sent cannot serve, so the recipe hands it the bytes."""
    stored_candles(btc, "1m", [at(i) for i in range(3)], close=Decimal("43000.10"), vol_ccy_quote=None)
    url = live_server.url.replace("://localhost:", "://127.0.0.1:") + URL + "?format=parquet&sort=asc"

    frame = pd.read_parquet(url)
    with urllib.request.urlopen(url, timeout=30) as answer:
        polars_frame = pl.read_parquet(io.BytesIO(answer.read()))

    assert frame["close"].map(Decimal).tolist() == [Decimal("43000.10")] * 3
    assert frame["volume_quote"].isna().all()
    assert polars_frame["close"].to_list() == ["43000.10"] * 3
    assert polars_frame["open_time_ms"].to_list() == [datetime_to_ms(at(i)) for i in range(3)]
