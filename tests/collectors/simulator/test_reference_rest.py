"""Mark-price and index candles over REST, and the index list: pages, parameters, errors, budgets."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from collectors.simulator import run_in_thread
from collectors.simulator.bars import BARS

from .conftest import roomy

MARK = "/api/v5/market/mark-price-candles"
HISTORY_MARK = "/api/v5/market/history-mark-price-candles"
INDEX = "/api/v5/market/index-candles"
HISTORY_INDEX = "/api/v5/market/history-index-candles"
TICKERS = "/api/v5/market/index-tickers"
# (path, a series it serves, the price kind of the truth)
ENDPOINTS = [
    (MARK, "BTC-USDT-SWAP", "mark"), (HISTORY_MARK, "BTC-USDT-SWAP", "mark"),
    (INDEX, "BTC-USDT", "index"), (HISTORY_INDEX, "BTC-USDT", "index"),
]
TICKER_KEYS = ["instId", "idxPx", "high24h", "sodUtc0", "open24h", "low24h", "sodUtc8", "ts"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(response: httpx.Response) -> list:
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["code", "msg", "data"]
    assert (body["code"], body["msg"]) == ("0", "")
    return body["data"]


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(roomy(futures=16)) as handle:
        yield handle


@pytest.fixture
def http(sim):
    with httpx.Client(base_url=sim.rest_url, timeout=5.0) as client:
        yield client


@pytest.mark.parametrize(("path", "series_id", "price"), ENDPOINTS)
def test_pages_are_six_field_rows_newest_first_equal_to_the_truth(sim, http, path, series_id, price):
    page = rows(http.get(path, params={"instId": series_id, "bar": "1m"}))
    assert len(page) == 100  # the default limit
    stamps = [int(row[0]) for row in page]
    assert all(a - b == 60_000 for a, b in itertools.pairwise(stamps))
    assert all(len(row) == 6 and all(type(value) is str for value in row) for row in page)
    current = BARS["1m"].floor(now_ms())
    if path in (MARK, INDEX):  # the latest candles, led by the open one
        assert stamps[0] in (current, current - 60_000)
        assert page[0][5] == "0" or stamps[0] == current - 60_000
        closed = page[1:]
    else:  # closed candles only
        assert stamps[0] in (current - 60_000, current - 120_000)
        closed = page
    assert all(row[5] == "1" for row in closed)
    truth = sim.simulator.market.truth_range(series_id, "1m", int(closed[-1][0]), int(closed[0][0]), price=price)
    assert closed == truth[::-1]


@pytest.mark.parametrize(("path", "series_id", "price"), ENDPOINTS)
def test_after_and_before_are_exclusive_and_limit_is_capped_at_100(http, path, series_id, price):
    page = rows(http.get(path, params={"instId": series_id, "bar": "5m", "limit": 10}))
    fifth = int(page[4][0])
    after = rows(http.get(path, params={"instId": series_id, "bar": "5m", "after": fifth, "limit": 3}))
    assert [int(row[0]) for row in after] == [fifth - k * 300_000 for k in (1, 2, 3)]
    both = rows(http.get(path, params={"instId": series_id, "bar": "5m", "after": fifth, "before": fifth - 1_200_000}))
    assert [int(row[0]) for row in both] == [fifth - k * 300_000 for k in (1, 2, 3)]
    before = rows(http.get(path, params={"instId": series_id, "bar": "5m", "before": fifth}))
    assert int(before[-1][0]) == fifth + 300_000
    assert len(rows(http.get(path, params={"instId": series_id, "bar": "5m", "limit": 300}))) == 100


def test_history_walks_back_to_the_listing_and_matches_the_truth(sim, http):
    market = sim.simulator.market
    inst_id = next(inst for inst in market.instruments if inst.startswith("BTC-USD-"))  # an inverse future
    for path, series_id, price in [(HISTORY_MARK, inst_id, "mark"), (HISTORY_INDEX, "BTC-USD", "index")]:
        walked: list[list[str]] = []
        after = None
        while True:
            params = {"instId": series_id, "bar": "4H", "limit": 100}
            if after:
                params["after"] = after
            page = rows(http.get(path, params=params))
            if not page:
                break
            walked += page
            after = page[-1][0]
        stamps = [int(row[0]) for row in walked]
        assert len(stamps) == len(set(stamps))
        assert stamps[-1] == market.first_open(series_id, "4H", price=price)
        assert walked[::-1] == market.truth_range(series_id, "4H", stamps[-1], stamps[0], price=price)


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        (MARK, {"bar": "1m"}, "51000"),
        (MARK, {"instId": "BTC-USDT-SWAP", "bar": "1s"}, "51000"),  # no 1s mark or index candles
        (HISTORY_MARK, {"instId": "BTC-USDT-SWAP", "bar": "1s"}, "51000"),
        (HISTORY_MARK, {"instId": "BTC-USDT-SWAP", "bar": "3M"}, "51000"),  # its bars stop at 1M
        (INDEX, {"instId": "BTC-USDT", "bar": "5D"}, "51000"),  # WebSocket only
        (HISTORY_INDEX, {"instId": "BTC-USDT", "bar": "1h"}, "51000"),  # bars are case-sensitive
        (HISTORY_INDEX, {"instId": "BTC-USDT", "after": "yesterday"}, "51000"),
        (INDEX, {"instId": "BTC-USDT", "limit": "0"}, "51000"),
        (MARK, {"instId": "BTC-USDT"}, "51001"),  # a spot pair has no mark price
        (HISTORY_MARK, {"instId": "NOPE-USDT-SWAP"}, "51001"),
        (INDEX, {"instId": "BTC-USDT-SWAP"}, "51001"),  # an instrument, not an index
        (HISTORY_INDEX, {"instId": "NOPE-USDT"}, "51001"),
        (TICKERS, {}, "51000"),
        (TICKERS, {"quoteCcy": "EUR"}, "51000"),
        (TICKERS, {"instId": "BTC-USDT-SWAP"}, "51001"),
    ],
)
def test_parameter_errors(http, path, params, code):
    response = http.get(path, params=params)
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["data"]) == (code, [])
    assert body["msg"]


def test_3m_mark_candles_are_served_by_the_recent_endpoint_only(http):
    assert rows(http.get(MARK, params={"instId": "ETH-USDT-SWAP", "bar": "3M"}))
    assert rows(http.get(HISTORY_INDEX, params={"instId": "ETH-USDT", "bar": "3Mutc"})) == []  # none closed yet


def test_index_tickers_list_the_indices_of_a_quote_currency(sim, http):
    market = sim.simulator.market
    usdt = rows(http.get(TICKERS, params={"quoteCcy": "USDT"}))
    assert [row["instId"] for row in usdt] == [
        "BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "SYN5-USDT", "REBASE-USDT",
    ]
    usd = rows(http.get(TICKERS, params={"quoteCcy": "USD"}))
    assert [row["instId"] for row in usd] == ["BTC-USD", "ETH-USD"]  # the inverse futures' underlyings
    assert rows(http.get(TICKERS, params={"quoteCcy": "USDC"})) == []
    assert rows(http.get(TICKERS, params={"quoteCcy": "BTC"})) == []
    [one] = rows(http.get(TICKERS, params={"instId": "ETH-USD"}))
    assert one["instId"] == "ETH-USD"
    assert rows(http.get(TICKERS, params={"instId": "ETH-USD", "quoteCcy": "USDT"})) == []
    for row in usdt + usd:
        assert list(row) == TICKER_KEYS
        assert all(type(value) is str for value in row.values())
        assert abs(int(row["ts"]) - now_ms()) < 5_000
        assert market.index_price(row["instId"], int(row["ts"])) == row["idxPx"]
        assert float(row["low24h"]) <= float(row["idxPx"]) <= float(row["high24h"])
        assert float(row["low24h"]) <= float(row["open24h"]) <= float(row["high24h"])
    # The index-candle instIds are exactly these.
    assert {row["instId"] for row in usdt + usd} == set(market.indices)


def test_instruments_narrow_to_an_underlying_with_uly_or_instFamily(http):
    swaps = rows(http.get("/api/v5/public/instruments", params={"instType": "SWAP", "uly": "ETH-USDT"}))
    assert [row["instId"] for row in swaps] == ["ETH-USDT-SWAP"]
    futures = rows(http.get("/api/v5/public/instruments", params={"instType": "FUTURES", "instFamily": "BTC-USD"}))
    assert len(futures) == 4
    assert {row["uly"] for row in futures} == {"BTC-USD"}
    assert rows(http.get("/api/v5/public/instruments", params={"instType": "OPTION", "uly": "BTC-USD"})) == []


def test_each_endpoint_has_its_own_budget():
    limit = 10
    budgets = dict.fromkeys(
        ["rest_candles_limit", "rest_history_limit", "rest_mark_candles_limit", "rest_history_mark_limit",
         "rest_index_candles_limit", "rest_history_index_limit", "rest_index_tickers_limit"], (limit, 60.0),
    )
    requests = [
        ("/api/v5/market/candles", {"instId": "BTC-USDT", "limit": 1}),
        ("/api/v5/market/history-candles", {"instId": "BTC-USDT", "limit": 1}),
        (MARK, {"instId": "BTC-USDT-SWAP", "limit": 1}), (HISTORY_MARK, {"instId": "BTC-USDT-SWAP", "limit": 1}),
        (INDEX, {"instId": "BTC-USDT", "limit": 1}), (HISTORY_INDEX, {"instId": "BTC-USDT", "limit": 1}),
        (TICKERS, {"quoteCcy": "USDT"}),
    ]
    used = dict.fromkeys((path for path, _ in requests), 0)
    with run_in_thread(roomy(**budgets)) as sim, httpx.Client(base_url=sim.rest_url) as http:
        for spent, (path, params) in enumerate(requests):
            left = limit - used[path]
            assert [http.get(path, params=params).status_code for _ in range(left + 1)] == [200] * left + [429]
            assert http.get(path, params=params).json() == {"msg": "Too Many Requests", "code": "50011"}
            for other, other_params in requests[spent + 1:]:  # the spent endpoints leave the others alone
                assert http.get(other, params=other_params).status_code == 200
                used[other] += 1
        assert sim.simulator.stats()["rest_429s"] == 2 * len(requests)


def test_the_default_budgets_are_okx_ones():
    with run_in_thread(roomy(rest_mark_candles_limit=(20, 2.0), rest_history_index_limit=(10, 2.0))) as sim, \
            httpx.Client(base_url=sim.rest_url) as http:
        params = {"instId": "BTC-USDT", "limit": 1}
        statuses = [http.get(HISTORY_INDEX, params=params).status_code for _ in range(11)]
        assert statuses == [200] * 10 + [429]
        params = {"instId": "BTC-USDT-SWAP", "limit": 1}
        statuses = [http.get(MARK, params=params).status_code for _ in range(21)]
        assert statuses == [200] * 20 + [429]
    from collectors.simulator import SimulatorConfig

    config = SimulatorConfig()
    assert (config.rest_mark_candles_limit, config.rest_history_mark_limit, config.rest_index_candles_limit,
            config.rest_history_index_limit, config.rest_index_tickers_limit) == (
        (20, 2.0), (20, 2.0), (20, 2.0), (10, 2.0), (20, 2.0))


def test_sim_truth_serves_mark_and_index_candles(sim, http):
    market = sim.simulator.market
    end = BARS["1m"].floor(now_ms()) - 60_000
    start = end - 5 * 60_000
    for inst_id, price in [("SOL-USDT-SWAP", "mark"), ("SOL-USDT", "index")]:
        body = http.get("/sim/truth", params={"instId": inst_id, "bar": "1m", "start": start, "end": end,
                                              "price": price}).json()
        assert body == {"data": market.truth_range(inst_id, "1m", start, end, price=price)}
        assert len(body["data"]) == 6
    assert http.get("/sim/truth", params={"instId": "SOL-USDT", "bar": "1m", "price": "mark"}).status_code == 400
    assert http.get("/sim/truth", params={"instId": "SOL-USDT", "bar": "1m", "price": "last"}).status_code == 400
