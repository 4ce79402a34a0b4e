"""Sliding-window rate limits: at most `limit` events per `period` seconds per key (over it: rejected)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable


class SlidingWindow:
    def __init__(self, limit: int, period: float):
        self.limit = limit
        self.period = period
        self._events: dict[Hashable, deque[float]] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        """Count an event for `key` at `now` (seconds) unless it would exceed the limit. Rejections don't count."""
        if self.limit <= 0:
            return True
        events = self._events.setdefault(key, deque())
        horizon = now - self.period
        while events and events[0] <= horizon:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True
