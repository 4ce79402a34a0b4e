"""The WebSocket endpoint `ws://HOST/api/v1/stream` (Django Channels): the protocol of candles/stream/protocol.py
over one connection, its subscriptions fed by the process's hub."""

from __future__ import annotations

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from candles.stream import protocol
from candles.stream.access import may_read
from candles.stream.hub import get_hub
from candles.stream.outbox import Outbox
from candles.stream.reads import newest_open_ms, read_page, resolve_series
from candles.stream.subscription import Subscription

logger = logging.getLogger(__name__)

# In the loop's thread pool, not Django's one thread for sync code: replays of many clients read in parallel
# (each thread its own connection), and never queue behind the HTTP views this process also serves.
_resolve = database_sync_to_async(resolve_series, thread_sensitive=False)
_newest = database_sync_to_async(newest_open_ms, thread_sensitive=False)
_read = database_sync_to_async(read_page, thread_sensitive=False)


class StreamConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.starting: set[asyncio.Task] = set()
        self.outbox = Outbox(send=self._write, on_full=self._too_slow, limit=settings.STREAM_CLIENT_QUEUE)
        self.writer = asyncio.create_task(self.outbox.run(), name="stream writer")
        self.hub = get_hub()
        self.allowed = await may_read(self.scope)
        if not self.allowed:
            await self._write(protocol.error(
                protocol.AUTHENTICATION_REQUIRED,
                "Reads need authentication here: send Authorization: Token <key> (or ?token=<key>) on the handshake."))
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code: int) -> None:
        for task in getattr(self, "starting", ()):
            task.cancel()
        for subscription in getattr(self, "subscriptions", {}).values():
            self._drop(subscription)
        if hasattr(self, "outbox"):
            self.outbox.close()
            self.writer.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.allowed or self.outbox.closed:
            return
        text = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if text == "ping":
            self.outbox.put_live(b"pong")
            return
        try:
            request = protocol.parse_request(text)
        except protocol.ProtocolError as exc:
            self.outbox.put_live(protocol.error(exc.code, str(exc), exc.arg))
            return
        for arg in request.args:
            if request.op == "subscribe":
                await self._subscribe(arg)
            else:
                self._unsubscribe(arg)

    # --- subscribe / unsubscribe ---------------------------------------------------------------------------

    async def _subscribe(self, arg: protocol.StreamArg) -> None:
        if arg.key not in self.subscriptions and len(self.subscriptions) >= settings.STREAM_MAX_SUBSCRIPTIONS:
            self.outbox.put_live(protocol.error(
                protocol.TOO_MANY_SUBSCRIPTIONS,
                f"at most {settings.STREAM_MAX_SUBSCRIPTIONS} subscriptions a connection", arg.echo()))
            return
        try:
            series = await _resolve(arg)
        except protocol.ProtocolError as exc:
            self.outbox.put_live(protocol.error(exc.code, str(exc), exc.arg))
            return
        previous = self.subscriptions.pop(arg.key, None)
        if previous is not None:  # subscribing again starts over from the new since
            self._drop(previous)
        subscription = Subscription(arg=arg, series=series, outbox=self.outbox, read=_read,
                                    page_size=settings.STREAM_REPLAY_PAGE, pending_max=settings.STREAM_PENDING_MAX)
        self.subscriptions[arg.key] = subscription
        # Joined before anything is read: rows written from here on are kept for it.
        self.hub.join(series.source_key, subscription)
        self.outbox.put_live(protocol.event("subscribe", arg))
        task = asyncio.create_task(self._begin(subscription))
        self.starting.add(task)
        task.add_done_callback(self.starting.discard)

    async def _begin(self, subscription: Subscription) -> None:
        try:
            await self.hub.await_feed()
            start_ms = subscription.arg.since_ms
            if start_ms is None:
                # No since: the newest candle (the current one, as OKX pushes on subscribe), then live.
                start_ms = await _newest(subscription.series)
                if start_ms is None:
                    start_ms = subscription.series.spec.floor(int(time.time() * 1000))
            if not subscription.closed:
                subscription.start(start_ms)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("stream: cannot start %s %s", subscription.arg.symbol, subscription.arg.timeframe)
            self.outbox.put_live(protocol.error(protocol.INTERNAL_ERROR, "the subscription could not start",
                                                subscription.arg.echo()))

    def _unsubscribe(self, arg: protocol.StreamArg) -> None:
        subscription = self.subscriptions.pop(arg.key, None)
        if subscription is not None:
            self._drop(subscription)
        self.outbox.put_live(protocol.event("unsubscribe", arg))

    def _drop(self, subscription: Subscription) -> None:
        subscription.close()
        self.hub.leave(subscription.series.source_key, subscription)

    # --- writing -------------------------------------------------------------------------------------------

    async def _write(self, frame: bytes) -> None:
        await self.send(text_data=frame.decode())

    def _too_slow(self, waiting: int) -> None:
        logger.warning("stream: closing a client that reads too slowly (%d frames waiting)", waiting)
        for subscription in self.subscriptions.values():
            self._drop(subscription)
        self.subscriptions.clear()
        # The writer may be stuck on a full socket: it goes, and the close frame takes its place.
        self.writer.cancel()
        self.closing = asyncio.create_task(self.close(code=protocol.CLOSE_SLOW_CONSUMER,
                                                      reason=f"slow consumer: {waiting} frames waiting"))


class NoSuchStreamConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: one error frame, then close (a route miss would otherwise end as a crash)."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=protocol.error(
            "NOT_FOUND", f"No WebSocket at {self.scope.get('path')!r}; the stream is /api/v1/stream.").decode())
        await self.close(code=4404)
