"""A third-party OKX client agrees with the simulator: ccxt's okx exchange, pointed at the simulator's REST URL,
loads its markets from /public/instruments and fetches trade, mark-price and index candles equal to the truth.

Every request ccxt makes goes through a session that refuses any URL outside the simulator: nothing leaves the
machine, and an endpoint the simulator lacks would fail the test instead of reaching OKX.
"""

from __future__ import annotations

import time

import pytest
import requests

from collectors.simulator import run_in_thread
from collectors.simulator.bars import BARS

from .conftest import roomy

ccxt = pytest.importorskip("ccxt")


class SimulatorOnly(requests.adapters.HTTPAdapter):
    """Sends only to the simulator; anything else is an error (and a test failure)."""

    def __init__(self, base_url: str):
        super().__init__()
        self.base_url = base_url

    def send(self, request, *args, **kwargs):
        if not request.url.startswith(self.base_url + "/"):
            raise AssertionError(f"ccxt tried to leave the machine: {request.url}")
        return super().send(request, *args, **kwargs)


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(roomy(futures=16)) as handle:
        yield handle


@pytest.fixture(scope="module")
def okx(sim):
    session = requests.Session()
    guard = SimulatorOnly(sim.rest_url)
    session.mount("http://", guard)
    session.mount("https://", guard)
    exchange = ccxt.okx({"session": session, "enableRateLimit": False})
    exchange.urls["api"] = {"rest": sim.rest_url}
    exchange.urls["test"] = {"rest": sim.rest_url}
    exchange.load_markets()
    yield exchange
    session.close()


def truth(sim, inst_id: str, bar: str, rows: list[list], price: str) -> list[list[str]]:
    return sim.simulator.market.truth_range(inst_id, bar, rows[0][0], rows[-1][0], price=price)


def as_numbers(row: list[str]) -> list:
    return [int(row[0]), *(float(value) for value in row[1:5])]


def test_markets_load_from_the_simulators_instruments(sim, okx):
    market = okx.market("BTC/USDT:USDT")
    assert (market["id"], market["type"], market["info"]["instFamily"]) == ("BTC-USDT-SWAP", "swap", "BTC-USDT")
    assert okx.market("ETH/USDT")["id"] == "ETH-USDT"
    inverse = [m for m in okx.markets.values() if m["type"] == "future" and m["inverse"]]
    assert len(inverse) == 8
    listed = {inst_id for inst_id in sim.simulator.market.instruments}
    assert {m["id"] for m in okx.markets.values()} == listed


@pytest.mark.parametrize(
    ("method", "symbol", "inst_id", "price"),
    [
        ("fetch_ohlcv", "BTC/USDT", "BTC-USDT", "trade"),
        ("fetch_ohlcv", "ETH/USDT:USDT", "ETH-USDT-SWAP", "trade"),
        ("fetch_mark_ohlcv", "ETH/USDT:USDT", "ETH-USDT-SWAP", "mark"),
        ("fetch_index_ohlcv", "ETH/USDT:USDT", "ETH-USDT", "index"),  # ccxt asks for the swap's instFamily
    ],
)
@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_latest_candles_agree_with_the_truth(sim, okx, method, symbol, inst_id, price, timeframe):
    rows = getattr(okx, method)(symbol, timeframe, limit=20)  # 20 days fit in the simulator's 30 days of history
    assert len(rows) == 20
    stamps = [row[0] for row in rows]
    assert stamps == sorted(stamps)  # ccxt turns OKX's newest-first pages around
    bar = {"1m": "1m", "1h": "1H", "1d": "1Dutc"}[timeframe]  # ccxt asks for UTC days
    current = BARS[bar].floor(time.time_ns() // 1_000_000)
    closed = [row for row in rows if row[0] < current]
    assert len(closed) >= 19
    expected = truth(sim, inst_id, bar, closed, price)
    assert [row[:5] for row in closed] == [as_numbers(row) for row in expected]
    if price == "trade":
        volume = 5 if symbol == "BTC/USDT" else 6  # ccxt: base volume, i.e. contracts' volCcy for swaps
        assert [row[5] for row in closed] == [float(row[volume]) for row in expected]
    else:
        assert all(row[5] is None for row in rows)  # no volume in mark and index rows


@pytest.mark.parametrize(
    ("method", "symbol", "inst_id", "price"),
    [
        ("fetch_ohlcv", "BTC/USD:BTC", None, "trade"),
        ("fetch_mark_ohlcv", "BTC/USD:BTC", None, "mark"),
        ("fetch_index_ohlcv", "BTC/USD:BTC", "BTC-USD", "index"),
    ],
)
def test_older_candles_come_from_the_history_endpoints_and_agree_with_the_truth(sim, okx, method, symbol, inst_id,
                                                                                    price):
    market = next(m for m in okx.markets.values() if m["type"] == "future" and m["inverse"] and m["base"] == "BTC")
    symbol, inst_id = market["symbol"], inst_id or market["id"]
    since = BARS["1m"].floor(time.time_ns() // 1_000_000) - 3 * 86_400_000  # past the latest 1,440: history
    rows = getattr(okx, method)(symbol, "1m", since=since, limit=100)
    assert [row[0] for row in rows] == [since + k * 60_000 for k in range(100)]
    assert [row[:5] for row in rows] == [as_numbers(row) for row in truth(sim, inst_id, "1m", rows, price)]
