"""One shard's connection to OKX's business WebSocket: a link at a time (`Link`), kept open, subscribed and
watched by its `ShardConnection`.

A shard reconnects with capped exponential backoff, subscribes its channels within the link's request budget,
settles acks and errors (60018 marks a channel invalid through the client; 60014 slows the requests), pings
after silence and drops a link that does not answer, and on notice 64008 opens the replacement and subscribes
it before closing the old link. New links come from the client (`OkxWsClient._open`), whose gate paces every
connection of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosedError, WebSocketException

from collectors.okx.candle_rows import CandleText, CandleUpdate
from collectors.okx.fast_lane import FastLaneConnection, drop_message
from collectors.okx.messages import (
    ErrorEvent,
    Notice,
    Request,
    SubscribeAck,
    UnsubscribeAck,
    build_requests,
    parse_message,
)
from collectors.okx.pacing import SlidingWindow, backoff_delay
from collectors.okx.protocol import Channel, ProtocolError
from collectors.okx.ws_contract import (
    ERROR_TOO_FREQUENT,
    INVALID_CHANNEL_CODES,
    NOTICE_SERVICE_UPGRADE,
    ConnectionStatus,
)

if TYPE_CHECKING:
    from collectors.okx.ws import OkxWsClient

# The client's logger: a shard's lines are the client's, as they were before the shard had a module of its own.
logger = logging.getLogger("collectors.okx.ws")


@dataclass(eq=False)
class Link:
    """One physical WebSocket connection of a shard."""

    ws: Any
    opened_at: float
    budget: SlidingWindow
    conn_id: str | None = None
    subscribed: set[Channel] = field(default_factory=set)
    pending: dict[str, Request] = field(default_factory=dict)
    # Frames received; the watchdog samples it instead of the reader reading a clock per frame.
    rx: int = 0
    last_rx: float = 0.0
    replaced: bool = False
    reader: asyncio.Task | None = None
    all_acked: asyncio.Event = field(default_factory=asyncio.Event)


class ShardConnection:
    def __init__(self, client: OkxWsClient, index: int):
        self.client = client
        self.index = index
        self.assigned: set[Channel] = set()
        self.link: Link | None = None
        self.state = "connecting"
        self.detail = ""
        # Frames of links already closed; the live link counts its own (`Link.rx`).
        self.messages_before = 0
        self.reconnects = self.errors = 0
        # The replacement link while a 64008 handover subscribes it.
        self.incoming: Link | None = None
        self._task: asyncio.Task | None = None
        self._handover: asyncio.Task | None = None
        self._closing = False
        self._background: set[asyncio.Task] = set()

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"okx-ws-shard-{self.index}")

    def close(self) -> None:
        self._closing = True
        readers = [link.reader for link in (self.link, self.incoming) if link is not None]
        for task in (self._task, self._handover, *self._background, *readers):
            if task is not None:
                task.cancel()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._task, self._handover) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.link is not None:
            await self._close_link(self.link)
        self._set_state("closed")

    def add(self, channels: Iterable[Channel]) -> None:
        new = set(channels) - self.assigned
        self.assigned |= new
        for link in self._live_links():
            if new:
                self._spawn(self._send(link, "subscribe", new))

    def remove(self, channels: Iterable[Channel]) -> None:
        gone = set(channels) & self.assigned
        self.assigned -= gone
        for link in self._live_links():
            if gone & link.subscribed:
                self._spawn(self._send(link, "unsubscribe", gone & link.subscribed))

    def _live_links(self) -> list[Link]:
        """Links that already sent their subscriptions: later changes must be sent to them too."""
        links = [self.link, self.incoming]
        return [link for link in links if link is not None and link.reader is not None and not link.reader.done()]

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            if self._handover is not None and not self._handover.done():
                await asyncio.wait({self._handover})
            link = self.link
            if link is None or link.reader is None or link.reader.done():
                try:
                    link = await self._connect()
                except (OSError, WebSocketException, TimeoutError) as exc:
                    self.errors += 1
                    await self._backoff(attempt, f"connect failed: {exc!r}")
                    attempt += 1
                    continue
                self.link = link
                self._check_all_acked(link)
            await asyncio.wait({link.reader})
            if self._closing:
                break
            if link.replaced:
                continue  # the handover installed its replacement already
            lived = self.client.clock() - link.opened_at
            attempt = 0 if lived >= self.client.config.stable_after_s else attempt + 1
            self.reconnects += 1
            await self._backoff(attempt, "connection lost")

    async def _backoff(self, attempt: int, why: str) -> None:
        cfg = self.client.config
        delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_cap_s, self.client.rng)
        self._set_state("backoff", f"{why}; retrying in {delay:.1f} s")
        await self.client.sleep(delay)

    async def _connect(self) -> Link:
        self._set_state("connecting")
        client = self.client
        ws = await client._open()
        link = Link(ws=ws, opened_at=client.clock(),
                     budget=SlidingWindow(client.config.requests_per_hour, 3600.0, client.clock, client.sleep))
        link.last_rx = client.clock()
        link.reader = asyncio.get_running_loop().create_task(self._read(link), name=f"okx-ws-read-{self.index}")
        self._spawn(self._watchdog(link))
        self._set_state("subscribing")
        await self._send(link, "subscribe", self.assigned)
        return link

    async def _close_link(self, link: Link) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.ws.close(), timeout=2)
        if link.reader is not None:
            link.reader.cancel()
            await asyncio.gather(link.reader, return_exceptions=True)

    # --- requests ---------------------------------------------------------------------------------

    async def _send(self, link: Link, op: str, channels: Iterable[Channel]) -> None:
        channels = sorted(channels)
        if not channels:
            self._check_all_acked(link)
            return
        for request in build_requests(op, channels, args_per_request=self.client.config.args_per_request):
            await link.budget.wait()
            link.pending[request.request_id] = request
            try:
                await link.ws.send(request.payload.decode())
            except (OSError, WebSocketException):
                return  # the reader sees the drop and the shard reconnects and resubscribes

    def _check_all_acked(self, link: Link) -> None:
        if not any(r.op == "subscribe" for r in link.pending.values()) and self.assigned <= link.subscribed | set(
            self.client.invalid
        ):
            link.all_acked.set()
            if link is self.link and self.state == "subscribing":
                self._set_state("open")

    # --- reading ----------------------------------------------------------------------------------

    async def _read(self, link: Link) -> None:
        handler = self.client.handler
        on_candle = handler.on_candle
        text = handler.candles_as_text
        candle_class = CandleText if text else CandleUpdate

        def receive(raw: str | bytes) -> None:  # the hot path: one call per frame
            link.rx += 1
            if raw == "pong":
                return
            try:
                events = parse_message(raw, text=text)
            except ProtocolError as error:
                self.errors += 1
                handler.on_protocol_error(error)
                return
            for event in events:
                if event.__class__ is candle_class:
                    on_candle(event, raw)
                else:
                    self._on_event(link, event)

        ws = link.ws
        try:
            if isinstance(ws, FastLaneConnection):
                ws.start_fast_lane(receive)
                await ws.wait_closed()
                if isinstance(ws.protocol.close_exc, ConnectionClosedError):
                    self.detail = f"read failed: {ws.protocol.close_exc!r}"
            else:  # a connection from some other factory
                async for raw in ws:
                    receive(raw)
        except (OSError, WebSocketException) as exc:
            self.detail = f"read failed: {exc!r}"
        finally:
            if isinstance(ws, FastLaneConnection):
                ws.start_fast_lane(drop_message)  # a link whose reader stopped delivers nothing more
            self.messages_before += link.rx
            link.rx = 0

    async def _watchdog(self, link: Link) -> None:
        """Ping after `ping_after_s` without a frame; drop the link if the ping gets no answer in time."""
        cfg = self.client.config
        clock = self.client.clock
        tick = max(0.05, min(cfg.ping_after_s, cfg.pong_timeout_s) / 5)
        seen = -1
        ping_sent_at: float | None = None
        while link.reader is not None and not link.reader.done():
            now = clock()
            if link.rx != seen:
                seen, link.last_rx, ping_sent_at = link.rx, now, None
            elif ping_sent_at is not None:
                if now - ping_sent_at >= cfg.pong_timeout_s:
                    self.errors += 1
                    self.detail = "no pong: dropping the connection"
                    logger.warning("shard %d: no pong in %.1f s; reconnecting", self.index, cfg.pong_timeout_s)
                    transport = getattr(link.ws, "transport", None)
                    if transport is not None:
                        transport.abort()  # a dead peer would never answer a closing handshake
                    return
            elif now - link.last_rx >= cfg.ping_after_s:
                ping_sent_at = now
                try:
                    await link.ws.send("ping")
                except (OSError, WebSocketException):
                    return
            await self.client.sleep(tick)

    def _on_event(self, link: Link, event: Any) -> None:
        if isinstance(event, SubscribeAck):
            link.conn_id = event.conn_id or link.conn_id
            link.subscribed.add(event.channel)
            self._settle(link, event.request_id, event.channel)
            if event.channel in self.assigned:
                self.client.handler.on_subscribed(event.channel)
            self._check_all_acked(link)
        elif isinstance(event, UnsubscribeAck):
            link.subscribed.discard(event.channel)
            self._settle(link, event.request_id, event.channel)
        elif isinstance(event, ErrorEvent):
            self._on_error(link, event)
        elif (isinstance(event, Notice) and event.code == NOTICE_SERVICE_UPGRADE
              and link is self.link and not link.replaced):
            logger.info("shard %d: notice %s, handing over to a new connection", self.index, event.code)
            self._handover = asyncio.get_running_loop().create_task(self._hand_over(link))

    def _settle(self, link: Link, request_id: str | None, channel: Channel) -> None:
        request = link.pending.get(request_id) if request_id else None
        if request is None:
            request = next((r for r in link.pending.values() if channel in r.channels), None)
        if request is None:
            return
        done = link.subscribed if request.op == "subscribe" else set(request.channels) - link.subscribed
        if all(c in done or c in self.client.invalid for c in request.channels):
            link.pending.pop(request.request_id, None)

    def _on_error(self, link: Link, error: ErrorEvent) -> None:
        self.errors += 1
        request = link.pending.pop(error.request_id, None) if error.request_id else None
        if request is None and link.pending:
            # OKX does not always echo the id; it answers requests in order, so blame the oldest.
            request = link.pending.pop(next(iter(link.pending)))
        self.client.handler.on_error(error)
        if request is None:
            logger.warning("shard %d: OKX error %s %s", self.index, error.code, error.msg)
            return
        if error.code in INVALID_CHANNEL_CODES:
            if len(request.channels) == 1:
                self.client._mark_invalid(request.channels[0], error)
                self._check_all_acked(link)
            else:
                # One bad arg may fail a whole request: ask again one channel per request to find it.
                self._spawn(self._send_singly(link, request))
        else:
            delay = 1.0 if error.code != ERROR_TOO_FREQUENT else 5.0
            self._spawn(self._retry_later(link, request, delay))

    async def _send_singly(self, link: Link, request: Request) -> None:
        for channel in request.channels:
            if channel in self.assigned and channel not in link.subscribed:
                await self._send(link, request.op, [channel])

    async def _retry_later(self, link: Link, request: Request, delay: float) -> None:
        await self.client.sleep(delay)
        if link is self.link and not link.replaced:
            wanted = [c for c in request.channels if (c in self.assigned) == (request.op == "subscribe")]
            await self._send(link, request.op, wanted)

    async def _hand_over(self, old: Link) -> None:
        """Make before break: the replacement is subscribed before the old link is closed."""
        self._set_state("handover", "notice 64008: opening the replacement connection")
        attempt = 0
        while not self._closing:
            try:
                new = await self._connect()
                self.incoming = new
                break
            except (OSError, WebSocketException, TimeoutError) as exc:
                self.errors += 1
                await self._backoff(attempt, f"handover connect failed: {exc!r}")
                attempt += 1
        else:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(new.all_acked.wait(), timeout=self.client.config.handover_timeout_s)
        old.replaced = True
        self.link, self.incoming = new, None
        self.reconnects += 1
        self._set_state("open" if new.all_acked.is_set() else "subscribing")
        await self._close_link(old)

    # --- status -----------------------------------------------------------------------------------

    def _set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        self.detail = detail
        self.client.handler.on_status(self.status())

    def status(self) -> ConnectionStatus:
        link = self.link
        return ConnectionStatus(
            shard=self.index, state=self.state, conn_id=link.conn_id if link else None,
            channels=len(self.assigned), subscribed=len(link.subscribed) if link else 0,
            messages=self.messages_before + (link.rx if link else 0), reconnects=self.reconnects,
            errors=self.errors,
            last_message_at=self.client.wall_clock() - (self.client.clock() - link.last_rx) if link else None,
            detail=self.detail,
        )

