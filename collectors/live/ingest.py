"""From parsed candle updates to the Redis buffer: validate, coalesce, and write in batches.

OKX pushes an open candle about once a second per channel; between two writes to Redis (every ~100 ms)
only the newest version of each candle is kept in memory, so Redis sees one write per candle per tick.
If Redis is unreachable the pending entries stay in memory and are written when it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from candles.bars import BarSpec
from collectors.live.buffer import dead_letter_record, encode_text_entry, pack_entries, receipt_version
from collectors.okx.candle_rows import CandleText, CandleUpdate
from okxproject.keys import Keys, channel_parts

logger = logging.getLogger(__name__)

# A candle may open this far after our clock (clock skew with OKX) before it counts as "in the future".
FUTURE_TOLERANCE_MS = 5_000
WRITE_CHUNK_ENTRIES = 2_000

HIGH_BELOW = "high is below open, close or low"
LOW_ABOVE = "low is above open or close"
NEGATIVE_VOLUME = "negative volume"


def candle_problem(update: CandleUpdate, spec: BarSpec | None, now_ms: int) -> str | None:
    """Why a candle cannot be stored, or None when it is valid."""
    o, h, lo, c = update.open, update.high, update.low, update.close
    if h < o or h < c or h < lo:
        return HIGH_BELOW
    if lo > o or lo > c:
        return LOW_ABOVE
    # Mark-price and index candles have no volumes (None).
    if any(v is not None and v < 0 for v in (update.vol, update.vol_ccy, update.vol_ccy_quote)):
        return NEGATIVE_VOLUME
    return _time_problem(update.bar, update.open_time_ms, spec, now_ms)


def candle_text_problem(candle: CandleText, spec: BarSpec | None, now_ms: int) -> str | None:
    """`candle_problem` of a CandleText: Decimals of the four prices only, volumes by their sign."""
    # A mark-price or index candle is one field longer (its kind) and has no volumes.
    _, bar, open_ms, o, h, lo, c, vol, vol_ccy, quote, _ = candle[:11]
    o, h, lo, c = Decimal(o), Decimal(h), Decimal(lo), Decimal(c)
    if h < o or h < c or h < lo:
        return HIGH_BELOW
    if lo > o or lo > c:
        return LOW_ABOVE
    # Without a minus sign a number is not negative; with one it may still be zero ("-0").
    if vol is not None and (vol[0] == "-" or vol_ccy[0] == "-" or (quote is not None and quote[0] == "-")) and (
            Decimal(vol) < 0 or Decimal(vol_ccy) < 0 or (quote is not None and Decimal(quote) < 0)):
        return NEGATIVE_VOLUME
    return _time_problem(bar, open_ms, spec, now_ms)


def _time_problem(bar: str, open_time_ms: int, spec: BarSpec | None, now_ms: int) -> str | None:
    if spec is None:
        return f"unknown bar {bar!r}"
    if not spec.is_open_time(open_time_ms):
        return f"open time {open_time_ms} is not on a {bar} boundary"
    if open_time_ms > now_ms + FUTURE_TOLERANCE_MS:
        return f"open time {open_time_ms} is in the future"
    return None


# A channel as a plain tuple: equal to, and hashing like, `collectors.okx.protocol.Channel`.
ChannelKey = tuple[str, ...]


class Written(NamedTuple):
    entries: int  # buffer entries sent
    confirmed: int  # of which final (confirmed) versions: closed candles now waiting for a flush


@dataclass(slots=True)
class ChannelTrack:
    open_ms: int = -1
    confirmed: bool = False
    last_message_at: float | None = None
    last_confirmed_open: int | None = None


@dataclass
class Ingest:
    """Validates candles and holds what must reach Redis next; `write(redis)` sends it."""

    keys: Keys
    specs: dict[str, BarSpec] = field(default_factory=dict)
    # Receipt time in microseconds since the epoch: the candle's version, and (÷1000) the clock of the checks.
    clock_us: Callable[[], int] = receipt_version
    pending: dict[str, str] = field(default_factory=dict)
    pending_confirmed: set[str] = field(default_factory=set)
    dead: list[bytes] = field(default_factory=list)
    # By channel: a plain tuple equal to the candle's Channel ((inst_id, bar), or (inst_id, bar, kind) for a
    # mark-price or index candle), built without its constructor.
    channels: dict[ChannelKey, ChannelTrack] = field(default_factory=dict)
    # The channels that had a message, and those whose last confirmed candle moved, since the status tick
    # last took them: the tick publishes these, not every channel.
    seen: dict[ChannelKey, ChannelTrack] = field(default_factory=dict)
    confirmed_moved: dict[ChannelKey, ChannelTrack] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: {"messages": 0, "dead_letters": 0, "missed_confirms": 0,
                                                              "flush_requests_sent": 0})

    def accept(self, candle: CandleText, raw: str | bytes) -> None:
        """One candle as the WebSocket client delivers it (`candles_as_text`): the collector's hot path."""
        version = self.clock_us()
        now_ms = version // 1000
        self.counters["messages"] += 1
        inst_id, bar, open_ms = candle.inst_id, candle.bar, candle.open_time_ms
        # A plain tuple equal to the candle's Channel, built without its constructor: (inst_id, bar) for a trade
        # candle, (inst_id, bar, kind) for a mark-price or index candle, so the two never share a track.
        channel = (inst_id, bar) if len(candle) == 11 else (inst_id, bar, candle[11])
        track = self.channels.get(channel)
        if track is None:
            track = self.channels[channel] = ChannelTrack()
        track.last_message_at = now_ms / 1000
        self.seen[channel] = track
        problem = candle_text_problem(candle, self.specs.get(bar), now_ms)
        if problem is not None:
            self.dead_letter(problem, raw, "|".join(channel_parts(channel)))
            return
        confirmed = candle.confirmed
        if open_ms > track.open_ms:
            if track.open_ms >= 0 and not track.confirmed:
                # OKX does not promise a confirm push: a later candle closes this one. Its stored version
                # stays unconfirmed, which is what the repair plane looks for (collectors/repair/confirms.py).
                self.counters["missed_confirms"] += 1
            track.open_ms, track.confirmed = open_ms, False
        if confirmed:
            if open_ms == track.open_ms:
                track.confirmed = True
            if track.last_confirmed_open is None or open_ms > track.last_confirmed_open:
                track.last_confirmed_open = open_ms
                self.confirmed_moved[channel] = track
            key, value = encode_text_entry(candle, version)
            self.pending[key] = value
            self.pending_confirmed.add(key)
            return
        key, value = encode_text_entry(candle, version)
        if key not in self.pending_confirmed:  # a late unconfirmed copy never replaces the confirmed version
            self.pending[key] = value

    def take_changes(self) -> tuple[dict[ChannelKey, ChannelTrack], dict[ChannelKey, ChannelTrack]]:
        """The channels seen and those whose confirmed candle moved since the last call; both start afresh."""
        seen, confirmed, self.seen, self.confirmed_moved = self.seen, self.confirmed_moved, {}, {}
        return seen, confirmed

    def give_back_changes(self, seen: dict[ChannelKey, ChannelTrack],
                          confirmed: dict[ChannelKey, ChannelTrack]) -> None:
        """Changes taken but not published (Redis away): published with the next ones. A track holds the
        newest figures, so either copy of an entry will do."""
        self.seen.update(seen)
        self.confirmed_moved.update(confirmed)

    def dead_letter(self, reason: str, raw: str | bytes | None, channel: str | None = None) -> None:
        self.counters["dead_letters"] += 1
        self.dead.append(dead_letter_record(reason, raw, channel))

    async def write(self, redis: Any, put_script: Any, dead_letter_max: int) -> Written:
        """Send pending entries and dead letters to Redis. On failure nothing is dropped."""
        if not (self.pending or self.dead):
            return Written(0, 0)
        pending, confirmed, dead = self.pending, self.pending_confirmed, self.dead
        self.pending, self.pending_confirmed, self.dead = {}, set(), []
        try:
            items = list(pending.items())
            for start in range(0, len(items), WRITE_CHUNK_ENTRIES):
                await put_script(keys=[self.keys.live], args=[pack_entries(items[start:start + WRITE_CHUNK_ENTRIES])])
            async with redis.pipeline(transaction=False) as pipe:
                if dead:
                    pipe.lpush(self.keys.dead_letters, *dead)
                    pipe.ltrim(self.keys.dead_letters, 0, dead_letter_max - 1)
                    pipe.hincrby(self.keys.counters, "dead_letters", len(dead))
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
            raise
        return Written(len(pending), len(confirmed))

