"""The REST client on mark-price and index candles, and on the list of indices, over real sockets on 127.0.0.1.

The OKX simulator serves trade candles only, so these tests run a small HTTP server of their own (`PriceMarket`),
built from PROTOCOL.md ("Mark-price and index candles") and OKX's docs: six-field rows newest first, exclusive
`after`/`before`, `limit` at most 100 (more is refused, code 51000), the latest 1,440 candles on
`/mark-price-candles` and `/index-candles` with the open one on top, every closed one on the history endpoints.
Recorded responses from `samples/rest_price_candles.json` (each names its source) are served verbatim.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from collectors.okx.candle_rows import CandleText, CandleUpdate
from collectors.okx.instrument_rows import IndexTicker
from collectors.okx.protocol import INDEX, MARK, TRADE, Channel
from collectors.okx.ratelimit import Admission, LocalRateLimiter
from collectors.okx.rest import OkxRestClient, PageProgress, UnsupportedBar
from collectors.okx.rest_endpoints import (
    CANDLE_BUDGETS,
    CANDLES,
    HISTORY_CANDLES,
    HISTORY_INDEX_CANDLES,
    HISTORY_MARK_PRICE_CANDLES,
    INDEX_CANDLES,
    INDEX_TICKERS,
    MARK_PRICE_CANDLES,
    candle_endpoint,
)

SAMPLES = Path(__file__).resolve().parent / "samples"
MINUTE = 60_000
BARS = {"1m": MINUTE, "1H": 3_600_000, "3M": 89 * 86_400_000}
PATHS = {
    MARK_PRICE_CANDLES.path: (MARK, False), HISTORY_MARK_PRICE_CANDLES.path: (MARK, True),
    INDEX_CANDLES.path: (INDEX, False), HISTORY_INDEX_CANDLES.path: (INDEX, True),
}
INSTRUMENTS = {MARK: {"BTC-USD-SWAP", "ETH-USDT-SWAP"}, INDEX: {"BTC-USD", "ETH-USDT"}}
LISTED_MS = 1_699_999_200_000  # every series starts here (2023-11-14 22:00 UTC)...
NEW_INDEX = "ETH-USDT"  # ...but this index's, listed three days ago
NEW_LISTED_MS = (time.time_ns() // 1_000_000 // 3_600_000 - 72) * 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def listed(inst_id: str) -> int:
    return NEW_LISTED_MS if inst_id == NEW_INDEX else LISTED_MS


def row(price: str, inst_id: str, bar_ms: int, ts: int, confirm: str) -> list[str]:
    """A deterministic six-field row: a different price for every kind, instrument and open time."""
    base = (1000 if price == MARK else 2000) + len(inst_id) * 10 + (ts // bar_ms) % 997
    return [str(ts), f"{base}.25", f"{base + 1}.5", f"{base - 1}.125", f"{base}.75", confirm]


class PriceMarket:
    """What the server serves, and the requests it got (path and parameters, in order)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.canned: dict[str, dict] = {}  # path -> a recorded response, served verbatim
        self.tickers: dict[str, list[dict]] = {}
        self.lock = threading.Lock()

    def truth(self, price: str, inst_id: str, bar: str, start_ms: int, end_ms: int) -> list[list[str]]:
        """Every row with start ≤ open time ≤ end, oldest first, the current (open) candle as it is now."""
        bar_ms = BARS[bar]
        current = now_ms() // bar_ms * bar_ms
        first = max(-(-listed(inst_id) // bar_ms) * bar_ms, -(-start_ms // bar_ms) * bar_ms)
        return [row(price, inst_id, bar_ms, ts, "0" if ts == current else "1")
                for ts in range(first, min(end_ms, current) + 1, bar_ms)]

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, dict]:
        with self.lock:
            self.requests.append((path, params))
        if path in self.canned:
            return 200, self.canned[path]
        if path == INDEX_TICKERS.path:
            return 200, {"code": "0", "msg": "", "data": self.tickers.get(params.get("quoteCcy", ""), [])}
        if path not in PATHS:
            return 404, {"code": "404", "msg": "not found"}
        price, history = PATHS[path]
        inst_id, bar = params.get("instId", ""), params.get("bar", "1m")
        limit = int(params.get("limit", "100"))
        if bar not in BARS or not 1 <= limit <= 100:
            return 400, {"code": "51000", "msg": "Parameter error", "data": []}
        if inst_id not in INSTRUMENTS[price]:
            return 400, {"code": "51001", "msg": "Instrument ID doesn't exist", "data": []}
        bar_ms = BARS[bar]
        current = now_ms() // bar_ms * bar_ms
        # History: every closed candle; recent: the latest 1,440, the open one included.
        newest = current - bar_ms if history else current
        oldest = -(-listed(inst_id) // bar_ms) * bar_ms
        if not history:
            oldest = max(oldest, current - 1439 * bar_ms)
        if "after" in params:  # exclusive
            newest = min(newest, (int(params["after"]) - 1) // bar_ms * bar_ms)
        if "before" in params:  # exclusive; alone, it still gives the latest page
            oldest = max(oldest, (int(params["before"]) // bar_ms + 1) * bar_ms)
        rows = [row(price, inst_id, bar_ms, ts, "0" if ts == current else "1")
                for ts in range(newest, max(oldest, newest - (limit - 1) * bar_ms) - 1, -bar_ms)]
        return 200, {"code": "0", "msg": "", "data": rows}


@pytest.fixture
def market() -> Iterator[tuple[PriceMarket, str]]:
    state = PriceMarket()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status, body = state.answer(url.path, dict(parse_qsl(url.query)))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def client_for(url: str, **options) -> OkxRestClient:
    return OkxRestClient(url, **{"backoff_base": 0.01, "backoff_cap": 0.05, **options})


def run(coroutine):
    return asyncio.run(coroutine)


async def fetch_range(client: OkxRestClient, *args, **kwargs) -> tuple[list, list[PageProgress]]:
    pages: list[PageProgress] = []
    async with client:
        candles = await client.candle_range(*args, on_page=pages.append, **kwargs)
    return candles, pages


def as_rows(candles: list[CandleUpdate]) -> list[list[str]]:
    return [[str(c.open_time_ms), str(c.open), str(c.high), str(c.low), str(c.close), "1" if c.confirmed else "0"]
            for c in candles]


def last_closed(bar_ms: int) -> int:
    now = now_ms()
    return now - now % bar_ms - bar_ms


# --- recorded responses ------------------------------------------------------------------------------


def rest_samples() -> dict[str, dict]:
    return json.loads((SAMPLES / "rest_price_candles.json").read_text())


@pytest.mark.parametrize(("name", "price", "history"), [
    ("mark_price_candles_docs", MARK, False), ("history_mark_price_candles_docs", MARK, True),
    ("index_candles_docs", INDEX, False), ("history_index_candles_docs", INDEX, True),
])
def test_each_recorded_candle_response_parses_into_six_field_candles_of_its_kind(market, name, price, history):
    state, url = market
    recorded = rest_samples()[name]
    path, inst_id = recorded["request"]["path"], recorded["request"]["instId"]
    assert candle_endpoint(price, history=history).path == path
    state.canned[path] = recorded["response"]
    for as_text in (False, True):
        page = run(client_for(url, numbers_as_text=as_text).candles(inst_id, "1m", price=price, history=history))
        assert [type(c) for c in page] == [CandleText if as_text else CandleUpdate] * 2, recorded["source"]
        first, second = (c.exact() if as_text else c for c in page)
        assert first == CandleUpdate(inst_id, "1m", 1597026383085, Decimal("3.721"), Decimal("3.743"),
                                     Decimal("3.677"), Decimal("3.708"), None, None, None, history, price)
        assert (str(second.close), second.confirmed, second.price) == ("3.72", True, price)
        assert first.channel == Channel(inst_id, "1m", price)
    assert [p for p, _ in state.requests] == [path, path]


def test_the_recorded_index_tickers_list_their_indices_and_rows_without_an_id_are_skipped(market):
    state, url = market
    recorded = rest_samples()["index_tickers_docs"]
    # The docs row, then two built here: a row with an empty instId and one with an empty price.
    state.tickers["USDT"] = [*recorded["response"]["data"], {"instId": "", "idxPx": "1", "ts": "1649419644492"},
                             {"instId": "ETH-USDT", "idxPx": "", "ts": "1649419644492"}]
    tickers = run(client_for(url).index_tickers("USDT"))
    assert tickers == [IndexTicker("BTC-USDT", Decimal("43350"), 1649419644492),
                       IndexTicker("ETH-USDT", None, 1649419644492)]
    assert state.requests == [(INDEX_TICKERS.path, {"quoteCcy": "USDT"})]


# --- walks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("price", "inst_id"), [(MARK, "BTC-USD-SWAP"), (INDEX, "BTC-USD")])
def test_a_recent_range_walks_back_in_pages_of_at_most_100_with_exclusive_cursors(market, price, inst_id):
    state, url = market
    end = last_closed(MINUTE)
    start = end - 249 * MINUTE
    candles, pages = run(fetch_range(client_for(url, page_limit=300), inst_id, "1m", start, end, price=price))
    assert as_rows(candles) == state.truth(price, inst_id, "1m", start, end)
    assert len(candles) == 250
    assert all(c.price == price and c.vol is None and c.vol_ccy is None for c in candles)
    recent = candle_endpoint(price)
    assert {page.endpoint for page in pages} == {recent.path}
    assert [int(params["limit"]) for _, params in state.requests] == [100, 100, 51]
    # Each page starts below the oldest open time of the one before: `after` is exclusive.
    afters = [int(params["after"]) for _, params in state.requests]
    assert afters[0] == end + 1
    assert afters[1:] == [end - 99 * MINUTE, end - 199 * MINUTE]


@pytest.mark.parametrize(("price", "inst_id"), [(MARK, "ETH-USDT-SWAP"), (INDEX, "ETH-USDT")])
def test_a_range_past_the_latest_1440_switches_to_the_history_endpoint_and_keeps_the_open_candle(market, price,
                                                                                                inst_id):
    state, url = market
    start = last_closed(MINUTE) - 1700 * MINUTE
    candles, pages = run(fetch_range(client_for(url), inst_id, "1m", start, now_ms(), price=price))
    closed = [c for c in candles if c.confirmed]
    assert as_rows(closed) == state.truth(price, inst_id, "1m", start, closed[-1].open_time_ms)
    assert len(candles) - len(closed) <= 1  # the newest row may be the open candle
    assert all(c.confirmed for c in candles[:-1])
    endpoints = [page.endpoint for page in pages]
    recent, history = candle_endpoint(price), candle_endpoint(price, history=True)
    assert endpoints[0] == recent.path
    assert endpoints[-1] == history.path
    assert endpoints == sorted(endpoints, key=lambda endpoint: endpoint == history.path)
    assert all(int(params["limit"]) <= 100 for _, params in state.requests)


def test_a_range_before_the_first_candle_ends_at_it(market):
    state, url = market
    end = last_closed(3_600_000)
    candles, pages = run(fetch_range(client_for(url), NEW_INDEX, "1H", 0, end, price=INDEX))
    assert as_rows(candles) == state.truth(INDEX, NEW_INDEX, "1H", 0, end)
    assert candles[0].open_time_ms == NEW_LISTED_MS
    # Below the first candle /index-candles is empty, and so is the history endpoint asked after it: the end.
    assert [(page.endpoint, page.rows) for page in pages][-1] == (HISTORY_INDEX_CANDLES.path, 0)


def test_one_page_caps_limit_at_100_and_comes_newest_first_with_the_open_candle_on_top(market):
    state, url = market
    page = run(client_for(url).candles("BTC-USD-SWAP", "1m", limit=300, price=MARK))
    assert len(page) == 100
    times = [c.open_time_ms for c in page]
    assert times == sorted(times, reverse=True)
    assert [c.confirmed for c in page[:2]] == [False, True]
    assert state.requests[-1][1]["limit"] == "100"


def test_after_and_before_are_exclusive(market):
    _, url = market
    end = last_closed(MINUTE)
    page = run(client_for(url).candles("BTC-USD", "1m", after=end, before=end - 4 * MINUTE, price=INDEX))
    assert [c.open_time_ms for c in page] == [end - MINUTE, end - 2 * MINUTE, end - 3 * MINUTE]


def test_numbers_as_text_give_okx_strings_and_no_volumes(market):
    state, url = market
    end = last_closed(MINUTE) - 5 * MINUTE
    candles, _ = run(fetch_range(client_for(url, numbers_as_text=True), "BTC-USD-SWAP", "1m", end - 9 * MINUTE, end,
                                 price=MARK))
    assert [[str(c.open_time_ms), c.open, c.high, c.low, c.close, "1" if c.confirmed else "0"] for c in candles] == (
        state.truth(MARK, "BTC-USD-SWAP", "1m", end - 9 * MINUTE, end))
    assert {(type(c), c.vol, c.vol_ccy, c.vol_ccy_quote, c.price) for c in candles} == {
        (CandleText, None, None, None, MARK)}


# --- bars --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("price", [MARK, INDEX])
def test_bars_without_mark_or_index_candles_fail_before_any_request(market, price):
    state, url = market
    client = client_for(url)
    with pytest.raises(UnsupportedBar, match="trade prices only"):
        run(client.candles("BTC-USD", "1s", history=True, price=price))
    with pytest.raises(UnsupportedBar, match="trade prices only"):
        run(client.candle_range("BTC-USD", "1s", 0, now_ms(), price=price))
    with pytest.raises(UnsupportedBar, match="WebSocket-only"):
        run(client.candles("BTC-USD", "5D", price=price))
    with pytest.raises(UnsupportedBar, match="not served by history-"):
        run(client.candles("BTC-USD", "3M", history=True, price=price))
    with pytest.raises(ValueError, match="price must be one of"):
        run(client.candles("BTC-USD", "1m", price="last"))
    assert client.stats["requests"] == 0
    assert state.requests == []


def test_a_quarterly_range_reads_the_recent_endpoint_only_even_when_it_is_empty(market):
    # 3M candles: /index-candles holds all there are; its history endpoint does not serve them.
    state, url = market
    candles, pages = run(fetch_range(client_for(url), NEW_INDEX, "3M", 0, NEW_LISTED_MS - 1, price=INDEX))
    assert (candles, [page.endpoint for page in pages]) == ([], [INDEX_CANDLES.path])
    assert [path for path, _ in state.requests] == [INDEX_CANDLES.path]


# --- rate budgets ------------------------------------------------------------------------------------


class RecordingLimiter(LocalRateLimiter):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, int, float]] = []

    async def acquire(self, key: str, limit: int, period_s: float, *, longest_s: float = 0.0) -> Admission:
        self.asked.append((key, limit, period_s))
        return await super().acquire(key, limit, period_s, longest_s=longest_s)


def test_every_endpoint_keeps_its_own_budget_under_its_own_name(market):
    _state, url = market
    limiter = RecordingLimiter()
    client = client_for(url, limiter=limiter, rate_margin_s=0.0)
    end = last_closed(MINUTE)

    async def one_of_each() -> None:
        async with client:
            await client.candles("BTC-USD-SWAP", "1m", limit=1, price=MARK)
            await client.candles("BTC-USD-SWAP", "1m", limit=1, price=MARK, history=True, after=end)
            await client.candles("BTC-USD", "1m", limit=1, price=INDEX)
            await client.candles("BTC-USD", "1m", limit=1, price=INDEX, history=True, after=end)
            await client.index_tickers("USD")

    run(one_of_each())
    assert limiter.asked == [
        ("/api/v5/market/mark-price-candles", 20, 2.0), ("/api/v5/market/history-mark-price-candles", 20, 2.0),
        ("/api/v5/market/index-candles", 20, 2.0), ("/api/v5/market/history-index-candles", 10, 2.0),
        ("/api/v5/market/index-tickers", 20, 2.0),
    ]
    budgets = {endpoint.budget for endpoint in CANDLE_BUDGETS.values()} | {INDEX_TICKERS.budget}
    assert len(budgets) == 7
    assert CANDLE_BUDGETS == {
        "candles": CANDLES, "history-candles": HISTORY_CANDLES, "mark-price-candles": MARK_PRICE_CANDLES,
        "history-mark-price-candles": HISTORY_MARK_PRICE_CANDLES, "index-candles": INDEX_CANDLES,
        "history-index-candles": HISTORY_INDEX_CANDLES,
    }
    assert candle_endpoint(TRADE) is CANDLES
    assert candle_endpoint(TRADE, history=True) is HISTORY_CANDLES


def test_full_budgets_of_mark_and_index_candles_do_not_wait_for_each_other(market):
    # 20 + 20 + 10 requests: each endpoint's whole budget at once. With one shared budget of 20 per 2 s the
    # limiter would make the last 30 wait; with separate ones none waits.
    state, url = market
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    client = client_for(url, limiter=LocalRateLimiter(sleep=record))

    async def burst() -> list[list]:
        async with client:
            return await asyncio.gather(
                *(client.candles("BTC-USD-SWAP", "1m", limit=1, price=MARK) for _ in range(20)),
                *(client.candles("BTC-USD", "1m", limit=1, price=INDEX) for _ in range(20)),
                *(client.candles("BTC-USD", "1m", limit=1, price=INDEX, history=True) for _ in range(10)),
            )

    pages = run(burst())
    assert waits == []
    assert [len(page) for page in pages] == [1] * 50
    assert client.stats == {"requests": 50, "retries": 0, "rate_limited": 0}
    assert len(state.requests) == 50

    async def one_more() -> None:  # the 11th history-index request within 2 s does wait: that budget is 10
        async with client:
            await asyncio.gather(*(client.candles("BTC-USD", "1m", limit=1, price=INDEX, history=True)
                                   for _ in range(11)))

    run(one_more())
    assert waits
