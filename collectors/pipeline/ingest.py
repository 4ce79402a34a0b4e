"""From parsed candle updates to the Redis buffer: validate, coalesce, and write in batches.

OKX pushes an open candle about once a second per channel; between two writes to Redis (every ~100 ms)
only the newest version of each candle is kept in memory, so Redis sees one write per candle per tick.
If Redis is unreachable the pending entries stay in memory and are written when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from candles.bars import BarSpec
from collectors.okx.messages import CandleUpdate, Channel
from collectors.pipeline.buffer import dead_letter_record, encode_entry, flatten, receipt_version
from collectors.pipeline.keys import Keys, candle_field

logger = logging.getLogger(__name__)

# A candle may open this far after our clock (clock skew with OKX) before it counts as "in the future".
FUTURE_TOLERANCE_MS = 5_000
WRITE_CHUNK_FIELDS = 2_000


def candle_problem(update: CandleUpdate, spec: BarSpec | None, now_ms: int) -> str | None:
    """Why a candle cannot be stored, or None when it is valid."""
    o, h, lo, c = update.open, update.high, update.low, update.close
    if h < o or h < c or h < lo:
        return "high is below open, close or low"
    if lo > o or lo > c:
        return "low is above open or close"
    if update.vol < 0 or update.vol_ccy < 0 or (update.vol_ccy_quote is not None and update.vol_ccy_quote < 0):
        return "negative volume"
    if spec is None:
        return f"unknown bar {update.bar!r}"
    if not spec.is_open_time(update.open_time_ms):
        return f"open time {update.open_time_ms} is not on a {update.bar} boundary"
    if update.open_time_ms > now_ms + FUTURE_TOLERANCE_MS:
        return f"open time {update.open_time_ms} is in the future"
    return None


@dataclass
class ChannelTrack:
    open_ms: int = -1
    confirmed: bool = False
    last_message_at: float | None = None
    last_confirmed_open: int | None = None


@dataclass
class Ingest:
    """Validates updates and holds what must reach Redis next; `write(redis)` sends it."""

    keys: Keys
    specs: dict[str, BarSpec] = field(default_factory=dict)
    wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000
    pending: dict[str, str] = field(default_factory=dict)
    pending_confirmed: set[str] = field(default_factory=set)
    dead: list[bytes] = field(default_factory=list)
    rest_needed: set[str] = field(default_factory=set)
    channels: dict[Channel, ChannelTrack] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {"messages": 0, "dead_letters": 0, "missed_confirms": 0})

    def accept(self, update: CandleUpdate, raw: str | bytes) -> None:
        now_ms = self.wall_ms()
        self.counters["messages"] += 1
        channel = update.channel
        track = self.channels.get(channel)
        if track is None:
            track = self.channels[channel] = ChannelTrack()
        track.last_message_at = now_ms / 1000
        problem = candle_problem(update, self.specs.get(update.bar), now_ms)
        if problem is not None:
            self.dead_letter(problem, raw, f"{update.inst_id}|{update.bar}")
            return
        if update.open_time_ms > track.open_ms:
            if track.open_ms >= 0 and not track.confirmed:
                # OKX does not promise a confirm push: a later candle closes this one, and REST has it.
                self.rest_needed.add(candle_field(update.inst_id, update.bar, track.open_ms))
                self.counters["missed_confirms"] += 1
            track.open_ms, track.confirmed = update.open_time_ms, False
        if update.confirmed and update.open_time_ms == track.open_ms:
            track.confirmed = True
        if update.confirmed:
            track.last_confirmed_open = max(track.last_confirmed_open or 0, update.open_time_ms)
        key, value = encode_entry(update, receipt_version())
        if key in self.pending_confirmed and not update.confirmed:
            return  # a late unconfirmed copy never replaces the confirmed version
        self.pending[key] = value
        if update.confirmed:
            self.pending_confirmed.add(key)

    def dead_letter(self, reason: str, raw: str | bytes | None, channel: str | None = None) -> None:
        self.counters["dead_letters"] += 1
        self.dead.append(dead_letter_record(reason, raw, channel))

    async def write(self, redis: Any, put_script: Any, dead_letter_max: int) -> int:
        """Send pending entries, dead letters and REST requests to Redis. On failure nothing is dropped."""
        if not (self.pending or self.dead or self.rest_needed):
            return 0
        pending, confirmed, dead, needed = self.pending, self.pending_confirmed, self.dead, self.rest_needed
        self.pending, self.pending_confirmed, self.dead, self.rest_needed = {}, set(), [], set()
        try:
            items = list(pending.items())
            for start in range(0, len(items), WRITE_CHUNK_FIELDS):
                await put_script(keys=[self.keys.live], args=flatten(items[start:start + WRITE_CHUNK_FIELDS]))
            async with redis.pipeline(transaction=False) as pipe:
                if dead:
                    pipe.lpush(self.keys.dead_letters, *dead)
                    pipe.ltrim(self.keys.dead_letters, 0, dead_letter_max - 1)
                    pipe.hincrby(self.keys.counters, "dead_letters", len(dead))
                if needed:
                    pipe.sadd(self.keys.rest_needed, *needed)
                pipe.hincrby(self.keys.counters, "candle_updates", len(pending))
                await pipe.execute()
        except Exception:
            # Put everything back. An entry that arrived meanwhile is newer and stays, unless ours was the
            # confirmed version and the newcomer is not.
            for key, value in pending.items():
                if key not in self.pending or (key in confirmed and key not in self.pending_confirmed):
                    self.pending[key] = value
            self.pending_confirmed |= confirmed
            self.dead[:0] = dead
            self.rest_needed |= needed
            raise
        return len(pending)

