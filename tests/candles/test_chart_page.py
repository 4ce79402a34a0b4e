"""The chart page /chart/ in a real browser (Debian's chromium, headless, driven by Playwright).

The page runs against the project's ASGI app under uvicorn (`stream_server` of tests/candles/conftest.py, in a
thread of this process) and the real API over PostgreSQL: candles stored here are fetched by the page's script,
drawn by lightweight-charts, and followed live over the WebSocket stream, which the write path feeds at commit.
Assertions read the page's own state through `window.okxChart` (what the chart holds), the pixels the chart
painted, and the requests and WebSocket frames the browser saw.

Playwright's sync API keeps an asyncio loop running in the test's thread while a browser is open, and
Django refuses ORM calls from such a thread; so data is stored before the browser starts, and writes made
while it runs go through `in_thread`, which uses a thread (and a database connection) of its own.

Set UPDATE_CHART_SCREENSHOT=1 to write docs/chart.png from the realistic dataset of the last test.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import ConsoleMessage, Page, WebSocket, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from candles.bars import datetime_to_ms
from candles.storage import CandleRow, candles_upsert
from candles.subscriptions import subscriptions_create
from tests.candles.conftest import StreamServer
from tests.support import InThread

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# Debian's package (apt-get install chromium); `make browser` (scripts/ensure_apt.sh) reads the same variable.
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "chart.png"

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
# 2024-01-16 12:00 UTC
T0_MS = 1_705_406_400_000


# --- data --------------------------------------------------------------------------------------------


def every(start_ms: int, count: int, step_ms: int = MINUTE_MS) -> list[int]:
    return [start_ms + index * step_ms for index in range(count)]


def walk(
    inst_id: str, bar: str, open_times: list[int], *, missing: Container[int] = (), price: str = "43000.0",
    seed: int = 7, open_last: bool = True,
) -> list[CandleRow]:
    """Candles of a seeded random walk at `open_times`, leaving out the indexes in `missing`.

    Prices have OKX's BTC-USDT tick (0.1), volumes 8 decimals; the last candle is still open unless told.
    """
    rng = random.Random(seed)
    tick, lot = Decimal("0.1"), Decimal("0.00000001")
    close = Decimal(price)
    rows = []
    count = len(open_times)
    for index, open_time_ms in enumerate(open_times):
        open_ = close
        close = (open_ * (1 + Decimal(rng.gauss(0, 0.0012)))).quantize(tick)
        high = (max(open_, close) * (1 + Decimal(abs(rng.gauss(0, 0.0006))))).quantize(tick)
        low = (min(open_, close) * (1 - Decimal(abs(rng.gauss(0, 0.0006))))).quantize(tick)
        vol = Decimal(rng.lognormvariate(0, 0.6)).quantize(lot)
        if index in missing:
            continue
        last = index == count - 1
        rows.append(CandleRow(
            inst_id, bar, open_time_ms, str(open_), str(high), str(low), str(close), str(vol),
            str((vol * close).quantize(lot)), str((vol * close).quantize(lot)), not (last and open_last), "ws",
            1_000 + index,
        ))
    return rows


def store(rows: list[CandleRow]) -> None:
    result = candles_upsert(rows=rows)
    assert not result.rejected, result.rejected


def in_thread(target: Callable[..., Any], **kwargs: Any) -> Any:
    """Runs a database call outside the test's thread (whose Playwright loop Django refuses)."""
    run = InThread(target, **kwargs)
    run.start()
    run.finish()
    if run.error:
        raise run.error
    return run.result


@pytest.fixture
def subscribed(instrument):
    """`subscribed("BTC-USDT", "1m", "1H")`: a live instrument subscribed in those bars."""

    def make(inst_id: str, *bars: str) -> None:
        instrument(inst_id)
        subscriptions_create(inst_ids=[inst_id], bars=bars)

    return make


# --- the browser -------------------------------------------------------------------------------------


@dataclass
class SocketLog:
    """One WebSocket the page opened: what it sent and received (parsed JSON, or the text), and whether it closed."""

    url: str
    sent: list[Any] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)
    closed: bool = False

    def subscribes(self) -> list[dict]:
        return [arg for message in self.sent if isinstance(message, dict) and message.get("op") == "subscribe"
                for arg in message["args"]]

    def data(self) -> list[dict]:
        """Data frames received, in order."""
        return [frame for frame in self.received if isinstance(frame, dict) and "data" in frame]


def _parsed(payload: str | bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload


class ChartPage:
    """One browser tab on /chart/, recording console errors, uncaught exceptions, requests and WebSockets."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.sockets: list[SocketLog] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", self._websocket)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _websocket(self, socket: WebSocket) -> None:
        log = SocketLog(socket.url)
        socket.on("framesent", lambda payload: log.sent.append(_parsed(payload)))
        socket.on("framereceived", lambda payload: log.received.append(_parsed(payload)))
        socket.on("close", lambda _: setattr(log, "closed", True))
        self.sockets.append(log)

    def api_requests(self) -> list[str]:
        return [url for url in self.requests if "/api/" in url]

    def open(self, query: str = "") -> ChartPage:
        response = self.page.goto(f"{self.base_url}/chart/{query}")
        assert response is not None
        assert response.status == 200
        assert self.page.evaluate("window.okxChart.ready"), "the chart did not start"
        return self

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def wait(self, condition: str, arg: Any = None, timeout_ms: int = 5000) -> None:
        self.page.wait_for_function(condition, arg=arg, timeout=timeout_ms)

    def wait_candles(self, count: int, timeout_ms: int = 5000) -> None:
        try:
            self.wait("n => window.okxChart.candleCount() === n", count, timeout_ms)
        except PlaywrightTimeout:
            held = self.js("window.okxChart.candleCount()")
            pytest.fail(f"the chart holds {held} candles, not {count}, after {timeout_ms} ms "
                        f"(state {self.js('window.okxChart.state()')!r}, errors {self.errors})")

    def until(self, condition: Callable[[], Any], what: str, timeout_ms: int = 5000) -> Any:
        """Waits for a condition on what the test recorded (events arrive while Playwright waits)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            found = condition()
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout_ms} ms (state {self.js('window.okxChart.state()')!r}, "
                            f"stream {self.js('window.okxChart.stream()')!r}, errors {self.errors})")
            self.page.wait_for_timeout(20)

    def wait_live(self) -> SocketLog:
        """Waits until the stream is subscribed and its first data frame (the replay) has arrived."""
        self.wait("() => window.okxChart.stream() === 'live'")
        return self.until(lambda: self.sockets and self.sockets[-1].data() and self.sockets[-1],
                          "data frame on the stream")

    def retry_now(self) -> None:
        """Presses the banner's Retry now, unless a retry that succeeded has taken the banner away already."""
        self.js("() => document.querySelector('#banner:not([hidden]) button')?.click()")

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    def painted(self) -> dict[str, int]:
        """Pixels of the chart's canvas in the rising, falling and gap colours."""
        return self.js("""() => {
            const canvas = window.okxChart.screenshot();
            const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            const near = (i, [r, g, b]) =>
                Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 30;
            const counts = { up: 0, down: 0, background: 0, total: data.length / 4 };
            for (let i = 0; i < data.length; i += 4) {
                if (near(i, [38, 166, 154])) counts.up += 1;
                else if (near(i, [239, 83, 80])) counts.down += 1;
                else if (near(i, [19, 23, 34])) counts.background += 1;
            }
            return counts;
        }""")


@pytest.fixture
def chart(stream_server: StreamServer) -> Iterator[Callable[..., ChartPage]]:
    """`chart(query)` opens /chart/<query> in headless Chromium at 1280×720 and returns a ChartPage;
    `before(chart_page)`, when given, runs before the page is loaded (routes, cookies).

    The site is served by uvicorn (HTTP and the WebSocket stream on one port, as in production). The browser
    starts on the first call, after the test stored its data, and is closed before the server stops and the
    database is reset. Chromium must be installed: without it this fails, it does not skip.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"chromium is not installed at {CHROMIUM}: the chart page is tested in a real browser "
                    "(apt-get install -y chromium)")
    state: dict[str, Any] = {}

    def open_chart(query: str = "", before: Callable[[ChartPage], None] | None = None) -> ChartPage:
        if "browser" not in state:
            state["playwright"] = sync_playwright().start()
            state["browser"] = state["playwright"].chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
        chart_page = ChartPage(state["browser"].new_page(viewport={"width": 1280, "height": 720}),
                               stream_server.http_url)
        if before is not None:
            before(chart_page)
        return chart_page.open(query)

    yield open_chart
    if "browser" in state:
        state["browser"].close()
        state["playwright"].stop()


# --- behaviour ---------------------------------------------------------------------------------------


def test_it_draws_stored_candles_and_follows_new_ones_without_reload(subscribed, chart):
    subscribed("BTC-USDT", "1m")
    # 120 minutes with bars 50–54 missing: 115 candles, one gap of 5; the newest candle is still open.
    rows = walk("BTC-USDT", "1m", every(T0_MS, 120), missing=range(50, 55))
    store(rows)

    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(115)

    assert page.js("window.okxChart.selection()") == {"symbol": "BTC-USDT", "timeframe": "1m"}
    assert page.js("window.okxChart.gaps()") == [
        {"first": T0_MS + 50 * MINUTE_MS, "last": T0_MS + 54 * MINUTE_MS, "missing": 5,
         "before": T0_MS + 55 * MINUTE_MS},
    ]
    assert page.js("window.okxChart.gapMarkerCount()") == 1
    pixels = page.painted()
    assert pixels["up"] > 500, pixels
    assert pixels["down"] > 500, pixels
    # The legend shows the newest candle's exact strings, and that it is still open.
    newest = rows[-1]
    legend = page.text("#legend")
    assert newest.close in legend
    assert newest.high in legend
    assert "open" in legend

    # After the first page is drawn the chart follows the stream on the page's own host, from its newest candle.
    socket = page.wait_live()
    assert page.js("window.okxChart.state()") == "live"
    assert socket.url == page.base_url.replace("http://", "ws://") + "/api/v1/stream"
    assert socket.subscribes() == [{"symbol": "BTC-USDT", "timeframe": "1m", "since": newest.open_time_ms}]

    page.js("window.notReloaded = true")
    page.requests.clear()
    closing = newest._replace(close="43999.9", high="43999.9", confirmed=True, version=5_000)
    following = CandleRow("BTC-USDT", "1m", newest.open_time_ms + MINUTE_MS, "43999.9", "44010.0", "43990.5",
                          "44005.2", "2.5", "110013", "110013", False, "ws", 5_001)
    in_thread(store, rows=[closing, following])

    page.wait_candles(116, timeout_ms=2500)
    last = page.js("window.okxChart.lastCandle()")
    assert (last["open_time_ms"], last["close"], last["confirm"]) == (following.open_time_ms, "44005.2", False)
    assert page.js("window.notReloaded") is True
    assert "44005.2" in page.text("#legend")
    # The candle that was open on screen got its final version too.
    assert page.js("ms => window.okxChart.candle(ms)", closing.open_time_ms)["close"] == "43999.9"
    # Both came over the stream: the page asked the API for nothing.
    assert page.api_requests() == []

    # Backfill fills the gap while the page watches: the stream pushes those candles too, and the mark goes.
    in_thread(store, rows=walk("BTC-USDT", "1m", every(T0_MS, 55), seed=8, open_last=False)[50:])
    page.wait_candles(121, timeout_ms=2500)
    assert page.js("window.okxChart.gapCount()") == 0
    assert page.js("window.okxChart.gapMarkerCount()") == 0
    assert page.js("window.okxChart.lastCandle().open_time_ms") == following.open_time_ms
    assert page.api_requests() == []
    assert not [url for url in page.requests if "/latest" in url]
    assert len(page.sockets) == 1
    assert page.errors == []


def test_it_loads_older_candles_when_scrolled_to_the_left_edge(subscribed, chart):
    subscribed("BTC-USDT", "1m")
    store(walk("BTC-USDT", "1m", every(T0_MS, 2500)))

    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(1000)
    assert page.js("window.okxChart.firstOpenTime()") == T0_MS + 1500 * MINUTE_MS

    # Scroll to the oldest loaded candle, as dragging the chart to the right does.
    page.js("window.okxChart.chart.timeScale().setVisibleLogicalRange({ from: -20, to: 100 })")
    page.wait_candles(2000)
    page.js("window.okxChart.chart.timeScale().setVisibleLogicalRange({ from: -20, to: 100 })")
    page.wait_candles(2500)
    assert page.js("window.okxChart.firstOpenTime()") == T0_MS
    page.wait("() => window.okxChart.historyDone() === true")
    assert page.js("window.okxChart.gapCount()") == 0
    assert page.errors == []


def test_gaps_of_calendar_bars_follow_months_of_the_bars_own_clock(subscribed, chart, tf):
    """1M opens on the 1st at midnight Hong Kong time; months have 28 to 31 days, none of them a gap."""
    subscribed("BTC-USDT", "1M")
    spec = tf("1M").spec
    open_times = [spec.ceil(datetime_to_ms(datetime(2023, 5, 31, 16, tzinfo=UTC)))]  # 2023-06-01 00:00 UTC+8
    while len(open_times) < 20:
        open_times.append(spec.following(open_times[-1]))
    # Missing: January and February 2024 (a leap February), and October 2024.
    store(walk("BTC-USDT", "1M", open_times, missing={7, 8, 16}))

    page = chart("?symbol=BTC-USDT&timeframe=1M")
    page.wait_candles(17)
    assert page.js("window.okxChart.gaps()") == [
        {"first": open_times[7], "last": open_times[8], "missing": 2, "before": open_times[9]},
        {"first": open_times[16], "last": open_times[16], "missing": 1, "before": open_times[17]},
    ]
    assert open_times[7] == datetime_to_ms(datetime(2023, 12, 31, 16, tzinfo=UTC))  # 2024-01-01 00:00 UTC+8
    assert page.js("window.okxChart.gapMarkerCount()") == 2
    assert page.errors == []


HIDE_TAB = """() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW_TAB = """() => {
    delete document.hidden;
    delete document.visibilityState;
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_the_stream_is_closed_while_the_tab_is_hidden_and_resumes_when_shown(subscribed, chart):
    subscribed("BTC-USDT", "1m")
    rows = walk("BTC-USDT", "1m", every(T0_MS, 10))
    store(rows)
    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(10)
    first = page.wait_live()

    # What the browser reports when the user switches to another tab.
    page.js(HIDE_TAB)
    assert page.text("#status") == "paused (tab hidden)"
    page.until(lambda: first.closed, "closed stream while the tab is hidden", timeout_ms=3000)
    page.requests.clear()
    page.page.wait_for_timeout(3000)
    assert page.requests == []
    assert len(page.sockets) == 1

    # Written while the tab is hidden: the final version of the open candle and the next one.
    closing = rows[-1]._replace(close=rows[-1].high, confirmed=True, version=5_000)
    following = walk("BTC-USDT", "1m", every(T0_MS, 11))[-1]
    in_thread(store, rows=[closing, following])
    page.js(SHOW_TAB)
    page.wait_candles(11, timeout_ms=3000)  # at once, not after a hidden tab's sleep
    assert page.js("ms => window.okxChart.candle(ms)", closing.open_time_ms)["confirm"] is True
    # One new connection, resuming from the newest candle held when the tab was hidden; nothing polled.
    assert len(page.sockets) == 2
    assert page.sockets[1].subscribes() == [{"symbol": "BTC-USDT", "timeframe": "1m", "since": closing.open_time_ms}]
    assert page.api_requests() == []
    page.wait("() => window.okxChart.stream() === 'live'")
    assert page.text("#status") == "live"
    assert page.errors == []


def test_switching_symbol_never_draws_candles_of_the_previous_series(subscribed, chart):
    subscribed("BTC-USDT", "1m")
    subscribed("ETH-USDT", "1m")
    btc = walk("BTC-USDT", "1m", every(T0_MS, 30))
    store(btc)
    store(walk("ETH-USDT", "1m", every(T0_MS, 40), price="2500.0"))
    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(30)
    btc_socket = page.wait_live()

    # BTC-USDT keeps changing while the page switches away from it: its open candle gets a new version every
    # few milliseconds, and candles open after ETH-USDT's newest one (a stale one would be appended).
    stop = threading.Event()

    def churn() -> int:
        writes = 0
        while not stop.is_set():
            writes += 1
            price = f"{43000 + writes % 500}.5"
            update = btc[-1]._replace(close=price, high="99999.0", low="1.0", version=10_000 + writes)
            opened = update._replace(open_time_ms=T0_MS + (40 + writes) * MINUTE_MS)
            store([update, opened])
            time.sleep(0.01)
        return writes

    writer = InThread(churn)
    writer.start()
    try:
        page.until(lambda: len(btc_socket.data()) >= 5, "BTC-USDT pushes before the switch")
        page.page.select_option("#symbol", "ETH-USDT")
        page.wait_candles(40)
        eth_socket = page.wait_live()
        page.page.wait_for_timeout(1500)  # BTC-USDT goes on being written meanwhile
    finally:
        stop.set()
        writer.finish()
    assert writer.error is None, writer.error
    assert writer.result > 20

    # An ETH-USDT candle written now arrives; not one candle of BTC-USDT ever reached the ETH-USDT chart.
    in_thread(store, rows=[walk("ETH-USDT", "1m", every(T0_MS, 41), price="2500.0")[-1]])
    page.wait_candles(41, timeout_ms=2500)
    assert page.js("window.okxChart.selection()") == {"symbol": "ETH-USDT", "timeframe": "1m"}
    closes = [float(candle["close"]) for candle in page.js("window.okxChart.candles()")]
    assert max(closes) < 10_000, [close for close in closes if close >= 10_000]
    # The switch closed the BTC-USDT connection and opened one for ETH-USDT alone.
    assert btc_socket.closed
    assert eth_socket is not btc_socket
    assert eth_socket.subscribes() == [{"symbol": "ETH-USDT", "timeframe": "1m", "since": T0_MS + 39 * MINUTE_MS}]
    assert {(frame["arg"]["symbol"], frame["arg"]["timeframe"]) for frame in eth_socket.data()} == {("ETH-USDT", "1m")}
    assert page.errors == []


def test_after_the_server_drops_the_socket_the_page_reconnects_and_shows_what_was_written_meanwhile(
    subscribed, chart, stream_server,
):
    subscribed("BTC-USDT", "1m")
    # 60 minutes with 20–22 missing; the newest is still open.
    rows = walk("BTC-USDT", "1m", every(T0_MS, 60), missing=range(20, 23))
    store(rows)
    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(57)
    first = page.wait_live()
    assert page.js("window.okxChart.gapCount()") == 1

    # The web process goes away: uvicorn closes the stream's socket (1012) on its way down.
    stream_server.stop()
    page.until(lambda: first.closed, "closed stream")
    page.wait("() => window.okxChart.stream() === 'reconnecting'")
    assert page.text("#status") == "reconnecting"

    # Written while no server could push anything: the final version of the open candle, two new candles, and
    # backfill of the gap (before the candle the page resumes from).
    closing = rows[-1]._replace(close=rows[-1].high, confirmed=True, version=5_000)
    later = walk("BTC-USDT", "1m", every(T0_MS, 62), seed=9)[-2:]
    backfill = walk("BTC-USDT", "1m", every(T0_MS, 23), seed=8, open_last=False)[20:]
    in_thread(store, rows=[closing, *later, *backfill])

    # The reconnect finds nothing listening: the banner says so, with the server's absence as the reason.
    page.wait("() => !document.querySelector('#banner').hidden", timeout_ms=8000)
    assert "The live stream cannot be reached." in page.text("#banner")
    assert page.js("window.okxChart.candleCount()") == 57

    stream_server.start()
    page.retry_now()  # "Retry now" instead of waiting out the backoff
    page.wait_candles(59, timeout_ms=3000)
    page.wait("() => window.okxChart.state() === 'live'")
    page.wait("() => document.querySelector('#banner').hidden")
    last = page.js("window.okxChart.lastCandle()")
    assert (last["open_time_ms"], last["close"], last["confirm"]) == (later[-1].open_time_ms, later[-1].close, False)
    assert page.js("ms => window.okxChart.candle(ms)", closing.open_time_ms)["confirm"] is True
    # It resumed from the candle that was open when the socket dropped.
    resumed = page.sockets[-1]
    assert resumed.subscribes() == [{"symbol": "BTC-USDT", "timeframe": "1m", "since": closing.open_time_ms}]
    assert not [url for url in page.requests if "/latest" in url]

    # Backfill older than that is not replayed; the re-check of marked gaps (every 30 s, here at once) finds it.
    assert page.js("window.okxChart.gapCount()") == 1
    page.js("window.okxChart.recheckGaps()")
    page.wait_candles(62)
    assert page.js("window.okxChart.gapCount()") == 0
    # The browser logs the refused connection attempts; the page adds nothing of its own.
    assert all("WebSocket connection to" in error for error in page.errors), page.errors


def test_an_error_from_the_stream_shows_its_message_and_the_page_subscribes_again(settings, subscribed, chart):
    subscribed("BTC-USDT", "1m")
    store(walk("BTC-USDT", "1m", every(T0_MS, 10)))
    # The server turns the chart's subscription down with an error frame: a limit of no subscriptions at all.
    settings.STREAM_MAX_SUBSCRIPTIONS = 0
    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(10)
    page.wait("() => window.okxChart.state() === 'error'")
    assert page.text("#status") == "error"
    assert page.page.locator("#status").get_attribute("title") == "at most 0 subscriptions a connection"
    page.wait("() => !document.querySelector('#banner').hidden")
    assert page.text("#banner").startswith("Live updates stopped: at most 0 subscriptions a connection. Retrying in ")

    settings.STREAM_MAX_SUBSCRIPTIONS = 100
    in_thread(store, rows=[walk("BTC-USDT", "1m", every(T0_MS, 11))[-1]])
    page.retry_now()
    page.wait_candles(11, timeout_ms=5000)
    page.wait("() => window.okxChart.state() === 'live'")
    page.wait("() => document.querySelector('#banner').hidden")
    assert page.text("#status") == "live"
    assert page.errors == []


def test_selectors_list_subscriptions_and_keep_the_url_in_sync(subscribed, chart):
    subscribed("BTC-USDT", "1m", "1H")
    subscribed("ETH-USDT", "1m")
    store(walk("BTC-USDT", "1m", every(T0_MS, 30)))
    store(walk("BTC-USDT", "1H", every(T0_MS, 12, HOUR_MS)))
    store(walk("ETH-USDT", "1m", every(T0_MS, 40), price="2500.0"))

    page = chart()  # no query: the first subscription
    page.wait_candles(30)
    assert page.page.url.endswith("/chart/?symbol=BTC-USDT&timeframe=1m")
    symbols = page.page.locator("#symbol option").all_inner_texts()
    assert symbols == ["BTC-USDT", "ETH-USDT"]
    assert page.page.locator("#timeframe option").all_inner_texts() == ["1m", "1H"]

    page.page.select_option("#timeframe", "1H")
    page.wait_candles(12)
    assert page.page.url.endswith("/chart/?symbol=BTC-USDT&timeframe=1H")

    page.page.select_option("#symbol", "ETH-USDT")
    page.wait_candles(40)
    assert page.page.url.endswith("/chart/?symbol=ETH-USDT&timeframe=1m")
    assert "2500" in page.text("#legend") or page.js("window.okxChart.lastCandle().close").startswith("2")

    page.page.go_back()  # history entries are kept, so shared and visited views come back
    page.wait_candles(12)
    assert page.js("window.okxChart.selection()") == {"symbol": "BTC-USDT", "timeframe": "1H"}
    assert page.errors == []


def test_it_says_when_there_is_nothing_to_show_and_shows_data_once_there_is(subscribed, chart):
    page = chart()
    page.wait("() => window.okxChart.state() === 'empty'")
    assert "No subscriptions yet." in page.text("#notice")

    # Someone subscribes; the lists are refreshed (every minute, here at once) and the chart opens on it.
    in_thread(lambda: subscribed("SOL-USDT", "1m"))
    page.js("window.okxChart.refreshCatalogue()")
    page.wait("() => window.okxChart.selection().symbol === 'SOL-USDT'")
    assert page.page.url.endswith("/chart/?symbol=SOL-USDT&timeframe=1m")
    page.wait("() => document.querySelector('#notice').innerText.includes('No candles stored yet for SOL-USDT 1m.')")
    assert page.js("window.okxChart.state()") == "empty"
    # The first candles show up without a reload.
    in_thread(store, rows=walk("SOL-USDT", "1m", every(T0_MS, 3), price="95.0"))
    page.wait_candles(3)
    page.wait("() => document.querySelector('#notice').hidden")
    assert page.js("window.okxChart.state()") == "live"
    assert page.errors == []

    page = chart("?symbol=NOPE-USDT&timeframe=1m")
    page.wait("() => window.okxChart.state() === 'error'")
    assert "Symbol NOPE-USDT not found." in page.text("#notice")
    # The browser itself logs the API's 404; the page adds nothing of its own.
    assert page.errors
    assert all("404" in error for error in page.errors), page.errors

    # Bars are case-sensitive: 5H is five hours (derived), 5h nothing (5M would be five months, derived).
    page = chart("?symbol=SOL-USDT&timeframe=5h")
    page.wait("() => window.okxChart.state() === 'error'")
    assert "Timeframe 5h does not exist." in page.text("#notice")


def test_it_asks_to_sign_in_when_the_api_wants_authenticated_readers(settings, subscribed, chart):
    subscribed("BTC-USDT", "1m")
    settings.API_READ_AUTH = True
    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait("() => window.okxChart.state() === 'error'")
    assert "The API needs you to sign in." in page.text("#notice")
    link = page.page.locator("#notice a").get_attribute("href")
    assert link == "/admin/login/?next=%2Fchart%2F%3Fsymbol%3DBTC-USDT%26timeframe%3D1m"


def test_an_unreachable_api_shows_a_banner_and_the_chart_recovers(subscribed, chart):
    subscribed("BTC-USDT", "1m")
    store(walk("BTC-USDT", "1m", every(T0_MS, 60)))

    # The browser cannot reach the candles: every request for them fails at the network level.
    def unreachable(page: ChartPage) -> None:
        page.page.route("**/api/v1/data/**", lambda route: route.abort("connectionrefused"))

    page = chart("?symbol=BTC-USDT&timeframe=1m", before=unreachable)
    page.wait("() => !document.querySelector('#banner').hidden")
    assert "cannot be reached" in page.text("#banner")
    assert page.js("window.okxChart.state()") == "retrying"
    in_thread(store, rows=[walk("BTC-USDT", "1m", every(T0_MS, 61))[-1]])

    page.page.unroute("**/api/v1/data/**")
    page.retry_now()  # "Retry now" instead of waiting out the backoff
    page.wait_candles(61)
    page.wait("() => document.querySelector('#banner').hidden")
    page.wait("() => window.okxChart.state() === 'live'")
    assert all("ERR_CONNECTION_REFUSED" in error for error in page.errors), page.errors


def test_with_read_authentication_a_staff_session_follows_the_stream(settings, subscribed, chart, django_user_model):
    subscribed("BTC-USDT", "1m")
    store(walk("BTC-USDT", "1m", every(T0_MS, 10)))
    settings.API_READ_AUTH = True
    staff = django_user_model.objects.create_user("watcher", password="not-used", is_staff=True)
    client = Client()
    client.force_login(staff)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value

    def signed_in(page: ChartPage) -> None:
        page.page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": page.base_url}])

    page = chart("?symbol=BTC-USDT&timeframe=1m", before=signed_in)
    page.wait_candles(10)  # the REST API reads with the session
    page.wait("() => ['live', 'refused'].includes(window.okxChart.stream())")
    assert page.js("window.okxChart.stream()") == "live", page.text("#banner")
    in_thread(store, rows=[walk("BTC-USDT", "1m", every(T0_MS, 11))[-1]])
    page.wait_candles(11, timeout_ms=2500)
    assert page.errors == []


def test_a_realistic_day_of_minutes_with_a_gap(subscribed, chart, tmp_path):
    """The dataset of docs/chart.png: 300 minutes of a random walk, 12 of them never stored."""
    subscribed("BTC-USDT", "1m", "5m", "1H")
    store(walk("BTC-USDT", "1m", every(T0_MS, 300), missing=range(200, 212), seed=42))

    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(288)
    assert page.js("window.okxChart.gapMarkerCount()") == 1
    assert page.js("window.okxChart.gaps()[0].missing") == 12
    page.page.mouse.move(900, 300)  # a crosshair, as when someone looks at the chart
    page.wait("() => window.okxChart.state() === 'live'")
    shot = tmp_path / "chart.png"
    page.page.screenshot(path=shot)
    assert shot.stat().st_size > 20_000
    if os.environ.get("UPDATE_CHART_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.write_bytes(shot.read_bytes())
    assert page.errors == []


# --- mark-price and index overlays -------------------------------------------------------------------


def priced(rows: list[CandleRow], price: str, inst_id: str | None = None) -> list[CandleRow]:
    """`rows` as mark or index candles (no volumes), of `inst_id` when given."""
    return [row._replace(inst_id=inst_id or row.inst_id, vol=None, vol_ccy=None, vol_ccy_quote=None, price=price)
            for row in rows]


@pytest.fixture
def swap(instrument):
    """BTC-USDT-SWAP with its mark row, the index BTC-USDT, and the spot pair BTC-USDT."""

    def make(*, index: bool = True) -> None:
        instrument("BTC-USDT")
        fields = {"inst_type": "SWAP", "settle_ccy": "USDT", "inst_family": "BTC-USDT"}
        instrument("BTC-USDT-SWAP", **fields)
        instrument("BTC-USDT-SWAP", price="mark", **fields)
        if index:
            instrument("BTC-USDT", inst_type="INDEX", price="index")

    return make


def _overlays_script(html: str) -> dict:
    start = html.index('<script id="chart-overlays" type="application/json">') + len(
        '<script id="chart-overlays" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)])


def test_the_view_offers_mark_and_index_toggles_for_a_swap_and_none_for_a_spot_pair(swap):
    swap()
    html = Client().get("/chart/?symbol=BTC-USDT-SWAP&timeframe=1m").content.decode()
    assert _overlays_script(html) == {"symbol": "BTC-USDT-SWAP", "mark": True, "index": "BTC-USDT"}
    assert '<label id="overlay-mark" class="overlay overlay-mark">' in html
    assert '<label id="overlay-index" class="overlay overlay-index">' in html

    spot = Client().get("/chart/?symbol=BTC-USDT&timeframe=1m").content.decode()
    assert _overlays_script(spot) == {"symbol": "BTC-USDT", "mark": False, "index": None}
    assert '<label id="overlay-mark" class="overlay overlay-mark" hidden>' in spot
    assert '<label id="overlay-index" class="overlay overlay-index" hidden>' in spot

    # Without a symbol the script learns everything from the API: nothing is embedded, the toggles are hidden.
    bare = Client().get("/chart/").content.decode()
    assert 'id="chart-overlays"' not in bare
    assert '<label id="overlay-mark" class="overlay overlay-mark" hidden>' in bare


def test_the_view_offers_no_index_toggle_when_the_index_is_not_known(swap):
    swap(index=False)
    html = Client().get("/chart/?symbol=BTC-USDT-SWAP&timeframe=1m").content.decode()
    assert _overlays_script(html) == {"symbol": "BTC-USDT-SWAP", "mark": True, "index": None}
    assert '<label id="overlay-index" class="overlay overlay-index" hidden>' in html


def test_a_swap_overlays_its_mark_price_and_index_live_on_the_same_connection(swap, chart):
    swap()
    subscriptions_create(inst_ids=["BTC-USDT-SWAP"], bars=["1m"])
    subscriptions_create(inst_ids=["BTC-USDT"], bars=["1m"])
    times = every(T0_MS, 60)
    trades = walk("BTC-USDT-SWAP", "1m", times)
    marks = priced(walk("BTC-USDT-SWAP", "1m", times, price="43010.0", seed=11), "mark")
    # The index starts later: its line covers what is stored, within the range the chart loaded.
    indices = priced(walk("BTC-USDT", "1m", times, price="42990.0", seed=12), "index")[20:]
    store(trades)
    store(marks)
    store(indices)
    store(walk("BTC-USDT", "1m", times, seed=13))

    # The mark overlay asked for by the URL is on from the start and rides on the chart's first subscribe.
    page = chart("?symbol=BTC-USDT-SWAP&timeframe=1m&mark=1")
    page.wait_candles(60)
    page.wait("() => window.okxChart.overlays().mark.count === 60")
    assert page.page.locator("#overlay-mark").is_visible()
    assert page.page.locator("#overlay-index").is_visible()
    assert page.page.locator("#overlay-mark input").is_checked()
    assert not page.page.locator("#overlay-index input").is_checked()
    overlay = page.js("window.okxChart.overlays().mark")
    assert (overlay["on"], overlay["symbol"], overlay["last"]) == (True, "BTC-USDT-SWAP", marks[-1].close)
    assert [row["close"] for row in page.js("window.okxChart.overlayCandles('mark')")] == [r.close for r in marks]
    assert any("price=mark" in url and "/data/BTC-USDT-SWAP/1m" in url for url in page.api_requests())
    socket = page.wait_live()
    assert socket.subscribes() == [
        {"symbol": "BTC-USDT-SWAP", "timeframe": "1m", "since": trades[-1].open_time_ms},
        {"symbol": "BTC-USDT-SWAP", "timeframe": "1m", "price": "mark", "since": marks[-1].open_time_ms},
    ]
    # The line is painted in the mark colour (#ce93d8).
    mark_pixels = page.js("""() => {
        const canvas = window.okxChart.screenshot();
        const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
        let count = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (Math.abs(data[i] - 206) + Math.abs(data[i + 1] - 147) + Math.abs(data[i + 2] - 216) < 30) count += 1;
        }
        return count;
    }""")
    assert mark_pixels > 300, mark_pixels
    legend = page.text("#legend")
    assert "mark BTC-USDT-SWAP" in legend
    assert marks[-1].close in legend
    assert "trade" in legend

    # Turning the index on loads its history and subscribes it on the same connection; the URL remembers it.
    page.page.check("#overlay-index input")
    page.wait("() => window.okxChart.overlays().index.count === 40")
    assert page.js("window.okxChart.overlays().index.symbol") == "BTC-USDT"
    assert any("price=index" in url and "/data/BTC-USDT/1m" in url for url in page.api_requests())
    page.until(lambda: {"symbol": "BTC-USDT", "timeframe": "1m", "price": "index",
                        "since": indices[-1].open_time_ms} in socket.subscribes(), "index subscribe")
    search = page.js("window.location.search")
    assert "index=1" in search
    assert "mark=1" in search

    # A new mark candle moves the mark line only; a new index candle the index line only.
    trade_last = page.js("window.okxChart.lastCandle()")
    page.requests.clear()
    next_ms = T0_MS + 60 * MINUTE_MS
    mark_next = marks[-1]._replace(open_time_ms=next_ms, open="43100.0", high="43111.1", low="43100.0",
                                   close="43111.1", version=9_000)
    index_next = indices[-1]._replace(open_time_ms=next_ms, open="42900.0", high="42900.0", low="42888.8",
                                      close="42888.8", version=9_001)
    in_thread(store, rows=[mark_next])
    in_thread(store, rows=[index_next])
    page.wait("() => window.okxChart.overlays().mark.count === 61 && window.okxChart.overlays().index.count === 41")
    overlays = page.js("window.okxChart.overlays()")
    assert (overlays["mark"]["last"], overlays["index"]["last"]) == ("43111.1", "42888.8")
    assert page.js("window.okxChart.candleCount()") == 60
    assert page.js("window.okxChart.lastCandle()") == trade_last
    assert page.api_requests() == []
    assert len(page.sockets) == 1

    # Turning the mark off clears its line and unsubscribes it.
    page.page.uncheck("#overlay-mark input")
    page.wait("() => !window.okxChart.overlays().mark.on && window.okxChart.overlays().mark.count === 0")
    page.until(lambda: any(isinstance(m, dict) and m.get("op") == "unsubscribe" for m in socket.sent), "unsubscribe")
    assert "mark=1" not in page.js("window.location.search")
    assert page.errors == []

    # A spot pair has neither toggle, even when the URL asks for them.
    spot = chart("?symbol=BTC-USDT&timeframe=1m&mark=1&index=1")
    spot.wait_candles(60)
    spot.wait_live()
    assert not spot.page.locator("#overlay-mark").is_visible()
    assert not spot.page.locator("#overlay-index").is_visible()
    assert spot.js("window.okxChart.overlays().mark.on") is False
    assert spot.sockets[-1].subscribes() == [{"symbol": "BTC-USDT", "timeframe": "1m", "since": times[-1]}]

    # Choosing the swap there: the page asks /instruments what it has, and turns on what the URL still asks for.
    spot.page.select_option("#symbol", "BTC-USDT-SWAP")
    spot.wait("() => window.okxChart.overlays().mark.count === 61 && window.okxChart.overlays().index.count === 41")
    assert spot.page.locator("#overlay-mark").is_visible()
    assert spot.page.locator("#overlay-index input").is_checked()
    assert any("/instruments?" in url and "type=INDEX" in url for url in spot.api_requests())
    assert spot.errors == []


def test_overlays_are_disabled_with_a_reason_for_1s(swap, chart):
    swap()
    page = chart("?symbol=BTC-USDT-SWAP&timeframe=1s&mark=1")
    page.wait("() => window.okxChart.selection().symbol === 'BTC-USDT-SWAP'")
    page.wait("() => document.querySelector('#overlay-mark input').disabled")
    assert page.page.locator("#overlay-mark").is_visible()
    assert "start at 1m" in page.page.locator("#overlay-mark").get_attribute("title")
    assert page.js("window.okxChart.overlays().mark.on") is False
    assert not [url for url in page.api_requests() if "price=" in url]
