"""Pushes: one tick per `push_interval` writes every subscribed channel's open candle (after the confirm of
the candle that closed since the last tick) to every connection, as frames encoded once per channel version.

Trade candles (`candle{bar}`), mark-price candles (`mark-price-candle{bar}`) and index candles
(`index-candle{bar}`) are pushed alike, confirm omissions included; only their rows differ (9 or 6 fields).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from . import messages
from .bars import Bar, substeps_of
from .connection import Channel, WsConnection
from .market import Market, wall_clock_ms
from .reference import INDEX, MARK, TRADE

if TYPE_CHECKING:
    from .config import SimulatorConfig

log = logging.getLogger(__name__)

# A tick fires just after each multiple of push_interval: with 1s bars and push_interval 1, every tick sees
# a fresh candle (and can confirm the previous one) instead of straddling the boundary.
TICK_LAG_S = 0.003
# After skipped ticks, at most this many closed candles of a channel are confirmed late; older ones are left
# to REST, as after any outage.
MAX_LATE_CONFIRMS = 30
BUFFER_FULL_CLOSE_CODE = 4005
BUFFER_FULL_REASON = "Server buffer full"
# Channel names by price kind: candle1m, mark-price-candle1m, index-candle1m.
CHANNEL_PREFIXES = {
    TRADE: messages.CANDLE_PREFIX, MARK: messages.MARK_CANDLE_PREFIX, INDEX: messages.INDEX_CANDLE_PREFIX,
}


class ChannelFeed:
    """Encoded frames of one channel, shared by every connection subscribed to it."""

    __slots__ = ("_confirm", "_key", "_open", "_prefix", "_row", "bar", "inst_id", "name", "omit_key", "price")

    def __init__(self, inst_id: str, bar: Bar, price: str = TRADE):
        self.inst_id = inst_id
        self.bar = bar
        self.price = price
        self.name = CHANNEL_PREFIXES[price] + bar.name
        # Which closes lose their confirm push is hashed from this: trade candles keep their bar name.
        self.omit_key = bar.name if price == TRADE else self.name
        self._prefix = messages.push_prefix(self.name, inst_id)
        self._key: tuple[int, int] = (-1, -1)
        self._open = b""
        self._row: list[str] = []
        self._confirm: tuple[int, bytes | None] = (-1, None)

    def row(self, market: Market, open_ms: int, substep: int, *, confirmed: bool) -> list[str]:
        if self.price == TRADE:
            return market.row(market.instruments[self.inst_id], self.bar, open_ms, substep, confirmed=confirmed)
        return market.reference.row(self.price, self.inst_id, self.bar, open_ms, substep, confirmed=confirmed)

    def prepare(self, market: Market, open_ms: int) -> None:
        market.prepare(self.inst_id, self.bar.name, open_ms, self.price)

    def omitted(self, market: Market, open_ms: int, omit_rate: float) -> bool:
        return market.confirm_omitted(self.inst_id, self.omit_key, open_ms, omit_rate)

    def open_frame(self, market: Market, open_ms: int, substep: int) -> bytes:
        if self._key != (open_ms, substep):
            self._row = self.row(market, open_ms, substep, confirmed=False)
            self._open = messages.push_frame_of(self._prefix, self._row)
            self._key = (open_ms, substep)
        return self._open

    def confirm_frame(self, market: Market, open_ms: int, omit_rate: float) -> bytes | None:
        """The final push of the candle opened at `open_ms`, or None when this close is left out."""
        if self._confirm[0] != open_ms:
            frame = None
            if not self.omitted(market, open_ms, omit_rate):
                last = substeps_of(self.bar)
                if self._key == (open_ms, last):  # its last open version went out already: the same numbers
                    row = [*self._row[:-1], "1"]
                else:
                    row = self.row(market, open_ms, last, confirmed=True)
                frame = messages.push_frame_of(self._prefix, row)
            self._confirm = (open_ms, frame)
        return self._confirm[1]



class PushLoop:
    """The push side of `Simulator` (a mixin: it shares the simulator's state)."""

    config: SimulatorConfig
    market: Market
    _connections: set[WsConnection]
    _feeds: dict[Channel, ChannelFeed]
    _feeds_by_bar: dict[str, list[ChannelFeed]]
    _stats: Counter[str]
    _confirm_omit_rate: float

    async def _push_loop(self) -> None:
        interval = self.config.push_interval
        previous: float | None = None
        while True:
            now = time.time()
            tick = now // interval + 1
            if previous is not None and tick > previous + 1:
                if (previous + 1) * interval > now - interval:
                    # The next tick is late by less than an interval (the last one ran long, or waited for
                    # a core): it runs now. A load generator that drops what it could not send on time
                    # offers less load exactly when the system is slow, and hides the slowness it caused.
                    tick = previous + 1
                else:
                    # Ticks whose moment passed long ago (a starved or stopped process): nothing is pushed
                    # for them, so a candle may close unseen by clients. Counted for load tests to tell apart.
                    self._stats["ticks_skipped"] += int(tick - previous - 1)
            previous = tick
            await asyncio.sleep(max(0.0, tick * interval + TICK_LAG_S - now))
            self._stats["ticks"] += 1
            started, started_cpu = time.perf_counter(), time.process_time()
            try:
                now_ms = wall_clock_ms()
                self._tick(now_ms)
                self._prepare_next_candles(now_ms)
            except Exception:
                log.exception("simulator push tick failed")
            # Wall time against CPU time: a tick much longer than its CPU waited for a core.
            busy_ms = round((time.perf_counter() - started) * 1000)
            self._stats["tick_busy_ms"] += busy_ms
            self._stats["tick_cpu_ms"] += round((time.process_time() - started_cpu) * 1000)
            self._stats["tick_busy_ms_max"] = max(self._stats["tick_busy_ms_max"], busy_ms)

    def _feed(self, channel: tuple[str, ...]) -> ChannelFeed:
        channel = Channel(*channel)
        feed = self._feeds.get(channel)
        if feed is None:
            feed = self._feeds[channel] = ChannelFeed(channel.inst_id, self.market.bars[channel.bar], channel.price)
            self._feeds_by_bar.setdefault(channel.bar, []).append(feed)
        return feed

    def _prepare_next_candles(self, now_ms: int) -> None:
        """Compute the next candle of a share of the channels each tick, so that a bar boundary is not a spike.

        Every channel of a bar starts a new candle at the same moment; computing all those candles in the tick
        that pushes them made that tick several times longer than the others, long enough to make the next
        tick late (skipped). Spread over the ticks of the current candle, the same work is even.
        """
        interval_ms = max(1, round(self.config.push_interval * 1000))
        market = self.market
        for bar_name, feeds in self._feeds_by_bar.items():
            bar = market.bars[bar_name]
            open_ms = bar.floor(now_ms)
            next_open = bar.next_open(open_ms)
            ticks = max(1, (next_open - open_ms) // interval_ms)
            index = min(ticks - 1, (now_ms - open_ms) // interval_ms)
            count = len(feeds)
            start, end = index * count // ticks, (index + 1) * count // ticks if index < ticks - 1 else count
            for feed in feeds[start:end]:
                feed.prepare(market, next_open)

    def _tick(self, now_ms: int) -> None:
        """One push per subscribed channel per connection; a confirm push first when a candle closed."""
        market = self.market
        omit_rate = self._confirm_omit_rate
        opens: dict[str, tuple[int, int, int]] = {}  # bar -> (open, substep, previous open), once per tick
        pushes = confirms = omitted = 0
        gone = market.gone_at(now_ms)  # expired or delisted: their channels fall silent
        for connection in list(self._connections):
            if not connection.accepts_pushes:
                continue
            frames: list[bytes] = []
            subscriptions = connection.subscriptions
            for channel, last_open in subscriptions.items():
                if gone and channel[0] in gone and channel[2] != INDEX:  # an index outlives its instruments
                    continue
                bar_name = channel[1]
                moment = opens.get(bar_name)
                if moment is None:
                    bar = market.bars[bar_name]
                    open_ms = bar.floor(now_ms)
                    substep = market.substep_at(bar, open_ms, now_ms)
                    moment = opens[bar_name] = (open_ms, substep, bar.prev_open(open_ms))
                open_ms, substep, previous_open = moment
                feed = self._feeds.get(channel) or self._feed(channel)
                if last_open is not None and last_open != open_ms:
                    if last_open != previous_open:
                        # Ticks were skipped (a starved process) past whole candles: OKX would have pushed
                        # each one, so their confirms go first, oldest first, a bounded number of them.
                        frames.extend(self._late_confirms(feed, last_open, previous_open))
                    confirm = feed.confirm_frame(market, previous_open, omit_rate)
                    if confirm is None:
                        omitted += 1
                    else:
                        frames.append(confirm)
                        confirms += 1
                frames.append(feed.open_frame(market, open_ms, substep))
                subscriptions[channel] = open_ms
            pushes += len(frames)
            if connection.malformed_pending:
                frames = self._interleave_malformed(connection, frames, now_ms)
            if frames:
                connection.write_many(frames)
                if connection.transport.get_write_buffer_size() > self.config.write_buffer_limit:
                    self._stats["buffer_full_closes"] += 1
                    connection.close(BUFFER_FULL_CLOSE_CODE, BUFFER_FULL_REASON, self.config.close_timeout)
        stats = self._stats
        stats["pushes_sent"] += pushes
        stats["confirms_sent"] += confirms
        stats["confirms_omitted"] += omitted

    def _late_confirms(self, feed: ChannelFeed, last_open: int, previous_open: int) -> list[bytes]:
        """Confirm pushes of the candles from `last_open` up to (not including) `previous_open`."""
        market, bar = self.market, feed.bar
        frames: list[bytes] = []
        open_ms = max(last_open, bar.floor(previous_open - MAX_LATE_CONFIRMS * (bar.duration_ms or 1)))
        while open_ms < previous_open and len(frames) < MAX_LATE_CONFIRMS:
            if feed.omitted(market, open_ms, self._confirm_omit_rate):
                self._stats["confirms_omitted"] += 1
            else:
                row = feed.row(market, open_ms, substeps_of(bar), confirmed=True)
                frames.append(messages.push_frame(feed.name, feed.inst_id, row))
            open_ms = bar.next_open(open_ms)
        self._stats["confirms_sent"] += len(frames)
        self._stats["late_confirms"] += len(frames)
        return frames

    def _interleave_malformed(self, connection: WsConnection, frames: list[bytes], now_ms: int) -> list[bytes]:
        inst_id, bar_name, price = next(iter(connection.subscriptions), Channel("BTC-USDT", "1m"))
        bar = self.market.bars.get(bar_name)
        kinds = messages.malformed_frames(
            inst_id, CHANNEL_PREFIXES[price] + bar_name, bar.floor(now_ms) if bar else now_ms // 60_000 * 60_000
        )
        bad = []
        for _ in range(connection.malformed_pending):
            bad.append(kinds[connection.malformed_sent % len(kinds)])
            connection.malformed_sent += 1
        self._stats["malformed_sent"] += len(bad)
        connection.malformed_pending = 0
        mixed: list[bytes] = []
        for index, frame in enumerate(frames):
            mixed.append(frame)
            if index < len(bad):
                mixed.append(bad[index])
        mixed.extend(bad[len(frames):])
        return mixed

