"""The stream's side of the feed in one web process: one reader of the Redis feed for every client it serves.

The hub reads feed entries (candles/stream/feed.py) as they are appended, groups each entry's rows by series
and hands them to the subscriptions of that series, synchronously: a subscription queues frames and never makes
the hub wait, so a slow client can slow nothing but itself. Cost follows the clients: an entry is decoded once
per process, and a row costs a dictionary lookup unless someone subscribed to its series.

Nothing is missed silently: entries carry a sequence number, and when the hub finds a jump (entries trimmed
before it read them) or loses Redis, every subscription replays from its frontier once the feed is back.
While the hub has subscriptions it keeps the feed's listening key alive, and a new subscription starts its replay
only once writers have surely seen that key (`await_feed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import orjson
import redis.asyncio
from django.conf import settings
from redis.exceptions import RedisError

from candles.stream import feed

logger = logging.getLogger(__name__)

READ_BLOCK_MS = 5_000
READ_COUNT = 100
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)
# Margin over the writers' cache of the listening key: their clocks tick on their own.
LISTENING_MARGIN_S = 0.25


class Hub:
    def __init__(self) -> None:
        # The socket waits longer than a blocking read, or every quiet feed would look like a lost Redis.
        self._redis = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5,
                                                   socket_timeout=READ_BLOCK_MS / 1000 + 10, health_check_interval=30)
        self._series: dict[bytes, set] = defaultdict(set)  # feed.series_key → its subscriptions
        self._subscriptions = 0
        self._reader: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None
        self._positioned = asyncio.Event()
        # Monotonic time from which every writer publishes (the key has been set since, without a lapse).
        self._listening_from: float | None = None
        self.entries = 0
        self.rows = 0  # rows handed to subscriptions
        self.resyncs = 0
        self._suspect = False
        self._resyncing: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_commit_at: float | None = None

    # --- subscriptions -------------------------------------------------------------------------------------

    def join(self, key: tuple[int, int], subscription) -> None:
        self._series[feed.series_key(*key)].add(subscription)
        self._subscriptions += 1
        self._start()

    def leave(self, key: tuple[int, int], subscription) -> None:
        key = feed.series_key(*key)
        members = self._series.get(key)
        if members is None or subscription not in members:
            return
        members.discard(subscription)
        self._subscriptions -= 1
        if not members:
            del self._series[key]

    async def await_feed(self) -> None:
        """Return once the hub reads the feed from a known position and every writer publishes to it."""
        self._start()
        await self._positioned.wait()
        while True:
            if self._listening_from is None:
                await self._set_listening()
            if self._listening_from is not None:
                wait = self._listening_from + feed.LISTENING_CACHE_S + LISTENING_MARGIN_S - time.monotonic()
                if wait <= 0:
                    return
                await asyncio.sleep(wait)
                continue
            await asyncio.sleep(RETRY_S[0])

    # --- the reader ----------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="stream hub reader")
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_listening(), name="stream hub listening key")

    async def _set_listening(self) -> None:
        try:
            previous = await self._redis.set(feed.listening_key(), "1", px=feed.LISTENING_TTL_MS, get=True)
        except RedisError as exc:
            logger.warning("stream hub: cannot set the listening key: %s", exc)
            self._listening_from = None
            self._suspect = True
            return
        if self._listening_from is None:
            self._listening_from = time.monotonic()
        elif previous is None:
            # The key had lapsed (Redis lost it, or we could not refresh it): writers may have stopped publishing.
            self._listening_from = time.monotonic()
            self._suspect = True

    async def _keep_listening(self) -> None:
        while True:
            if self._subscriptions:
                await self._set_listening()
                if self._suspect and self._listening_from is not None:
                    self._suspect = False
                    self._resyncing = asyncio.create_task(self._resync_when_published("the feed was interrupted"))
            else:
                self._listening_from = None  # the key may lapse; the next subscription waits for writers again
                self._suspect = False
            await asyncio.sleep(feed.LISTENING_REFRESH_S)

    async def _resync_when_published(self, reason: str) -> None:
        """Replay every subscription from its frontier once writers surely publish again (what was committed
        while they did not is then read from the database, and anything later comes through the feed)."""
        await self.await_feed()
        self._resync(reason)

    async def _position(self) -> tuple[bytes | str, int | None]:
        newest = await self._redis.xrevrange(feed.feed_key(), count=1)
        if not newest:
            return "0-0", None
        entry_id, fields = newest[0]
        return entry_id, int(fields[b"seq"])

    async def _read_forever(self) -> None:
        failures = 0
        last_id: bytes | str | None = None
        last_seq: int | None = None
        while True:
            try:
                if last_id is None:
                    last_id, last_seq = await self._position()
                    self._positioned.set()
                response = await self._redis.xread({feed.feed_key(): last_id}, count=READ_COUNT,
                                                   block=READ_BLOCK_MS)
                failures = 0
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                logger.warning("stream hub: feed unreadable (%s); retrying in %.1f s", exc, delay)
                # What the feed holds past last_id is read on reconnect (a jump in seq says when more was lost);
                # what writers did not publish meanwhile is replayed from the database (_keep_listening).
                self._listening_from = None
                self._suspect = True
                await asyncio.sleep(delay)
                continue
            for _, entries in response or ():
                for entry_id, fields in entries:
                    seq = int(fields[b"seq"])
                    if last_seq is not None and seq != last_seq + 1 and seq > last_seq:
                        self._resync(f"feed entries {last_seq + 1}..{seq - 1} were trimmed before they were read")
                    elif last_seq is not None and seq <= last_seq:
                        # The sequence key was reset (a Redis without its data): start counting from here.
                        self._resync(f"feed sequence restarted at {seq}")
                    last_id, last_seq = entry_id, seq
                    self._dispatch(fields)

    def _dispatch(self, fields: dict) -> None:
        self.entries += 1
        self.last_commit_at = float(fields[b"at"])
        series = self._series
        if not series:
            return
        groups: dict[bytes, list] = {}
        loads = orjson.loads
        # Only the lines of followed series are decoded (feed.py: each line starts with its series key).
        for line in fields[b"rows"].split(b"\n"):
            key, _, body = line.partition(b"\t")
            if key in series:
                group = groups.get(key)
                if group is None:
                    groups[key] = [loads(body)]
                else:
                    group.append(loads(body))
        for key, group in groups.items():
            self.rows += len(group)
            for subscription in tuple(series.get(key, ())):
                try:
                    subscription.on_rows(group)
                except Exception:
                    logger.exception("stream hub: a subscription failed on %d rows", len(group))

    def _resync(self, reason: str) -> None:
        self.resyncs += 1
        logger.warning("stream hub: %s; %d subscriptions replay from their frontier", reason, self._subscriptions)
        for members in list(self._series.values()):
            for subscription in tuple(members):
                subscription.resync()


_hubs: dict[int, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop (one per web process: ASGI servers run one loop)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(id(loop))
    if hub is None or hub._loop is not loop:
        hub = Hub()
        hub._loop = loop
        _hubs[id(loop)] = hub
    return hub
