"""/data and /latest serve mark-price and index candles beside trade candles: `price=trade|mark|index`."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from candles.storage import candles_upsert
from tests.conftest import build_row
from tests.support import MINUTE_MS, T0_MS

pytestmark = pytest.mark.django_db

URL = "/api/v1/data/{symbol}/{bar}"


@pytest.fixture
def series(instrument):
    """BTC-USDT-SWAP (trade and mark), the spot pair BTC-USDT and the index BTC-USD, each with three 1m candles."""
    instrument("BTC-USDT-SWAP", inst_type="SWAP")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    instrument("BTC-USDT")
    instrument("BTC-USD", inst_type="INDEX", price="index")
    none = {"vol": None, "vol_ccy": None, "vol_ccy_quote": None}
    candles_upsert(rows=[
        *(build_row(T0_MS + k * MINUTE_MS, inst_id="BTC-USDT-SWAP", close=f"10{k}") for k in range(3)),
        *(build_row(T0_MS + k * MINUTE_MS, inst_id="BTC-USDT-SWAP", close=f"10{k}.5", price="mark", **none)
          for k in range(3)),
        *(build_row(T0_MS + k * MINUTE_MS, inst_id="BTC-USD", close=f"10{k}.25", price="index", **none)
          for k in range(3)),
    ])


def test_trade_is_the_default_and_its_page_keeps_exactly_the_seed_s_keys(client, series):
    body = client.get(URL.format(symbol="BTC-USDT-SWAP", bar="1m")).json()
    assert list(body) == ["symbol", "timeframe", "count", "data", "pagination"]
    assert [c["close"] for c in body["data"]] == ["102", "101", "100"]
    assert client.get(URL.format(symbol="BTC-USDT-SWAP", bar="1m") + "?price=trade").json() == body


def test_mark_candles_of_the_same_instrument_and_bar_are_their_own_series_without_volumes(client, series):
    body = client.get(URL.format(symbol="BTC-USDT-SWAP", bar="1m") + "?price=mark&sort=asc").json()
    assert body["price"] == "mark"
    assert [(c["close"], c["volume"], c["volume_currency"], c["volume_quote"]) for c in body["data"]] == [
        ("100.5", None, None, None), ("101.5", None, None, None), ("102.5", None, None, None)]


def test_index_candles_and_the_latest_of_each_kind(client, series):
    body = client.get(URL.format(symbol="BTC-USD", bar="1m") + "?price=index").json()
    assert [c["close"] for c in body["data"]] == ["102.25", "101.25", "100.25"]
    latest = client.get(URL.format(symbol="BTC-USDT-SWAP", bar="1m") + "/latest?price=mark").json()
    assert (latest["price"], latest["candle"]["close"]) == ("mark", "102.5")
    latest = client.get(URL.format(symbol="BTC-USDT-SWAP", bar="1m") + "/latest").json()
    assert ("price" in latest, latest["candle"]["close"]) == (False, "102")


def test_csv_parquet_and_derived_bars_of_mark_candles(client, series):
    csv = client.get(URL.format(symbol="BTC-USDT-SWAP", bar="1m") + "?price=mark&format=csv&sort=asc")
    lines = b"".join(csv.streaming_content).decode().splitlines()
    assert lines[1].split(",")[5:] == ["100.5", "", "", "", "true"]
    parquet = client.get(URL.format(symbol="BTC-USDT-SWAP", bar="1m") + "?price=mark&format=parquet&sort=asc")
    table = pq.read_table(io.BytesIO(b"".join(parquet.streaming_content)))
    assert table.column("close").to_pylist() == ["100.5", "101.5", "102.5"]
    assert table.column("volume").to_pylist() == [None, None, None]
    derived = client.get(URL.format(symbol="BTC-USDT-SWAP", bar="2m") + "?price=mark&sort=asc").json()
    candle = derived["data"][0]
    assert (candle["open"], candle["close"], candle["volume"], candle["constituents"]) == ("100", "101.5", None, 2)


@pytest.mark.parametrize(("symbol", "bar", "query", "status", "code"), [
    ("BTC-USDT-SWAP", "1m", "price=bogus", 400, "VALIDATION_ERROR"),
    ("BTC-USDT-SWAP", "1m", "price=index", 400, "INVALID_PRICE"),  # an instrument id is not an index
    ("BTC-USDT", "1m", "price=mark", 400, "INVALID_PRICE"),  # spot pairs have no mark price
    ("BTC-USDT-SWAP", "1s", "price=mark", 400, "INVALID_TIMEFRAMES"),  # mark and index start at 1m
    ("BTC-USD", "10s", "price=index", 400, "INVALID_TIMEFRAMES"),  # derived from 1s: the same
    ("NOPE-USD", "1m", "price=index", 404, "SYMBOL_NOT_FOUND"),
])
def test_bad_price_requests_are_clear_errors(client, series, symbol, bar, query, status, code):
    response = client.get(URL.format(symbol=symbol, bar=bar) + "?" + query)
    assert response.status_code == status, response.content
    body = response.json()
    assert (body["status"], body["error_code"]) == ("error", code)
    assert body["message"]


def _schema_examples(client, path: str) -> dict[str, dict]:
    schema = client.get("/api/schema/?format=json").json()
    content = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    return {example["value"].get("price", "trade"): example["value"] for example in content["examples"].values()}


def _shape(body: dict, candle: dict) -> tuple:
    """What a client is written against: the body's keys, the candle's keys, and which volumes are null."""
    return list(body), list(candle), [key for key, value in candle.items() if value is None]


SYMBOL_OF_KIND = {"trade": "BTC-USDT-SWAP", "mark": "BTC-USDT-SWAP", "index": "BTC-USD"}


@pytest.mark.parametrize("path", ["/api/v1/data/{symbol}/{timeframe}", "/api/v1/data/{symbol}/{timeframe}/latest"])
def test_the_openapi_shows_an_example_of_each_kind_shaped_as_served(client, series, path):
    examples = _schema_examples(client, path)
    assert set(examples) == {"trade", "mark", "index"}
    for price, example in examples.items():
        url = path.format(symbol=SYMBOL_OF_KIND[price], timeframe="1m") + f"?price={price}&limit=1"
        served = client.get(url).json()
        pick = (lambda body: body["data"][0]) if "data" in served else (lambda body: body["candle"])
        assert _shape(example, pick(example)) == _shape(served, pick(served)), price
