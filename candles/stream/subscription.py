"""One client's subscription to one series: replay from `since`, then live, never an older version after a newer.

The handover is the classic catch-up: the subscription joins the hub (which collects live rows for it in
`pending`) before it reads the database, so a version committed while the replay reads is either in what it
reads or in `pending`, or both. Replay pages go out paced by the client; then `pending` is sent, and from there
every feed row the moment it arrives. A version is sent only when it is newer than the one sent for the same open
time (stored bars compare versions; derived bars, which are read again whenever a constituent changes, compare
contents), so the overlap costs nothing and a late row can never take a candle back.

`frontier` is the first open time whose final version the client may not have: every candle before it was sent
confirmed, with none missing. When the hub finds it missed feed entries, the subscription replays from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson

from candles.stream import protocol
from candles.stream.outbox import Outbox
from candles.stream.reads import Page, Series, feed_candle

logger = logging.getLogger(__name__)

# Open times whose sent version is remembered: far more than the open candles of any series at once.
SENT_MEMORY = 4096
# Confirmed candles past a hole that the frontier remembers before it gives up on them (it stays at the hole).
AHEAD_MEMORY = 10_000

Reader = Callable[[Series, int, int, "int | None"], Awaitable[Page]]


class Subscription:
    def __init__(self, *, arg: protocol.StreamArg, series: Series, outbox: Outbox, read: Reader, page_size: int,
                 pending_max: int) -> None:
        self.arg = arg
        self.series = series
        self._arg_json = orjson.dumps(arg.echo())
        self._outbox = outbox
        self._read = read
        self._page_size = page_size
        self._pending_max = pending_max
        self._derived = series.derived is not None
        self._sent: dict[int, object] = {}
        self._ahead: set[int] = set()
        self.frontier = 0
        self._replaying = True
        # Stored bars: where the next replay starts (open-ended). Derived bars: the bucket range to read again.
        self._replay_from: int | None = None
        self._replay_to: int | None = None
        self._open_ended = False
        self._pending: list[list] = []
        self._task: asyncio.Task | None = None
        self.closed = False

    # --- driven by the consumer -----------------------------------------------------------------------------

    def start(self, start_ms: int) -> None:
        """Begin: replay from `start_ms` (already joined to the hub), then go live."""
        self.frontier = self.series.spec.ceil(start_ms)
        self._schedule(start_ms, None)

    def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()

    # --- driven by the hub (synchronous: never awaits, never blocks the feed) -------------------------------

    def on_rows(self, rows: list[list]) -> None:
        if self.closed:
            return
        if self._derived:
            # The buckets those source rows fall in are read again (coalesced while a read runs).
            floor = self.series.spec.floor
            self._schedule(floor(min(row[2] for row in rows)), floor(max(row[2] for row in rows)))
            return
        if self._replaying:
            self._pending.extend(rows)
            if len(self._pending) > self._pending_max:
                # Too much arrived while the replay reads: forget it and read it again after the replay.
                self._schedule(min(row[2] for row in self._pending), None)
                self._pending = []
            return
        self._send_live(rows)

    def resync(self) -> None:
        """The hub missed feed entries: read everything from the frontier again."""
        if not self.closed:
            self._schedule(self.frontier, None)

    # --- internals -------------------------------------------------------------------------------------------

    def _schedule(self, start_ms: int, end_ms: int | None) -> None:
        """Add [start_ms, end_ms] (None: open-ended) to what the replay task reads, starting it if idle."""
        self._replaying = True
        self._replay_from = start_ms if self._replay_from is None else min(self._replay_from, start_ms)
        if end_ms is None or self._open_ended:
            self._open_ended, self._replay_to = True, None
        else:
            self._replay_to = end_ms if self._replay_to is None else max(self._replay_to, end_ms)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"stream {self.arg.symbol} {self.arg.timeframe}")

    async def _run(self) -> None:
        try:
            while self._replay_from is not None:
                start, end = self._replay_from, self._replay_to
                self._replay_from = self._replay_to = None
                self._open_ended = False
                while start is not None:
                    page = await self._read(self.series, start, self._page_size, end)
                    await self._deliver(page)
                    start = page.next_ms
            # Nothing more to read: what arrived meanwhile goes out, and from here every row at once. No await
            # between the check above and this switch, so no row can fall between them.
            pending, self._pending = self._pending, []
            self._replaying = False
            self._task = None
            if pending:
                self._send_live(pending)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("stream: replay of %s %s failed", self.arg.symbol, self.arg.timeframe)
            self._task = None
            self.closed = True
            self._outbox.put_live(protocol.error(protocol.INTERNAL_ERROR, "the replay failed; subscribe again",
                                                 self.arg.echo()))

    async def _deliver(self, page: Page) -> None:
        keep = [candle for candle, key, ms, ok in zip(page.candles, page.keys, page.open_times, page.confirmed,
                                                      strict=True) if self._fresh(ms, key, ok)]
        if keep:
            await self._outbox.put_replay(protocol.data_frame(self._arg_json, orjson.dumps(keep)))

    def _send_live(self, rows: list[list]) -> None:
        keep = [feed_candle(row) for row in rows if self._fresh(row[2], row[12], row[11])]
        if keep:
            self._outbox.put_live(protocol.data_frame(self._arg_json, orjson.dumps(keep)))

    def _fresh(self, ms: int, key: object, confirmed: bool) -> bool:
        """Whether this version is news to the client (and, if so, remember it was sent)."""
        sent = self._sent.get(ms)
        if sent is not None and (sent == key if self._derived else key <= sent):
            return False
        self._sent.pop(ms, None)
        self._sent[ms] = key
        if len(self._sent) > SENT_MEMORY:
            del self._sent[next(iter(self._sent))]
        if confirmed:
            self._advance(ms)
        return True

    def _advance(self, ms: int) -> None:
        if ms != self.frontier:
            if ms > self.frontier:
                self._ahead.add(ms)
                if len(self._ahead) > AHEAD_MEMORY:
                    self._ahead.clear()
            return
        following = self.series.spec.following
        self.frontier = following(self.frontier)
        while self.frontier in self._ahead:
            self._ahead.discard(self.frontier)
            self.frontier = following(self.frontier)
