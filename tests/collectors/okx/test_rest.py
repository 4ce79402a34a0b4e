"""The REST client against the OKX simulator over real sockets on 127.0.0.1 (no HTTP mocks).

Each test gets its own simulator: the simulator's rate limits count per client IP, so a shared one would carry
one test's budget into the next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from collectors.okx.candle_rows import CandleUpdate, parse_candle_row
from collectors.okx.rest import OkxRestClient, PageProgress, PermanentError, RestError, UnsupportedBar, _merge_page
from collectors.okx.rest_endpoints import CANDLES, HISTORY_CANDLES
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from tests.support.ports import free_port

MINUTE = 60_000


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with run_in_thread(SimulatorConfig(seed=1, instruments=5, swaps=True, history_days=3), port=0) as handle:
        yield handle


def client_for(sim: ThreadedSimulator, **options) -> OkxRestClient:
    """A client with quick retries, so fault tests take milliseconds, not seconds."""
    return OkxRestClient(sim.rest_url, **{"backoff_base": 0.01, "backoff_cap": 0.05, **options})


def run(coroutine):
    return asyncio.run(coroutine)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def last_closed(bar_ms: int) -> int:
    now = now_ms()
    return now - now % bar_ms - bar_ms


def truth(sim: ThreadedSimulator, inst_id: str, bar: str, start_ms: int, end_ms: int) -> list[CandleUpdate]:
    rows = sim.simulator.market.truth_range(inst_id, bar, start_ms, end_ms)
    return [parse_candle_row(inst_id, bar, row, b"") for row in rows]


async def fetch_range(client: OkxRestClient, *args) -> tuple[list[CandleUpdate], list[PageProgress]]:
    pages: list[PageProgress] = []
    async with client:
        candles = await client.candle_range(*args, on_page=pages.append)
    return candles, pages


# --- ranges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("page_limit", "min_pages"), [(300, 4), (100, 10)])
def test_a_range_across_page_boundaries_returns_every_candle_once_oldest_first(sim, page_limit, min_pages):
    end = last_closed(MINUTE)
    start = end - 999 * MINUTE
    candles, pages = run(fetch_range(client_for(sim, page_limit=page_limit), "BTC-USDT", "1m", start, end))
    assert len(candles) == 1000
    assert candles == truth(sim, "BTC-USDT", "1m", start, end)
    assert len(pages) >= min_pages
    assert pages[-1].collected == 1000


def test_a_short_page_is_not_taken_for_the_end(sim):
    # The simulator caps pages at 300, so asking for 1,000 gets short pages, as OKX's older 100 cap would.
    end = last_closed(MINUTE)
    start = end - 999 * MINUTE
    candles, pages = run(fetch_range(client_for(sim, page_limit=1000), "ETH-USDT", "1m", start, end))
    assert candles == truth(sim, "ETH-USDT", "1m", start, end)
    assert [page.rows for page in pages][:3] == [300, 300, 300]


def test_a_recent_range_is_read_from_candles_only(sim):
    end = last_closed(MINUTE)
    candles, pages = run(fetch_range(client_for(sim), "SOL-USDT", "1m", end - 599 * MINUTE, end))
    assert len(candles) == 600
    assert {page.endpoint for page in pages} == {CANDLES.path}
    assert sim.simulator.stats()["rest_requests"] == len(pages)


@pytest.mark.parametrize(("bar", "bar_ms", "count"), [("1m", MINUTE, 1), ("1m", MINUTE, 7), ("1s", 1000, 100)])
def test_a_short_range_asks_for_its_candles_and_one_more_not_a_whole_page(sim, bar, bar_ms, count):
    end = last_closed(MINUTE) - 5 * MINUTE
    start = end - (count - 1) * bar_ms
    candles, pages = run(fetch_range(client_for(sim), "BTC-USDT", bar, start, end))
    assert candles == truth(sim, "BTC-USDT", bar, start, end)
    assert [page.rows for page in pages] == [count + 1]


def test_numbers_as_text_are_okx_strings_of_the_same_candles(sim):
    end = last_closed(MINUTE) - 5 * MINUTE
    start = end - 9 * MINUTE
    candles, _ = run(fetch_range(client_for(sim, numbers_as_text=True), "ETH-USDT", "1m", start, end))
    rows = sim.simulator.market.truth_range("ETH-USDT", "1m", start, end)
    assert [[str(c.open_time_ms), c.open, c.high, c.low, c.close, c.vol, c.vol_ccy] for c in candles] == [
        row[:7] for row in rows]
    assert [c.exact() for c in candles] == truth(sim, "ETH-USDT", "1m", start, end)


def test_a_range_not_starting_on_an_open_time_still_takes_one_request(sim):
    end = last_closed(MINUTE) - 5 * MINUTE
    start = end - 3 * MINUTE - 20_000  # 20 s into a candle: the page must reach the one before
    candles, pages = run(fetch_range(client_for(sim), "BTC-USDT", "1m", start, end))
    assert candles == truth(sim, "BTC-USDT", "1m", end - 3 * MINUTE, end)
    assert len(pages) == 1


def test_a_range_older_than_the_latest_1440_candles_is_read_from_history_candles(sim):
    end = last_closed(MINUTE) - 2 * 1440 * MINUTE
    start = end - 999 * MINUTE
    candles, pages = run(fetch_range(client_for(sim), "BTC-USDT", "1m", start, end))
    assert candles == truth(sim, "BTC-USDT", "1m", start, end)
    assert {page.endpoint for page in pages} == {HISTORY_CANDLES.path}
    # No request wasted on /candles first.
    assert sim.simulator.stats()["rest_requests"] == len(pages)


def test_a_range_reaching_back_past_the_recent_window_switches_to_history_candles_on_the_way(sim):
    start = last_closed(MINUTE) - 2000 * MINUTE
    candles, pages = run(fetch_range(client_for(sim), "XRP-USDT", "1m", start, now_ms()))
    closed = [candle for candle in candles if candle.confirmed]
    assert closed == truth(sim, "XRP-USDT", "1m", start, closed[-1].open_time_ms)
    # At most the newest row is the open candle, served by /candles.
    assert all(candle.confirmed for candle in candles[:-1])
    endpoints = [page.endpoint for page in pages]
    assert endpoints[0] == CANDLES.path
    assert endpoints[-1] == HISTORY_CANDLES.path
    assert endpoints == sorted(endpoints, key=lambda endpoint: endpoint == HISTORY_CANDLES.path)


def test_a_range_starting_before_the_listing_ends_at_the_first_candle(sim):
    end = last_closed(3_600_000)
    candles, _ = run(fetch_range(client_for(sim), "DOGE-USDT", "1H", 0, end))
    assert candles == truth(sim, "DOGE-USDT", "1H", 0, end)
    assert len(candles) >= 3 * 24


def test_an_empty_or_inverted_range_asks_nothing(sim):
    end = last_closed(MINUTE)
    candles, pages = run(fetch_range(client_for(sim), "BTC-USDT", "1m", end, end - MINUTE))
    assert (candles, pages) == ([], [])
    assert sim.simulator.stats()["rest_requests"] == 0


# --- bars --------------------------------------------------------------------------------------------


def test_1s_candles_come_from_history_candles_only(sim):
    end = last_closed(1000)
    start = end - 599_000
    candles, pages = run(fetch_range(client_for(sim), "BTC-USDT", "1s", start, end))
    assert candles == truth(sim, "BTC-USDT", "1s", start, end)
    assert {page.endpoint for page in pages} == {HISTORY_CANDLES.path}


def test_asking_candles_for_1s_fails_before_any_request(sim):
    with pytest.raises(UnsupportedBar, match="history-candles only"):
        run(client_for(sim).candles("BTC-USDT", "1s"))
    page = run(client_for(sim).candles("BTC-USDT", "1s", history=True, limit=5))
    assert len(page) == 5
    assert sim.simulator.stats()["rest_requests"] == 1


@pytest.mark.parametrize("bar", ["5D", "5Dutc"])
def test_websocket_only_bars_are_unsupported(sim, bar):
    client = client_for(sim)
    with pytest.raises(UnsupportedBar, match="WebSocket-only"):
        run(client.candles("BTC-USDT", bar))
    with pytest.raises(UnsupportedBar, match="WebSocket-only"):
        run(client.candle_range("BTC-USDT", bar, 0, now_ms()))
    assert client.stats["requests"] == 0
    assert sim.simulator.stats()["rest_requests"] == 0


def test_one_page_comes_newest_first_with_the_open_candle_on_top(sim):
    page = run(client_for(sim).candles("BTC-USDT", "1m", limit=3))
    times = [candle.open_time_ms for candle in page]
    assert times == sorted(times, reverse=True)
    assert [candle.confirmed for candle in page] == [False, True, True]


def test_after_and_before_are_exclusive(sim):
    end = last_closed(MINUTE)
    page = run(client_for(sim).candles("BTC-USDT", "1m", after=end, before=end - 4 * MINUTE))
    assert [candle.open_time_ms for candle in page] == [end - MINUTE, end - 2 * MINUTE, end - 3 * MINUTE]


# --- errors and retries ------------------------------------------------------------------------------


def test_a_429_burst_ends_in_success_without_tripping_the_real_limit(sim):
    sim.simulator.rest_429(5)
    client = client_for(sim)

    async def burst() -> list[list[CandleUpdate]]:
        async with client:
            return await asyncio.gather(*(client.candles("BTC-USDT", "1m", limit=1) for _ in range(50)))

    started = time.monotonic()
    pages = run(burst())
    assert all(len(page) == 1 for page in pages)
    assert client.stats["rate_limited"] == 5
    assert client.stats["retries"] == 5
    assert client.stats["requests"] == 55
    # Only the five injected 429s: the limiter kept 55 requests under 40 per 2 s on the server's clock too.
    assert sim.simulator.stats()["rest_429s"] == 5
    assert time.monotonic() - started >= 2.0


def test_requests_counted_late_by_the_server_do_not_make_the_next_window_trip_the_limit(sim):
    # The server counts the first 40 half a second after they were admitted, as a burst still opening its
    # connections arrives (TLS to OKX, or a loaded machine); the next 40 go out at once on warm ones.
    sim.simulator.rest_delay(0.5, 40)
    client = client_for(sim)

    async def burst() -> list[list[CandleUpdate]]:
        async with client:
            return await asyncio.gather(*(client.candles("BTC-USDT", "1m", limit=1) for _ in range(80)))

    pages = run(burst())
    assert all(len(page) == 1 for page in pages)
    assert sim.simulator.stats()["rest_429s"] == 0
    assert client.stats == {"requests": 80, "retries": 0, "rate_limited": 0}


def test_a_range_fetch_survives_429s(sim):
    sim.simulator.rest_429(3)
    end = last_closed(MINUTE)
    client = client_for(sim, page_limit=100)
    candles, _ = run(fetch_range(client, "BTC-USDT", "1m", end - 499 * MINUTE, end))
    assert candles == truth(sim, "BTC-USDT", "1m", end - 499 * MINUTE, end)
    assert client.stats["rate_limited"] == 3


def test_429s_beyond_the_retry_budget_raise_a_retryable_rest_error(sim):
    sim.simulator.rest_429(10)
    client = client_for(sim, max_retries=3)
    with pytest.raises(RestError) as raised:
        run(client.candles("BTC-USDT", "1m"))
    assert not isinstance(raised.value, PermanentError)
    assert (raised.value.code, raised.value.http_status) == ("50011", 429)
    assert client.stats == {"requests": 4, "retries": 3, "rate_limited": 4}


def test_slow_responses_within_the_timeout_just_take_longer(sim):
    sim.simulator.rest_delay(0.3, 1)
    client = client_for(sim, timeout=2.0)
    assert len(run(client.candles("BTC-USDT", "1m", limit=10))) == 10
    assert client.stats["retries"] == 0


def test_responses_slower_than_the_timeout_are_retried(sim):
    sim.simulator.rest_delay(1.0, 2)
    client = client_for(sim, timeout=0.3)
    assert len(run(client.candles("BTC-USDT", "1m", limit=10))) == 10
    assert client.stats == {"requests": 3, "retries": 2, "rate_limited": 0}


def test_an_unknown_instrument_is_a_permanent_error_raised_without_retry(sim):
    client = client_for(sim)
    with pytest.raises(PermanentError) as raised:
        run(client.candle_range("NOPE-USDT", "1m", 0, now_ms()))
    assert (raised.value.code, raised.value.http_status) == ("51001", 400)
    assert client.stats == {"requests": 1, "retries": 0, "rate_limited": 0}
    assert sim.simulator.stats()["rest_requests"] == 1


def test_a_bad_parameter_is_a_permanent_error(sim):
    with pytest.raises(PermanentError) as raised:
        run(client_for(sim).candles("BTC-USDT", "7m"))
    assert raised.value.code == "51000"


def test_an_unreachable_server_is_retried_with_capped_jittered_backoff_then_raised():
    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)

    client = OkxRestClient(f"http://127.0.0.1:{free_port()}", max_retries=6, sleep=record)
    with pytest.raises(RestError) as raised:
        run(client.candles("BTC-USDT", "1m"))
    assert raised.value.http_status is None
    assert "ConnectError" in raised.value.msg
    assert client.stats == {"requests": 7, "retries": 6, "rate_limited": 0}
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))


def test_a_url_without_a_usable_scheme_fails_at_once():
    client = OkxRestClient("ftp://127.0.0.1:1", max_retries=6)
    with pytest.raises(PermanentError, match="bad URL"):
        run(client.candles("BTC-USDT", "1m"))
    assert client.stats["retries"] == 0


def test_one_client_can_be_used_from_two_event_loops_in_turn(sim):
    client = client_for(sim)

    async def one_page() -> int:
        async with client:
            return len(await client.candles("BTC-USDT", "1m", limit=2))

    assert run(one_page()) == run(one_page()) == 2


# --- instruments -------------------------------------------------------------------------------------


def test_spot_instruments_are_parsed_exactly_and_the_pre_listed_row_is_skipped(sim):
    spot = {info.inst_id: info for info in run(client_for(sim).instruments("SPOT"))}
    assert sorted(spot) == sorted(
        ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "REBASE-USDT"]
    )
    btc = spot["BTC-USDT"]
    listed = sim.simulator.market.instrument("BTC-USDT")
    assert (btc.inst_type, btc.base_ccy, btc.quote_ccy, btc.settle_ccy, btc.inst_family) == (
        "SPOT", "BTC", "USDT", None, None
    )
    assert str(btc.tick_size) == "0.1"
    assert btc.lot_size == Decimal("0.00000001")
    assert isinstance(btc.tick_size, Decimal)
    assert btc.list_time_ms == listed.list_time_ms
    assert btc.exp_time_ms is None
    assert btc.state == "live"


def test_an_unknown_instrument_state_is_kept_verbatim(sim):
    spot = {info.inst_id: info for info in run(client_for(sim).instruments("SPOT"))}
    assert spot["REBASE-USDT"].state == "rebase"


def test_swap_instruments_carry_settle_currency_and_family(sim):
    swaps = {info.inst_id: info for info in run(client_for(sim).instruments("SWAP"))}
    btc = swaps["BTC-USDT-SWAP"]
    assert (btc.inst_type, btc.base_ccy, btc.settle_ccy, btc.inst_family) == ("SWAP", None, "USDT", "BTC-USDT")
    assert btc.lot_size == Decimal("0.01")
    assert all(info.inst_id.endswith("-SWAP") for info in swaps.values())


def test_options_without_a_family_are_refused_as_a_bad_parameter(sim):
    with pytest.raises(PermanentError) as raised:
        run(client_for(sim).instruments("OPTION"))
    assert raised.value.code == "51000"


# --- page merging ------------------------------------------------------------------------------------


def candle(open_time_ms: int, close: str = "1", *, confirmed: bool = True) -> CandleUpdate:
    one = Decimal(1)
    return CandleUpdate("BTC-USDT", "1m", open_time_ms, one, Decimal(close), one, Decimal(close), one, one, one,
                        confirmed)


def test_overlapping_pages_keep_one_candle_per_open_time_and_prefer_a_closed_one():
    found: dict[int, CandleUpdate] = {}
    assert _merge_page(found, [candle(5, confirmed=False), candle(4), candle(3)], 0, 6) == 3
    # A page from another cache overlaps the previous one and knows candle 5 as closed.
    assert _merge_page(found, [candle(5, "2"), candle(4, "9"), candle(2)], 0, 6) == 2
    assert found == {5: candle(5, "2"), 4: candle(4), 3: candle(3), 2: candle(2)}


def test_a_page_that_ignores_the_cursor_stops_the_walk():
    with pytest.raises(RestError, match="did not move past"):
        _merge_page({}, [candle(10), candle(9)], 0, 9)


def test_a_clock_behind_okx_still_gets_old_candles_from_history_candles(sim):
    # This client believes it is 100 minutes earlier, so it asks /candles for minutes OKX already dropped
    # from there; the empty page sends it to /history-candles instead of ending the walk.
    real_now = now_ms()
    end = last_closed(MINUTE) - 1450 * MINUTE
    start = end - 50 * MINUTE
    client = client_for(sim, now_ms=lambda: real_now - 100 * MINUTE)
    candles, pages = run(fetch_range(client, "BTC-USDT", "1m", start, end))
    assert candles == truth(sim, "BTC-USDT", "1m", start, end)
    assert [page.endpoint for page in pages] == [HISTORY_CANDLES.path]
    assert client.stats["requests"] == 2
