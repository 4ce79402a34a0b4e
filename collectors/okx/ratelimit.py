"""Request budgets for OKX REST: wait before a request rather than be refused after it.

OKX rejects over-limit requests (HTTP 429, code 50011) instead of queueing them, so a limiter here must
never let more than `limit` requests reach OKX in any window of `period_s`. Both limiters keep a
sliding-window log of stamps: a request is admitted once fewer than `limit` stamps lie in the last
`period_s`, which bounds every window, not only aligned ones.

A request's stamp is the latest moment it can have reached the server. Admission is not that moment: a
burst admitted at once may spend a few hundred milliseconds opening connections (TLS to OKX, or a loaded
machine) while the next window's requests go out at once on warm ones, and OKX, counting arrivals, then
sees more than `limit` in its window. So a request admitted with `longest_s` is stamped `longest_s` ahead
(in flight, it may arrive any time until then), and `done` re-stamps it when its answer or failure came
back, when it has certainly arrived. A waiter whose slot depends on a request still in flight looks again
every `IN_FLIGHT_POLL_S` rather than sleeping out the estimate. Without `longest_s` (and no `done`) the
admission is the stamp, as for a request sent at once.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from redis.asyncio import Redis

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# How often a waiter looks again when the slot it waits for belongs to a request still in flight.
IN_FLIGHT_POLL_S = 0.05


class Admission(NamedTuple):
    """One admitted request, to hand back to `done` when it has completed."""

    key: str
    period_s: float
    token: object


class RateLimiter(ABC):
    """Waits until a request under `key` fits in a budget of `limit` requests per `period_s` seconds."""

    @abstractmethod
    async def acquire(self, key: str, limit: int, period_s: float, *, longest_s: float = 0.0) -> Admission:
        """Return once one more request under `key` keeps every window of `period_s` at ≤ `limit`.

        With `longest_s`, the request counts as in flight for up to that long: call `done` when it completes.
        """

    @abstractmethod
    async def done(self, admission: Admission) -> None:
        """The request has completed (answered or failed): it counts from now, not from its admission."""


def _check_budget(limit: int, period_s: float) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if not period_s > 0:
        raise ValueError(f"period_s must be positive, not {period_s}")


@dataclass(eq=False, slots=True)
class _Stamp:
    at: float  # the latest moment the request can have reached the server; ahead of the clock while in flight


class LocalRateLimiter(RateLimiter):
    """In-process sliding window. Waiters on one key are served in arrival order."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self._clock = clock
        self._sleep = sleep
        self._stamps: dict[str, list[_Stamp]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def acquire(self, key: str, limit: int, period_s: float, *, longest_s: float = 0.0) -> Admission:
        _check_budget(limit, period_s)
        # The lock is held while sleeping: the first waiter gets the next free slot, so no waiter starves.
        async with self._locks.setdefault(key, asyncio.Lock()):
            stamps = self._stamps.setdefault(key, [])
            while True:
                now = self._clock()
                stamps[:] = [stamp for stamp in stamps if stamp.at + period_s > now]
                if len(stamps) < limit:
                    stamp = _Stamp(now + max(0.0, longest_s))
                    stamps.append(stamp)
                    return Admission(key, period_s, stamp)
                # The limit may have shrunk since earlier calls; the slot frees when the oldest of the last
                # `limit` stamps leaves the window.
                deciding = sorted(stamp.at for stamp in stamps)[len(stamps) - limit]
                wait = deciding + period_s - now
                await self._sleep(min(wait, IN_FLIGHT_POLL_S) if deciding > now else wait)

    async def done(self, admission: Admission) -> None:
        admission.token.at = self._clock()


# KEYS[1] = the sorted set of one key; ARGV = period (µs), limit, unique member, time in flight (µs).
# Returns {0, 0} when admitted, else {µs until the oldest counted stamp leaves the window, 1 if that stamp
# belongs to a request still in flight (its stamp is ahead of the clock), else 0}.
# Redis's TIME is the clock, so processes on hosts with skewed clocks still share one window.
_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3])
  local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(latest[2]) + period - now) / 1000) + 1000)
  return {0, 0}
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')[2])
return {math.max(1, oldest + period - now), oldest > now and 1 or 0}
"""

# KEYS[1] = the sorted set; ARGV = period (µs), member. Re-stamps a member still counted to Redis's now.
_DONE_SCRIPT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[2])
local keep = math.ceil(tonumber(ARGV[1]) / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return 1
"""


def _microseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1_000_000))


class RedisRateLimiter(RateLimiter):
    """Sliding window in a Redis sorted set per key, shared by every process using the same Redis.

    Keys expire one second after their last stamp leaves the window, so idle budgets leave nothing behind.
    """

    def __init__(self, redis: Redis, prefix: str, *, sleep: Sleep = asyncio.sleep):
        self._redis = redis
        self._prefix = prefix
        self._sleep = sleep
        self._script = redis.register_script(_ACQUIRE_SCRIPT)
        self._done_script = redis.register_script(_DONE_SCRIPT)
        # Members must be unique across processes and hosts, or two admissions would count once.
        self._member_prefix = f"{uuid.uuid4().hex}:{os.getpid()}:"
        self._counter = itertools.count()

    async def acquire(self, key: str, limit: int, period_s: float, *, longest_s: float = 0.0) -> Admission:
        _check_budget(limit, period_s)
        period_us = _microseconds(period_s)
        in_flight_us = max(0, math.ceil(longest_s * 1_000_000))
        while True:
            member = f"{self._member_prefix}{next(self._counter)}"
            wait_us, in_flight = await self._script(keys=[self._prefix + key],
                                                    args=[period_us, limit, member, in_flight_us])
            if int(wait_us) <= 0:
                return Admission(key, period_s, member)
            wait_s = int(wait_us) / 1_000_000
            await self._sleep(min(wait_s, IN_FLIGHT_POLL_S) if int(in_flight) else wait_s)

    async def done(self, admission: Admission) -> None:
        period_us = _microseconds(admission.period_s)
        await self._done_script(keys=[self._prefix + admission.key], args=[period_us, admission.token])
