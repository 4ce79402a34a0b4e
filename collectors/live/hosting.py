"""Running the collector runtime inside a Django process: its configuration, its subscription loader,
and a thread with its own event loop (what the Celery worker bootstep and `run_collector` start)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from candles.models import Subscription, Timeframe
from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
from collectors.okx.protocol import Channel
from collectors.shared.connections import async_redis_client, pipeline_keys

logger = logging.getLogger(__name__)


def load_subscription_snapshot() -> SubscriptionSnapshot:
    """Active subscriptions and the bar specs (runs in a worker thread of the runtime)."""
    close_old_connections()  # a long-lived thread must not keep a connection the server has dropped
    try:
        rows = Subscription.objects.filter(is_active=True).values_list(
            "instrument__inst_id", "timeframe__code", "instrument__price")
        # Interned: the database returns a string per row, so one instrument's id came 27 times (once per
        # bar) and each bar's code once per instrument; interned, the channels share one copy of each.
        channels = frozenset(Channel(sys.intern(inst_id), sys.intern(bar), sys.intern(price))
                             for inst_id, bar, price in rows)
        specs = {tf.code: tf.spec for tf in Timeframe.objects.all()}
    finally:
        close_old_connections()
    return SubscriptionSnapshot(channels=channels, specs=specs)


def runtime_from_settings(collector_id: str = "") -> CollectorRuntime:
    config = RuntimeConfig(
        ws_url=settings.OKX_WS_URL, keys=pipeline_keys(), shards=settings.COLLECTOR_SHARDS,
        replicas=settings.COLLECTOR_REPLICAS, host=settings.COLLECTOR_HOST,
        lease_ttl_s=settings.COLLECTOR_LEASE_TTL_S, reconcile_s=settings.COLLECTOR_RECONCILE_S,
        dead_letter_max=settings.DEAD_LETTER_MAX,
        channels_per_connection=settings.COLLECTOR_CHANNELS_PER_CONNECTION,
        ping_after_s=settings.COLLECTOR_PING_AFTER_S, collector_id=collector_id,
    )
    return CollectorRuntime(config, redis_factory=async_redis_client, load_snapshot=load_subscription_snapshot,
                            request_flush=request_flush)


def request_flush() -> None:
    """Queue a flush now (closed candles are waiting); it expires like the scheduled ones."""
    from collectors.tasks import flush_buffer

    flush_buffer.apply_async(kwargs={"requested": True, "requested_at": time.time()}, expires=settings.FLUSH_INTERVAL_S)


class CollectorThread(threading.Thread):
    """The runtime on its own event loop, so the hosting process (a Celery worker) stays free."""

    def __init__(self, collector_id: str = ""):
        super().__init__(name="okx-collector", daemon=True)
        self.collector_id = collector_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtime: CollectorRuntime | None = None
        self._ready = threading.Event()

    def run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._runtime = runtime_from_settings(self.collector_id)
            self._ready.set()
            self._loop.run_until_complete(self._runtime.run())
        except Exception:
            logger.exception("collector runtime crashed")
        finally:
            self._ready.set()
            self._loop.close()

    def stop(self, timeout: float = 15.0) -> None:
        self._ready.wait(timeout)
        if self._loop is not None and self._runtime is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._runtime.stop)
        self.join(timeout)
