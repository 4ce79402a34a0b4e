"""The collector asks for a flush when closed candles wait in the buffer, once the burst of closes is over, so
they do not wait for the next scheduled flush. Real Redis; `keys` comes from tests/collectors/conftest.py.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis
from django.conf import settings

from candles.bars import BarSpec
from collectors.live.buffer import PUT_NEWEST_LUA
from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
from collectors.okx.candle_rows import CandleText
from tests.support import T0_MS

WRITE_S = 0.02  # the runtime writes every 0.1 s; the test steps faster, with the same rules


def candle(inst_id: str, open_ms: int, *, confirmed: bool) -> CandleText:
    return CandleText(inst_id, "1s", open_ms, "100", "110", "90", "105", "1.5", "157.5", "157.5", confirmed)


class Requests:
    def __init__(self, *, fail: bool = False) -> None:
        self.count = 0
        self.fail = fail

    def __call__(self) -> None:
        self.count += 1
        if self.fail:
            raise ConnectionError("broker away")


def run_writes(keys, requests: Requests, steps: list[list[CandleText]], *, after_s: float = 0.3) -> int:
    """Feed each step's candles to ingest, then one write; returns the flush requests made."""

    async def main() -> int:
        config = RuntimeConfig(ws_url="ws://127.0.0.1:9/unused", keys=keys, flush_request_after_s=after_s)
        runtime = CollectorRuntime(config, redis_factory=lambda: None,
                                   load_snapshot=lambda: SubscriptionSnapshot(frozenset(), {}),
                                   request_flush=requests)
        runtime.redis = aredis.Redis.from_url(settings.REDIS_URL)
        runtime._put = runtime.redis.register_script(PUT_NEWEST_LUA)
        runtime.ingest.clock_us = lambda: (T0_MS + 60_000) * 1000
        runtime.ingest.specs = {"1s": BarSpec("1s", 1, 0, 0, 0)}
        try:
            for candles in steps:
                for item in candles:
                    runtime.ingest.accept(item, b"raw")
                await runtime._write()
                await asyncio.sleep(WRITE_S)
            await asyncio.sleep(0.2)  # let a request in flight finish
        finally:
            await runtime.redis.aclose()
        # Every request made is counted for the status (and the benchmark's "requested" rate).
        assert runtime.ingest.counters.get("flush_requests_sent", 0) == requests.count
        return requests.count

    return asyncio.run(main())


def closes(second: int, count: int = 50) -> list[CandleText]:
    return [candle(f"I{i}-USDT", T0_MS + second * 1000, confirmed=True) for i in range(count)]


def opens(second: int, count: int = 50) -> list[CandleText]:
    return [candle(f"I{i}-USDT", T0_MS + second * 1000, confirmed=False) for i in range(count)]


def test_a_burst_of_closed_candles_asks_for_one_flush_when_it_is_over(keys, redis):
    requests = Requests()
    # Three writes carry closes (one burst), then writes of open candles only.
    made = run_writes(keys, requests, [closes(0)[:20], closes(0)[20:40], closes(0)[40:], opens(1), opens(1), []])
    assert made == 1
    assert redis.hlen(keys.live) == 100  # the candles are in the buffer before the flush is asked for
    assert not redis.llen(keys.dead_letters)


def test_open_candles_alone_never_ask_for_a_flush(keys):
    requests = Requests()
    assert run_writes(keys, requests, [opens(0), opens(0), [], opens(1), []]) == 0


def test_closes_that_keep_coming_ask_at_least_every_flush_request_after_s(keys):
    requests = Requests()
    # Every write carries closes for 0.6 s (30 steps of 20 ms): no end of burst, so the runtime asks after
    # each 0.1 s of it.
    steps = [closes(second, 5) for second in range(30)]
    made = run_writes(keys, requests, steps, after_s=0.1)
    assert made >= 3


def test_a_failing_request_is_logged_and_the_writer_goes_on(keys, redis, caplog):
    made = run_writes(keys, Requests(fail=True), [closes(0), [], closes(1), []])
    assert made == 2  # one per burst: the failure did not stop the writer
    assert "flush request failed" in caplog.text
    assert redis.hlen(keys.live) == 100
