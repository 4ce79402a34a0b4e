"""Request budgets for OKX REST: wait before a request rather than be refused after it.

OKX rejects over-limit requests (HTTP 429, code 50011) instead of queueing them, so a limiter here must
never admit more than `limit` requests in any window of `period_s`. Both limiters keep a sliding-window
log of admission times: a request is admitted once fewer than `limit` admissions lie in the last
`period_s`, which bounds every window, not only aligned ones.

`LocalRateLimiter` serves one process. `RedisRateLimiter` shares one budget between every process and
host that uses the same Redis: one Lua script trims, counts and records atomically, on Redis's clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter(ABC):
    """Waits until a request under `key` fits in a budget of `limit` requests per `period_s` seconds."""

    @abstractmethod
    async def acquire(self, key: str, limit: int, period_s: float) -> None:
        """Return once one more request under `key` keeps every window of `period_s` at ≤ `limit`."""


def _check_budget(limit: int, period_s: float) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if not period_s > 0:
        raise ValueError(f"period_s must be positive, not {period_s}")


class LocalRateLimiter(RateLimiter):
    """In-process sliding window. Waiters on one key are served in arrival order."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self._clock = clock
        self._sleep = sleep
        self._admitted: dict[str, deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def acquire(self, key: str, limit: int, period_s: float) -> None:
        _check_budget(limit, period_s)
        # The lock is held while sleeping: the first waiter gets the next free slot, so no waiter starves.
        async with self._locks.setdefault(key, asyncio.Lock()):
            admitted = self._admitted.setdefault(key, deque())
            while True:
                now = self._clock()
                while admitted and admitted[0] + period_s <= now:
                    admitted.popleft()
                if len(admitted) < limit:
                    admitted.append(now)
                    return
                # The limit may have shrunk since earlier calls; the slot frees when the oldest of the last
                # `limit` admissions leaves the window.
                await self._sleep(admitted[-limit] + period_s - now)


# KEYS[1] = the sorted set of one key; ARGV = period (µs), limit, unique member.
# Returns 0 when admitted, else the microseconds until the oldest counted admission leaves the window.
# Redis's TIME is the clock, so processes on hosts with skewed clocks still share one window.
_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + period - now)
"""


class RedisRateLimiter(RateLimiter):
    """Sliding window in a Redis sorted set per key, shared by every process using the same Redis.

    Keys expire one second after their last admission leaves the window, so idle budgets leave nothing behind.
    """

    def __init__(self, redis: Redis, prefix: str = "okx:ratelimit:", *, sleep: Sleep = asyncio.sleep):
        self._redis = redis
        self._prefix = prefix
        self._sleep = sleep
        self._script = redis.register_script(_ACQUIRE_SCRIPT)
        # Members must be unique across processes and hosts, or two admissions would count once.
        self._member_prefix = f"{uuid.uuid4().hex}:{os.getpid()}:"
        self._counter = itertools.count()

    async def acquire(self, key: str, limit: int, period_s: float) -> None:
        _check_budget(limit, period_s)
        period_us = max(1, math.ceil(period_s * 1_000_000))
        while True:
            member = f"{self._member_prefix}{next(self._counter)}"
            wait_us = int(await self._script(keys=[self._prefix + key], args=[period_us, limit, member]))
            if wait_us <= 0:
                return
            await self._sleep(wait_us / 1_000_000)
