"""When a new WebSocket connection may start, so that OKX never counts more than its limit in a second.

OKX allows `limit` new connections per second per IP, counted where they arrive. A connection started here
at t arrives at some moment between t and the moment its answer (101, 429, or a failure) comes back; how far
into that span depends on lag here, on the network and at the server, and a loaded server may hold upgrade
requests for seconds and then read them all at once (the simulator, sharing 2 cores with the whole system,
held them 2.2 s and refused 11 of 281). Spacing starts evenly cannot survive a delay longer than its margin.

The gate therefore counts an attempt from its answer, the latest moment it can have arrived, not from its
start: a start is granted only while fewer than `limit` attempts are in flight or were answered within the
last `window_s` (> 1 s). Take any `limit` + 1 arrivals and the last of them to start: when it started, at most
`limit` − 1 of the others were in flight or recently answered, so one was answered more than `window_s`
before that start, and arrived before its answer. So any `limit` + 1 arrivals span more than `window_s`: no
second at the server sees more than `limit`, whatever the delays.

The one attempt this cannot place is one given up without an answer whose request the server reads later
still: it counts from when it was given up. The client therefore gives up early only while no request can
be out (TCP or TLS not yet open); once it may be, it waits for the answer (`WsConfig.answer_timeout_s`, a
minute). Giving up at the connect timeout, as before, let a server stalled for 15 s read the abandoned
requests together with their retries: 4 in a second at 27,000 channels under load.

On top of the window, starts are spaced at least `spacing_s` apart (no burst of `limit` at once) and a
`hold` (after a 429: another client on the same IP) stops every start for a while. Every rule is applied at
grant time against the clock then, never against slots planned in advance, so a stalled event loop
delays starts but never bunches them.

After the gate, a link paces its own subscribe/unsubscribe requests (`SlidingWindow`) and a shard its
reconnects (`backoff_delay`): the same question, how soon the next attempt may go, one level down.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# What "per second" means at OKX is not published: a window a quarter-second longer covers a server whose
# window or clock is a little generous. It costs nothing while answers come back within 0.25 s: then the
# even spacing, not the window, decides.
WINDOW_MARGIN_S = 0.25


@dataclass(eq=False, slots=True)
class Attempt:
    """One granted connection start; hand it back to `ConnectionGate.answered` when its answer came."""

    started_at: float
    answered_at: float | None = None


def next_start(now: float, *, limit: int, window_s: float, not_before: float, attempts: list[Attempt]
               ) -> float | None:
    """The earliest moment ≥ `now` a new start may be granted, or None while it waits for an answer.

    `attempts` are those that may still count: in flight (no answer yet) or answered within `window_s`.
    """
    expiries = sorted(math.inf if a.answered_at is None else a.answered_at + window_s for a in attempts)
    earliest = max(now, not_before)
    if len(expiries) < limit:
        return earliest
    # The start fits once all but `limit` − 1 of them have left the window; an answer still to come leaves
    # it no earlier than `window_s` after it, later than every answer already in.
    deciding = expiries[len(expiries) - limit]
    return None if math.isinf(deciding) else max(earliest, deciding)


class ConnectionGate:
    """Grants connection starts one at a time, in the order asked, under the rules of the module's docstring."""

    def __init__(self, *, limit: int, window_s: float, spacing_s: float, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable]):
        if limit < 1 or window_s <= 0 or spacing_s < 0:
            raise ValueError("limit must be ≥ 1, window_s > 0 and spacing_s ≥ 0")
        self.limit, self.window_s, self.spacing_s = limit, window_s, spacing_s
        self._clock, self._sleep = clock, sleep
        self._attempts: list[Attempt] = []
        self._last_start = -math.inf
        self._held_until = -math.inf
        self._lock = asyncio.Lock()
        self._answer = asyncio.Event()

    def hold(self, seconds: float) -> None:
        """Grant nothing for `seconds` from now (the server said we went too fast)."""
        self._held_until = max(self._held_until, self._clock() + seconds)

    @property
    def in_flight(self) -> int:
        return sum(a.answered_at is None for a in self._attempts)

    async def start(self) -> Attempt:
        """Wait until a start is allowed; the caller connects at once and calls `answered` when it is done."""
        async with self._lock:  # held while waiting: the first to ask gets the next start
            while True:
                now = self._clock()
                self._attempts = [a for a in self._attempts
                                  if a.answered_at is None or a.answered_at + self.window_s > now]
                at = next_start(now, limit=self.limit, window_s=self.window_s, attempts=self._attempts,
                                not_before=max(self._held_until, self._last_start + self.spacing_s))
                if at is None:
                    self._answer.clear()
                    await self._answer.wait()
                elif at > now:
                    await self._sleep(at - now)
                else:
                    attempt = Attempt(started_at=now)
                    self._attempts.append(attempt)
                    self._last_start = now
                    return attempt

    def answered(self, attempt: Attempt) -> None:
        """The attempt's answer (or failure) came back: it has arrived if it ever will, and counts from now."""
        if attempt.answered_at is None:
            attempt.answered_at = self._clock()
            self._answer.set()


# --- a link's requests and a shard's reconnects ---------------------------------------------------------


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with equal jitter: in [d/2, d] for d = min(cap, base·2^attempt)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return ceiling / 2 + rng() * ceiling / 2


class SlidingWindow:
    """At most `limit` events in any `period` seconds; `wait()` sleeps until the next one is allowed."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float], sleep: Callable[[float], Awaitable]):
        self.limit, self.period = limit, period
        self._clock, self._sleep = clock, sleep
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._held_until = 0.0

    def hold(self, seconds: float) -> None:
        """Let nothing through for `seconds` from now (the other side said we went too fast)."""
        self._held_until = max(self._held_until, self._clock() + seconds)

    async def wait(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._held_until:
                    await self._sleep(self._held_until - now)
                    continue
                while self._times and now - self._times[0] >= self.period:
                    self._times.popleft()
                if len(self._times) < self.limit:
                    self._times.append(now)
                    return
                await self._sleep(self.period - (now - self._times[0]))


__all__ = ["WINDOW_MARGIN_S", "Attempt", "ConnectionGate", "SlidingWindow", "backoff_delay", "next_start"]
