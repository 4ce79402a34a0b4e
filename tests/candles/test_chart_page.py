"""The chart page /chart/ in a real browser (Debian's chromium, headless, driven by Playwright).

The page runs against Django's live server and the real API over PostgreSQL: candles stored here are
fetched by the page's script, drawn by lightweight-charts, and followed live. Assertions read the page's
own state through `window.okxChart` (what the chart holds) and the pixels the chart painted.

Playwright's sync API keeps an asyncio loop running in the test's thread while a browser is open, and
Django refuses ORM calls from such a thread; so data is stored before the browser starts, and writes made
while it runs go through `in_thread`, which uses a thread (and a database connection) of its own.

Set UPDATE_CHART_SCREENSHOT=1 to write docs/chart.png from the realistic dataset of the last test.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Container, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from candles.bars import datetime_to_ms
from candles.storage import CandleRow, candles_upsert
from candles.subscriptions import subscriptions_create
from tests.support import InThread, new_keys

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# Debian's package (apt-get install chromium); scripts/ensure_chromium.sh reads the same variable.
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "chart.png"

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
# 2024-01-16 12:00 UTC
T0_MS = 1_705_406_400_000


@pytest.fixture(autouse=True)
def private_redis_keys(settings):
    # Subscribing nudges the collectors over Redis: on a channel of this test's own.
    settings.REDIS_KEY_PREFIX = new_keys().prefix


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


class ChartPage:
    """One browser tab on /chart/, recording console errors and uncaught exceptions."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

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
def chart(live_server) -> Iterator[Callable[..., ChartPage]]:
    """`chart(query)` opens /chart/<query> in headless Chromium at 1280×720 and returns a ChartPage.

    The browser starts on the first call, after the test stored its data, and is closed before the
    database is reset. Chromium must be installed: without it this fails, it does not skip.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"chromium is not installed at {CHROMIUM}: the chart page is tested in a real browser "
                    "(apt-get install -y chromium)")
    # The live server binds the IPv4 loopback; naming it avoids a detour through ::1 for "localhost".
    base_url = live_server.url.replace("://localhost:", "://127.0.0.1:")
    state: dict[str, Any] = {}

    def open_chart(query: str = "") -> ChartPage:
        if "browser" not in state:
            state["playwright"] = sync_playwright().start()
            state["browser"] = state["playwright"].chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
        page = state["browser"].new_page(viewport={"width": 1280, "height": 720})
        return ChartPage(page, base_url).open(query)

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
    page.wait("() => window.okxChart.state() === 'live'")

    page.js("window.notReloaded = true")
    closing = newest._replace(close="43999.9", high="43999.9", confirmed=True, version=5_000)
    following = CandleRow("BTC-USDT", "1m", newest.open_time_ms + MINUTE_MS, "43999.9", "44010.0", "43990.5",
                          "44005.2", "2.5", "110013", "110013", False, "ws", 5_001)
    in_thread(store, rows=[closing, following])

    page.wait_candles(116)
    last = page.js("window.okxChart.lastCandle()")
    assert (last["open_time_ms"], last["close"], last["confirm"]) == (following.open_time_ms, "44005.2", False)
    assert page.js("window.notReloaded") is True
    assert "44005.2" in page.text("#legend")
    # The candle that was open on screen got its final version too.
    assert page.js("ms => window.okxChart.candle(ms)", closing.open_time_ms)["close"] == "43999.9"

    # Backfill fills the gap; the page asks for marked gaps again (every 30 s, here at once) and drops the mark.
    in_thread(store, rows=walk("BTC-USDT", "1m", every(T0_MS, 55), seed=8, open_last=False)[50:])
    page.js("window.okxChart.recheckGaps()")
    page.wait_candles(121)
    assert page.js("window.okxChart.gapCount()") == 0
    assert page.js("window.okxChart.gapMarkerCount()") == 0
    assert page.js("window.okxChart.lastCandle().open_time_ms") == following.open_time_ms
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


def test_polling_pauses_while_the_tab_is_hidden(subscribed, chart):
    subscribed("BTC-USDT", "1m")
    store(walk("BTC-USDT", "1m", every(T0_MS, 10)))
    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(10)
    page.wait("() => window.okxChart.state() === 'live'")
    calls: list[str] = []
    page.page.on("request", lambda request: calls.append(request.url) if "/api/" in request.url else None)

    # What the browser reports when the user switches to another tab.
    page.js("""() => {
        Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
        Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    assert page.text("#status") == "paused (tab hidden)"
    page.page.wait_for_timeout(1500)  # a poll already under way may finish
    calls.clear()
    page.page.wait_for_timeout(3000)
    assert calls == []

    in_thread(store, rows=walk("BTC-USDT", "1m", every(T0_MS, 11))[-1:])
    page.js("""() => {
        delete document.hidden;
        delete document.visibilityState;
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    page.wait_candles(11, timeout_ms=3000)  # at once, not after the hidden tab's minute-long sleep
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
    page = chart("?symbol=BTC-USDT&timeframe=1m")
    page.wait_candles(60)

    # The browser loses the API: every request to it fails at the network level.
    page.page.route("**/api/v1/**", lambda route: route.abort("connectionrefused"))
    page.wait("() => !document.querySelector('#banner').hidden")
    assert "cannot be reached" in page.text("#banner")
    assert page.js("window.okxChart.state()") == "retrying"
    in_thread(store, rows=[walk("BTC-USDT", "1m", every(T0_MS, 61))[-1]])

    page.page.unroute("**/api/v1/**")
    page.page.click("#banner button")  # "Retry now" instead of waiting out the backoff
    page.wait_candles(61)
    page.wait("() => document.querySelector('#banner').hidden")
    assert page.js("window.okxChart.state()") == "live"
    assert all("ERR_CONNECTION_REFUSED" in error for error in page.errors), page.errors


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
