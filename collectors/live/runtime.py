"""The collector runtime: owns shards of the subscriptions through Redis leases and keeps them collected.

One runtime per collector process (hosted by the `collectors` Celery worker, or alone via
`manage.py run_collector`). Two loops decide what it collects:

* leases, every third of the lease TTL: in one Redis script it heartbeats, renews its leases and takes free
  shards up to its fair share (shards ÷ live collectors), releasing extras so a newly started collector gets
  work; a shard it cannot renew is dropped at once, so two collectors never collect one shard. One round
  trip, and independent of the database, so a slow subscription load or an event loop busy with a flood of
  frames does not let the leases lapse;
* subscriptions, every few seconds and at once when the control channel says so: it loads the active
  subscriptions (a thread: the loader may use the Django ORM).

After either, the WebSocket client's channels are set to the subscriptions of the owned shards.

Candle updates go through `Ingest` to the Redis buffer every ~100 ms; every second the status tick sends
what changed about the channels (`ChannelStatusWriter`: rows on a change of state, the last message of the
channels that had one) and the collector's own status. Redis or PostgreSQL being away only delays these
steps: the runtime keeps the last known subscriptions, holds pending candles in memory and catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson

from candles.bars import BarSpec
from collectors.live.buffer import PUT_NEWEST_LUA
from collectors.live.ingest import Ingest
from collectors.live.leases import LEASES_LUA, RELEASE_LUA, leases_balance, shard_of
from collectors.live.status_writer import ChannelStatusWriter, RowState
from collectors.okx.messages import ErrorEvent
from collectors.okx.protocol import Channel, ProtocolError
from collectors.okx.ws import OkxWsClient
from collectors.okx.ws_contract import ConnectionStatus, WsConfig, WsHandler
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class SubscriptionSnapshot:
    channels: frozenset[Channel]
    specs: dict[str, BarSpec]


@dataclass
class RuntimeConfig:
    ws_url: str
    keys: Keys
    shards: int = 8
    # Collectors holding each shard at once (hot standby: 2). Both write the same buffer; the data orders them.
    replicas: int = 1
    host: str = ""
    lease_ttl_s: float = 15.0
    reconcile_s: float = 5.0
    write_interval_s: float = 0.1
    # Closed candles reach the buffer in a burst (every channel of a bar closes at once); the flush is asked
    # for when the burst is over, or this long after it began.
    flush_request_after_s: float = 0.5
    status_interval_s: float = 1.0
    dead_letter_max: int = 100_000
    channels_per_connection: int = 200
    ping_after_s: float = 20.0
    collector_id: str = ""

    def __post_init__(self) -> None:
        if not self.collector_id:
            self.collector_id = f"{socket.gethostname()}:{os.getpid()}"
        if not self.host:
            self.host = socket.gethostname()
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")


class _Handler(WsHandler):
    candles_as_text = True  # the collector stores OKX's numbers; it never computes with them

    def __init__(self, runtime: CollectorRuntime):
        self.runtime = runtime
        self.on_candle = runtime.ingest.accept  # the hot path goes straight to ingest

    def on_protocol_error(self, error: ProtocolError) -> None:
        self.runtime.ingest.dead_letter(error.reason, error.raw)

    def on_subscribed(self, channel: Channel) -> None:
        self.runtime.subscribed_since[channel] = time.time()
        self.runtime.status_writer.changed(channel)

    def on_invalid(self, channel: Channel, error: ErrorEvent) -> None:
        self.runtime.invalid[channel] = f"{error.code} {error.msg}"
        self.runtime.status_writer.changed(channel)

    def on_status(self, status: ConnectionStatus) -> None:
        if status.state == "backoff":
            logger.info("collector shard connection %d: %s", status.shard, status.detail)


class CollectorRuntime:
    def __init__(
        self,
        config: RuntimeConfig,
        *,
        redis_factory: Callable,
        load_snapshot: Callable[[], SubscriptionSnapshot],
        request_flush: Callable[[], object] | None = None,
    ):
        """`request_flush` (blocking; run in a thread) asks for a flush now: given, it is called when closed
        candles are waiting in the buffer, so that they do not wait for the next scheduled flush."""
        self.config = config
        self.request_flush = request_flush
        self._closed_waiting_since: float | None = None
        self.keys = config.keys
        self.redis_factory = redis_factory
        self.load_snapshot = load_snapshot
        self.ingest = Ingest(keys=config.keys)
        self.status_writer = ChannelStatusWriter(config.keys, config.collector_id)
        self.client = OkxWsClient(
            WsConfig(url=config.ws_url, channels_per_connection=config.channels_per_connection,
                     ping_after_s=config.ping_after_s),
            _Handler(self),
        )
        self.snapshot: SubscriptionSnapshot | None = None
        self.owned: set[int] = set()
        self.primary: set[int] = set()
        self._collected: tuple[frozenset[Channel], frozenset[int], frozenset[int]] | None = None
        self.invalid: dict[Channel, str] = {}
        self.subscribed_since: dict[Channel, float] = {}
        self.started_at = time.time()
        self._nudge = asyncio.Event()
        self._stop = asyncio.Event()
        self.redis = None

    # --- main loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        self.redis = self.redis_factory()
        self._put = self.redis.register_script(PUT_NEWEST_LUA)
        self._leases = self.redis.register_script(LEASES_LUA)
        self._release = self.redis.register_script(RELEASE_LUA)
        logger.info("collector %s starting (%d shards)", self.config.collector_id, self.config.shards)
        tasks = [
            asyncio.create_task(self.client.run(), name="okx-ws-client"),
            asyncio.create_task(self._every(self.config.write_interval_s, self._write), name="ingest-writer"),
            asyncio.create_task(self._every(self.config.status_interval_s, self._publish_status), name="status"),
            asyncio.create_task(self._every(self.config.lease_ttl_s / 3, self._keep_leases), name="leases"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._listen_for_nudges(), name="nudges"),
        ]
        waiter = asyncio.create_task((stop or self._stop).wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception():
                logger.error("collector task %s died", task.get_name(), exc_info=task.exception())
        await self.shutdown(tasks)

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self, tasks: list[asyncio.Task]) -> None:
        await self.client.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._write()
        with contextlib.suppress(Exception):
            for shard in list(self.owned):
                await self._release(keys=self.keys.lease_slots(shard, self.config.replicas),
                                    args=[self.config.collector_id])
            await self.redis.zrem(self.keys.collectors, self.config.collector_id)
            await self.redis.delete(self.keys.collector(self.config.collector_id))
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        logger.info("collector %s stopped", self.config.collector_id)

    async def _every(self, interval: float, step: Callable) -> None:
        while True:
            try:
                await step()
            except Exception as exc:  # Redis away: keep going, the step catches up next time
                logger.warning("collector step %s failed: %r", getattr(step, "__name__", step), exc)
            await asyncio.sleep(interval)

    async def _write(self) -> None:
        written = await self.ingest.write(self.redis, self._put, self.config.dead_letter_max)
        if self.request_flush is None:
            return
        now = time.monotonic()
        if written.confirmed:
            if self._closed_waiting_since is None:
                self._closed_waiting_since = now
            if now - self._closed_waiting_since < self.config.flush_request_after_s:
                return  # more of the burst may be on its way
        elif self._closed_waiting_since is None:
            return
        self._closed_waiting_since = None
        self.ingest.counters["flush_requests_sent"] += 1
        # Not awaited: the writer goes on; a failed request only leaves the candles to the scheduled flush.
        asyncio.get_running_loop().run_in_executor(None, self._request_flush)

    def _request_flush(self) -> None:
        try:
            self.request_flush()
        except Exception as exc:
            logger.warning("flush request failed (the scheduled flush will take the candles): %r", exc)

    # --- reconcile ------------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as exc:
                logger.warning("collector reconcile failed: %r", exc)
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), timeout=self.config.reconcile_s)

    async def reconcile(self) -> None:
        try:
            snapshot = await asyncio.to_thread(self.load_snapshot)
            if self.snapshot is not None and snapshot.channels == self.snapshot.channels:
                # Keep the Channel objects already held (by the WebSocket client's sets too); the reload's
                # equal copies, 27,000 tuples every few seconds at full breadth, are freed at once.
                snapshot = SubscriptionSnapshot(channels=self.snapshot.channels, specs=snapshot.specs)
            self.snapshot = snapshot
        except Exception as exc:
            logger.warning("collector could not load subscriptions (%r); keeping the last known set", exc)
        if self.snapshot is None:
            return
        self.ingest.specs = self.snapshot.specs
        self._collect_owned()

    async def _keep_leases(self) -> None:
        await self._balance_leases()
        self._collect_owned()

    def _collect_owned(self) -> None:
        """Point the WebSocket client at the known subscriptions of the owned shards."""
        if self.snapshot is None:
            return
        subscribed, owned = self.snapshot.channels, frozenset(self.owned)
        primary = owned if self.config.replicas == 1 else frozenset(self.primary)
        if self._collected is not None and self._collected[0] is subscribed and self._collected[1:] == (owned,
                                                                                                        primary):
            return  # the same subscriptions (`reconcile` keeps the object) and shards: nothing to move
        self._collected = (subscribed, owned, primary)
        shards = self.config.shards
        carried = frozenset(c for c in subscribed if shard_of(c, shards) in owned)
        self.client.set_channels(carried)
        # With replicas, the status rows of a channel come from one of its collectors (the primary), so two
        # views (one reconnecting, one live) never take turns in the row; both keep its last-message times.
        rows = carried if primary == owned else frozenset(c for c in carried if shard_of(c, shards) in primary)
        self.status_writer.carry(carried, subscribed, rows=rows)

    async def _balance_leases(self) -> None:
        cid = self.config.collector_id
        change = await leases_balance(self._leases, self.keys, collector_id=cid, shards=self.config.shards,
                                      ttl_s=self.config.lease_ttl_s, held=self.owned,
                                      replicas=self.config.replicas, host=self.config.host)
        for shard in change.lost:
            logger.warning("collector %s lost the lease of shard %d", cid, shard)
        for shard in change.released:
            logger.info("collector %s released shard %d to balance", cid, shard)
        for shard in change.taken:
            logger.info("collector %s took shard %d", cid, shard)
        self.owned = set(change.owned)
        self.primary = set(change.primary)
        # OKX counts new connections per IP: collectors of one host (replicas of a hot standby on one machine,
        # or a second worker) split its limit rather than each taking all of it.
        self.client.share_connection_limit(change.colocated)

    async def _listen_for_nudges(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.keys.control)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._nudge.set()
            except Exception as exc:
                logger.warning("collector control channel lost (%r); retrying", exc)
                await asyncio.sleep(1.0)

    # --- status ---------------------------------------------------------------------------------

    def _row_state(self, channel: Channel) -> RowState:
        error = self.invalid.get(channel)
        if error is not None:
            return "invalid", error
        return ("subscribed" if channel in self.subscribed_since else "pending"), None

    async def _publish_status(self) -> None:
        """The status tick: what changed about the channels, and this collector's status and counters.

        Its cost follows what changed: channels taken up, acknowledged, refused or dropped, and channels that
        had a message since the last tick; the collector's own status is a few fields per connection.
        """
        cid = self.config.collector_id
        statuses = self.client.statuses()
        reconnects = sum(s.reconnects for s in statuses)
        collector = {
            "id": cid, "host": socket.gethostname(), "pid": os.getpid(), "started_at": self.started_at,
            "heartbeat_at": time.time(),  # "shards" is written by LEASES_LUA, with the leases themselves
            "connections": orjson.dumps([asdict(s) for s in statuses]),
            "messages": sum(s.messages for s in statuses), "reconnects": reconnects,
            "errors": sum(s.errors for s in statuses), "channels": sum(s.channels for s in statuses),
        }
        counters = self.ingest.counters
        deltas = {name: value for name, value in counters.items() if value}
        seen, confirmed = self.ingest.take_changes()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                queued = self.status_writer.queue(pipe, state_of=self._row_state, tracks=self.ingest.channels,
                                                  seen=seen, confirmed=confirmed)
                pipe.hset(self.keys.collector(cid), mapping=collector)
                pipe.expire(self.keys.collector(cid), int(3 * self.config.lease_ttl_s) + 1)
                pipe.zadd(self.keys.collectors, {cid: time.time()})
                for name, value in deltas.items():
                    pipe.hincrby(self.keys.counters, name, value)
                try:
                    await pipe.execute()
                except BaseException:
                    self.status_writer.unsent(queued)
                    raise
        except BaseException:
            self.ingest.give_back_changes(seen, confirmed)
            raise
        self.status_writer.sent(queued)
        for name in deltas:
            counters[name] -= deltas[name]
