"""Rate limiters never admit more than `limit` requests in any window of `period_s`.

The local limiter runs on a fake clock, so its windows are checked exactly. The Redis limiter runs against
the real Redis on 127.0.0.1:6379 with a unique key prefix per test; its admissions are stamped by the
caller after `acquire` returns, so the checks allow a few milliseconds for the round trip.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from collectors.okx.ratelimit import IN_FLIGHT_POLL_S, LocalRateLimiter, RedisRateLimiter

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[3]
# Time between the script's admission on Redis and the caller's stamp, allowed for in window checks.
STAMP_TOLERANCE_S = 0.04


def max_in_window(stamps: list[float], period_s: float) -> int:
    """The most stamps that fall in any half-open window [t, t + period_s)."""
    ordered = sorted(stamps)
    most, first = 0, 0
    for last, stamp in enumerate(ordered):
        while ordered[first] + period_s <= stamp:
            first += 1
        most = max(most, last - first + 1)
    return most


class FakeClock:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a limiter must never sleep for nothing"
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def stamped_acquires(limiter, key: str, count: int, limit: int, period_s: float, clock=time.monotonic):
    stamps = []
    for _ in range(count):
        await limiter.acquire(key, limit, period_s)
        stamps.append(clock())
    return stamps


# --- local -----------------------------------------------------------------------------------------


def test_the_local_limiter_never_exceeds_the_limit_in_any_window():
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)

    async def run() -> list[float]:
        batches = await asyncio.gather(*(stamped_acquires(limiter, "k", 25, 40, 2.0, clock) for _ in range(8)))
        return [stamp for batch in batches for stamp in batch]

    stamps = asyncio.run(run())
    assert len(stamps) == 200
    assert max_in_window(stamps, 2.0) == 40
    # No slower than the budget allows: 200 requests at 40 per 2 s take four full windows.
    assert max(stamps) - min(stamps) == pytest.approx(8.0)


def test_the_local_limiter_admits_a_burst_up_to_the_limit_without_waiting():
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)
    asyncio.run(stamped_acquires(limiter, "k", 20, 20, 2.0, clock))
    assert clock.sleeps == []


def test_the_local_limiter_keeps_keys_apart():
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)

    async def run() -> None:
        await stamped_acquires(limiter, "candles", 40, 40, 2.0, clock)
        await stamped_acquires(limiter, "history", 20, 20, 2.0, clock)

    asyncio.run(run())
    assert clock.sleeps == []


def test_the_local_limiter_honours_a_smaller_limit_on_the_same_key():
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)

    async def run() -> list[float]:
        first = await stamped_acquires(limiter, "k", 10, 10, 2.0, clock)
        return first + await stamped_acquires(limiter, "k", 6, 3, 2.0, clock)

    stamps = asyncio.run(run())
    # The ten earlier admissions count against the new limit of three until they leave the window.
    assert stamps[10:] == [1002.0] * 3 + [1004.0] * 3


def test_the_local_limiter_holds_in_real_time():
    limiter = LocalRateLimiter()

    async def run() -> list[float]:
        batches = await asyncio.gather(*(stamped_acquires(limiter, "k", 5, 4, 0.3) for _ in range(3)))
        return [stamp for batch in batches for stamp in batch]

    assert max_in_window(asyncio.run(run()), 0.3) <= 4


def test_a_completed_request_counts_from_its_completion_not_its_admission():
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)

    async def run() -> float:
        first = [await limiter.acquire("k", 3, 2.0, longest_s=30.0) for _ in range(3)]
        clock.now += 0.5  # the three took half a second to reach the server and answer
        for admission in first:
            await limiter.done(admission)
        await limiter.acquire("k", 3, 2.0)
        return clock.now

    # Admitted at 1000.0, completed at 1000.5: the server may have counted them as late as 1000.5.
    assert asyncio.run(run()) == pytest.approx(1002.5)


def test_a_waiter_behind_a_request_in_flight_gets_its_slot_a_period_after_that_request_completes():
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)

    async def run() -> float:
        in_flight = await limiter.acquire("k", 1, 2.0, longest_s=30.0)

        async def complete_at_1001() -> None:
            while clock.now < 1001.0:
                await asyncio.sleep(0)
            await limiter.done(in_flight)

        completing = asyncio.create_task(complete_at_1001())
        await limiter.acquire("k", 1, 2.0)
        await completing
        return clock.now

    admitted_at = asyncio.run(run())
    # Not at 1032 (admission + longest_s + period): the waiter looked again while the request was in flight.
    assert admitted_at == pytest.approx(1003.0, abs=IN_FLIGHT_POLL_S)
    assert max(clock.sleeps[:-1]) <= IN_FLIGHT_POLL_S


def test_a_request_never_completed_frees_its_slot_once_its_longest_time_and_a_period_are_over():
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)

    async def run() -> float:
        await limiter.acquire("k", 1, 2.0, longest_s=3.0)  # its process died: no `done`
        await limiter.acquire("k", 1, 2.0)
        return clock.now

    assert asyncio.run(run()) == pytest.approx(1005.0)


@pytest.mark.parametrize(("limit", "period_s"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_a_nonsensical_budget_is_refused(limit, period_s):
    with pytest.raises(ValueError, match="must be"):
        asyncio.run(LocalRateLimiter().acquire("k", limit, period_s))


# --- Redis -----------------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    value = f"test:okx:ratelimit:{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=value + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_two_redis_limiters_on_separate_connections_share_one_budget(prefix):
    async def run() -> list[float]:
        first, second = redis.asyncio.Redis.from_url(REDIS_URL), redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            limiters = [RedisRateLimiter(first, prefix), RedisRateLimiter(second, prefix)]
            batches = await asyncio.gather(
                *(stamped_acquires(limiter, "candles", 6, 5, 0.5) for limiter in limiters for _ in range(2))
            )
        finally:
            await first.aclose()
            await second.aclose()
        return [stamp for batch in batches for stamp in batch]

    stamps = asyncio.run(run())
    assert len(stamps) == 24
    assert max_in_window(stamps, 0.5 - STAMP_TOLERANCE_S) <= 5
    # 24 requests at 5 per 0.5 s need at least four more windows after the first burst.
    assert max(stamps) - min(stamps) >= 4 * 0.5 - STAMP_TOLERANCE_S


def test_the_redis_limiter_counts_a_request_from_its_completion(prefix):
    async def run() -> tuple[float, float, int]:
        connection = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            limiter = RedisRateLimiter(connection, prefix)
            first = [await limiter.acquire("candles", 2, 0.3, longest_s=5.0) for _ in range(2)]
            # In flight, the stamps are five seconds ahead and the key lives past them.
            in_flight_ttl_ms = await connection.pttl(prefix + "candles")
            await asyncio.sleep(0.4)  # longer than the period: only the completion stamps hold the next one
            for admission in first:
                await limiter.done(admission)
            completed = time.monotonic()
            await limiter.acquire("candles", 2, 0.3)
            return completed, time.monotonic(), in_flight_ttl_ms
        finally:
            await connection.aclose()

    completed, admitted, in_flight_ttl_ms = asyncio.run(run())
    assert in_flight_ttl_ms > 5000
    assert admitted - completed >= 0.3 - STAMP_TOLERANCE_S
    assert admitted - completed <= 0.3 + IN_FLIGHT_POLL_S + 0.2


def test_the_window_check_would_catch_two_limiters_that_do_not_share():
    async def run() -> list[float]:
        batches = await asyncio.gather(
            *(stamped_acquires(LocalRateLimiter(), "candles", 5, 5, 0.5) for _ in range(2))
        )
        return [stamp for batch in batches for stamp in batch]

    assert max_in_window(asyncio.run(run()), 0.5 - STAMP_TOLERANCE_S) == 10


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import redis.asyncio
    from collectors.okx.ratelimit import RedisRateLimiter

    url, prefix, start_at, count = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

    async def main():
        client = redis.asyncio.Redis.from_url(url)
        limiter = RedisRateLimiter(client, prefix)
        time.sleep(max(0.0, start_at - time.time()))
        stamps = []
        for _ in range(count):
            await limiter.acquire("history", 4, 0.4)
            stamps.append(time.time())
        await client.aclose()
        print(json.dumps(stamps))

    asyncio.run(main())
    """
)


def test_the_redis_limiter_holds_across_processes(prefix):
    # Every process waits for the same wall-clock instant, so their first requests really collide.
    start_at = time.time() + 2.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, REDIS_URL, prefix, str(start_at), "8"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    stamps: list[float] = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        stamps.extend(json.loads(out))
    assert len(stamps) == 24
    assert max_in_window(stamps, 0.4 - STAMP_TOLERANCE_S) <= 4
    assert max(stamps) - min(stamps) >= 5 * 0.4 - STAMP_TOLERANCE_S


def test_redis_limiter_keys_expire_once_the_window_is_over(prefix):
    client = redis.Redis.from_url(REDIS_URL)

    async def acquire() -> None:
        connection = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            await RedisRateLimiter(connection, prefix).acquire("instruments:SPOT", 3, 0.1)
        finally:
            await connection.aclose()

    try:
        asyncio.run(acquire())
        ttl_ms = client.pttl(prefix + "instruments:SPOT")
        assert 0 < ttl_ms <= 1100
        time.sleep(ttl_ms / 1000 + 0.1)
        assert client.exists(prefix + "instruments:SPOT") == 0
    finally:
        client.close()


def test_the_redis_limiter_uses_only_keys_under_its_prefix(prefix):
    async def run() -> None:
        connection = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            limiter = RedisRateLimiter(connection, prefix)
            await limiter.acquire("a", 2, 1.0)
            await limiter.acquire("b", 2, 1.0)
        finally:
            await connection.aclose()

    asyncio.run(run())
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert sorted(client.scan_iter(match=prefix + "*")) == [(prefix + "a").encode(), (prefix + "b").encode()]
    finally:
        client.close()
