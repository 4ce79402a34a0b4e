"""An asyncio client for OKX's business WebSocket that keeps a set of candle channels subscribed.

Channels are spread over shards of at most `channels_per_connection`; each shard owns one live
connection (a *link*) at a time. Around it:

* every new connection (first ones, reconnects, 64008 replacements) passes one gate of the client
  (`collectors.okx.pacing`): starts an even `connection_spacing` apart, and none while OKX's
  `connections_per_second` are in flight or were answered within the last 1.25 s, so that OKX never counts
  more than its limit in a second however late they reach it; each link keeps within `requests_per_hour`
  subscribe/unsubscribe requests;
* a watchdog sends OKX's text `ping` after `ping_after_s` of silence and drops the link if nothing answers
  within `pong_timeout_s` (reading stays a bare `async for`, so the hot path pays no per-frame timer);
* any drop reconnects with capped exponential backoff and jitter and subscribes everything again;
* notice 64008 opens the replacement link and subscribes it *before* the old one is closed, so no push
  is missed (duplicates during the overlap are harmless: the newest version of a candle wins downstream);
* error 60018 (channel or instrument does not exist) marks the channel invalid: it is reported once, with
  the `Channel` (its price kind included: OKX answers an instrument id on `index-candle*`, or a spot pair on
  `mark-price-candle*`, with 60018), and not subscribed again until `clear_invalid` is called;
* every state change and the counters go to the handler's `on_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError, InvalidStatus, WebSocketException
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State

from collectors.okx.messages import (
    DEFAULT_ARGS_PER_REQUEST,
    CandleText,
    CandleUpdate,
    Channel,
    ErrorEvent,
    Notice,
    ProtocolError,
    Request,
    SubscribeAck,
    UnsubscribeAck,
    build_requests,
    check_subscribable,
    parse_message,
)
from collectors.okx.pacing import WINDOW_MARGIN_S, ConnectionGate

logger = logging.getLogger(__name__)

NOTICE_SERVICE_UPGRADE = "64008"
# Error codes that say a channel itself is wrong: retrying it can only fail again.
INVALID_CHANNEL_CODES = frozenset({"60018", "64001", "64002", "60012", "60013"})
ERROR_TOO_FREQUENT = "60014"


@dataclass(frozen=True, slots=True)
class WsConfig:
    url: str
    channels_per_connection: int = 200
    connections_per_second: int = 3  # OKX's limit on new connections per IP, counted where they arrive
    # Room left under the limit by the even pace of starts: see `connection_spacing`.
    connect_jitter_margin_s: float = 0.5
    requests_per_hour: int = 480
    args_per_request: int = DEFAULT_ARGS_PER_REQUEST
    ping_after_s: float = 20.0
    pong_timeout_s: float = 8.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    # A link that stayed up this long resets the backoff; shorter lives keep growing it.
    stable_after_s: float = 30.0
    connect_timeout_s: float = 10.0  # to open TCP (and TLS): until then OKX has no upgrade request to count
    # How long an upgrade request already sent waits for its answer. A server may count it whenever it reads
    # it, even after we gave up and closed, so giving up early lets a late arrival crowd OKX's window.
    answer_timeout_s: float = 60.0
    # How long a 64008 handover waits for the replacement's acks before switching anyway.
    handover_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0 < self.ping_after_s < 30:
            raise ValueError("ping_after_s must be between 0 and 30: OKX closes silent connections after 30 s")
        if self.channels_per_connection < 1 or self.connections_per_second < 1 or self.requests_per_hour < 1:
            raise ValueError("channels_per_connection, connections_per_second and requests_per_hour must be ≥ 1")
        if self.connect_jitter_margin_s < 0:
            raise ValueError("connect_jitter_margin_s must not be negative")
        if not 0 < self.connect_timeout_s <= self.answer_timeout_s:
            raise ValueError("connect_timeout_s must be positive and answer_timeout_s at least as long")


def connection_spacing(config: WsConfig) -> float:
    """Seconds between two connection starts: an even pace with room under OKX's limit.

    The limit itself is kept by the gate's answered-connection window (`collectors.okx.pacing`), whatever the
    delays. The spacing keeps the pace steady below it, so that starts never come `connections_per_second`
    at once and the window only decides when answers are slow: at (1 + J) / N, any N + 1 starts span 1 + J
    seconds. With OKX's 3 per second and J = 0.5 s: one start every 0.5 s, 90 connections (27,000 channels
    at 300 each) in about 45 s.
    """
    return (1.0 + config.connect_jitter_margin_s) / config.connections_per_second


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    shard: int
    state: str  # connecting, subscribing, open, handover, backoff, closed
    conn_id: str | None
    channels: int
    subscribed: int
    messages: int
    reconnects: int
    errors: int
    last_message_at: float | None  # wall-clock seconds
    detail: str = ""


class WsHandler:
    """What the client tells its owner. Override what you need; `on_candle` is the hot path: keep it fast."""

    # True: candles arrive as CandleText (numbers checked, kept as OKX's text, no Decimal built), for an
    # owner that stores them rather than computes with them.
    candles_as_text: bool = False

    def on_candle(self, update: CandleUpdate | CandleText, raw: str | bytes) -> None:
        pass

    def on_protocol_error(self, error: ProtocolError) -> None:
        pass

    def on_subscribed(self, channel: Channel) -> None:
        """After every (re)subscription of a channel: the moment to look for a gap behind it."""

    def on_invalid(self, channel: Channel, error: ErrorEvent) -> None:
        pass

    def on_error(self, error: ErrorEvent) -> None:
        pass

    def on_status(self, status: ConnectionStatus) -> None:
        pass


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with equal jitter: in [d/2, d] for d = min(cap, base·2^attempt)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return ceiling / 2 + rng() * ceiling / 2


class SlidingWindow:
    """At most `limit` events in any `period` seconds; `wait()` sleeps until the next one is allowed."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float], sleep: Callable[[float], Awaitable]):
        self.limit, self.period = limit, period
        self._clock, self._sleep = clock, sleep
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._held_until = 0.0

    def hold(self, seconds: float) -> None:
        """Let nothing through for `seconds` from now (the other side said we went too fast)."""
        self._held_until = max(self._held_until, self._clock() + seconds)

    async def wait(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._held_until:
                    await self._sleep(self._held_until - now)
                    continue
                while self._times and now - self._times[0] >= self.period:
                    self._times.popleft()
                if len(self._times) < self.limit:
                    self._times.append(now)
                    return
                await self._sleep(self.period - (now - self._times[0]))


Connect = Callable[..., Awaitable[Any]]

_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


# How long no new connection starts after OKX refused one with HTTP 429 (its window is one second). The gate
# keeps this client's own starts under the limit; a refusal means someone else on the IP connects too.
REFUSED_HOLD_S = 1.0

# Bytes read from a connection per turn of the event loop (asyncio's default: 256 KiB).
FAST_LANE_READ_BYTES = 16 * 1024


def _ignore(message: str | bytes) -> None:
    pass


class FastLaneConnection(ClientConnection):
    """websockets' client connection with a fast lane for the frames OKX sends by the thousand.

    Reading one message through websockets costs about 4 µs (a parser generator, a Frame, the message queue,
    a task switch); a candle push is worth less than that to parse. Here a complete, unfragmented,
    unmasked text frame on an open connection is decoded in `data_received` and handed to the callback given
    to `start_fast_lane` at once (about 0.8 µs). Every other frame (control frames, fragments, binary,
    oversized, anything odd) is fed whole to websockets' own protocol, whose data frames come back through
    `process_event` to the same callback: messages keep their order, and websockets keeps the protocol
    (closing handshake, answers to pings, size limits, errors). Only whole frames ever reach the protocol,
    so its parser and this one never disagree about where a frame starts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_message: Callable[[str | bytes], None] | None = None
        self._early: list[str | bytes] = []  # messages before start_fast_lane
        self._head = b""  # the handshake response, while it arrives
        self._rest = b""  # the start of a frame whose end has not arrived
        self._fragments: tuple[Opcode, list[bytes]] | None = None
        # From connection_made on, the upgrade request may be on its way: the server can count it whenever it
        # reads it, even after we gave up (see OkxWsClient._open).
        self.request_may_be_out = False
        limits = [size for size in (self.protocol.max_message_size, self.protocol.max_fragment_size) if size]
        self._max_fast = min(limits) if limits else 2**63

    def connection_made(self, transport: Any) -> None:
        # asyncio reads up to 256 KiB per ready socket per turn of the event loop: with a dozen busy
        # connections one turn handled seconds' worth of frames, and every other task of the loop (the
        # collector's buffer writes, its Redis replies, its timers) waited that long. Smaller reads keep a
        # turn short; at OKX's rates they cost a few hundred more recv() calls a second.
        if hasattr(transport, "max_size"):
            transport.max_size = FAST_LANE_READ_BYTES
        self.request_may_be_out = True
        super().connection_made(transport)

    def start_fast_lane(self, on_message: Callable[[str | bytes], None]) -> None:
        """Deliver every message to `on_message` from now on (those already received first)."""
        early, self._early = self._early, []
        self._on_message = on_message
        for message in early:
            on_message(message)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol.state is State.CONNECTING:
            # The protocol gets the handshake response alone: frames right behind it go through the lane.
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                super().data_received(data)
                return
            cut = len(data) - (len(self._head) - end - 4)
            self._head = b""
            super().data_received(data[:cut])
            data = data[cut:]
            if not data:
                return
        if self._rest:
            data, self._rest = self._rest + data, b""
        pos, size = 0, len(data)
        while size - pos >= 2:
            if protocol.state is not State.OPEN:
                super().data_received(data[pos:])  # closing: the protocol decides what is left
                return
            first, second = data[pos], data[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(data[start:start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(data[start:start + 8], "big")
                start += 8
            if second & 0x80:
                start += 4  # a masked frame from a server is an error: the protocol will say so
            end = start + length
            if end > size:
                break
            # 0x81: FIN, no extension bits, text.
            if first == 0x81 and not second & 0x80 and self._fragments is None and length <= self._max_fast:
                try:
                    text = data[start:end].decode()
                except UnicodeDecodeError:
                    super().data_received(data[pos:end])  # comes back to process_event, which fails it
                else:
                    self._deliver(text)
            else:
                super().data_received(data[pos:end])
            pos = end
        if pos < size:
            self._rest = data[pos:]

    def process_event(self, event: Any) -> None:
        if self.response is None or not isinstance(event, Frame) or event.opcode not in _DATA_OPCODES:
            super().process_event(event)  # the handshake, pings, pongs, close
            return
        if event.opcode is Opcode.CONT:
            if self._fragments is None:
                return  # the protocol refuses a stray continuation itself
            self._fragments[1].append(event.data)
        else:
            self._fragments = (event.opcode, [event.data])
        if not event.fin:
            return
        opcode, parts = self._fragments
        self._fragments = None
        payload = b"".join(parts)
        if opcode is Opcode.BINARY:
            self._deliver(payload)
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError as exc:
            self.protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            self.send_data()
            return
        self._deliver(text)

    def _deliver(self, message: str | bytes) -> None:
        if self._on_message is None:
            self._early.append(message)
        else:
            self._on_message(message)



class OkxWsClient:
    """Keeps `channels` subscribed on OKX's business WebSocket and feeds every event to `handler`."""

    def __init__(
        self,
        config: WsConfig,
        handler: WsHandler,
        *,
        connect: Connect = websockets.connect,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ):
        self.config = config
        self.handler = handler
        self._connect_fn = connect
        self.clock, self.wall_clock, self.sleep, self.rng = clock, wall_clock, sleep, rng
        # One gate for every connection of the client: first connections, reconnects after a drop (a storm
        # of them when everything dropped at once) and 64008 replacements all queue here, in order.
        self._gate = ConnectionGate(limit=config.connections_per_second, window_s=1.0 + WINDOW_MARGIN_S,
                                    spacing_s=connection_spacing(config), clock=clock, sleep=sleep)
        self._shards: list[_Shard] = []
        self._shard_ids = 0
        self.invalid: dict[Channel, ErrorEvent] = {}
        self._running = False
        self._stopped = asyncio.Event()
        self._closing: set[asyncio.Task] = set()

    # --- the channel set -----------------------------------------------------------------------

    @property
    def channels(self) -> set[Channel]:
        return {c for shard in self._shards for c in shard.assigned}

    def share_connection_limit(self, parts: int) -> None:
        """`parts` clients share this IP (OKX's new-connection limit is per IP): each starts at most its share,
        `connections_per_second // parts` a second (at least one), evenly spaced. Applies from the next start."""
        limit = max(1, self.config.connections_per_second // max(1, parts))
        self._gate.limit = limit
        self._gate.spacing_s = (1.0 + self.config.connect_jitter_margin_s) / limit

    def set_channels(self, channels: Iterable[Channel]) -> None:
        """Make `channels` the subscribed set (minus invalid ones), without reconnecting anything.

        Raises ValueError, changing nothing, if one of them is a channel OKX does not have (1s mark-price or
        index candles: `messages.check_subscribable`)."""
        wanted = {c for c in channels if c not in self.invalid}
        for channel in wanted:
            check_subscribable(channel)
        current = self.channels
        self.remove(current - wanted)
        self.add(wanted - current)

    def add(self, channels: Iterable[Channel]) -> None:
        """Subscribe `channels` too. Raises ValueError, adding none, if one of them is a channel OKX does not
        have (`messages.check_subscribable`)."""
        current = self.channels  # once: the property builds a set of every channel (27,000 at full breadth)
        pending = sorted(c for c in set(channels) if c not in self.invalid and c not in current)
        for channel in pending:
            check_subscribable(channel)
        cap = self.config.channels_per_connection
        for shard in self._shards:
            room = cap - len(shard.assigned)
            if room > 0 and pending:
                shard.add(pending[:room])
                pending = pending[room:]
        while pending:
            shard = self._new_shard()
            shard.add(pending[:cap])
            pending = pending[cap:]

    def remove(self, channels: Iterable[Channel]) -> None:
        gone = set(channels)
        for shard in list(self._shards):
            mine = shard.assigned & gone
            if mine:
                shard.remove(mine)
            if not shard.assigned:
                self._shards.remove(shard)
                shard.close()
                # Its connection must go too, or its reader would keep delivering pushes.
                closing = asyncio.get_running_loop().create_task(shard.wait_closed())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    def clear_invalid(self, channel: Channel) -> None:
        """Allow a channel marked invalid to be subscribed again (e.g. after the operator fixed it)."""
        self.invalid.pop(channel, None)

    def statuses(self) -> list[ConnectionStatus]:
        return [shard.status() for shard in self._shards]

    # --- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`; shards start as channels are added."""
        self._running = True
        for shard in self._shards:
            shard.start()
        await self._stopped.wait()

    async def stop(self) -> None:
        self._running = False
        shards, self._shards = self._shards, []
        for shard in shards:
            shard.close()
        await asyncio.gather(*(shard.wait_closed() for shard in shards), return_exceptions=True)
        self._stopped.set()

    def _new_shard(self) -> _Shard:
        shard = _Shard(self, self._shard_ids)
        self._shard_ids += 1
        self._shards.append(shard)
        if self._running:
            shard.start()
        return shard

    async def _open(self) -> Any:
        cfg = self.config
        attempt = await self._gate.start()
        made: list[FastLaneConnection] = []

        def create_connection(*args: Any, **kwargs: Any) -> FastLaneConnection:
            made.append(FastLaneConnection(*args, **kwargs))
            return made[-1]

        async def connect() -> Any:  # websockets.connect is awaitable, not a coroutine a task can take
            return await self._connect_fn(cfg.url, ping_interval=None, compression=None, max_queue=None,
                                          open_timeout=None, create_connection=create_connection)

        opening = asyncio.get_running_loop().create_task(connect())
        try:
            await asyncio.wait({opening}, timeout=cfg.connect_timeout_s)
            request_out = bool(made) and made[-1].request_may_be_out
            if not opening.done() and request_out:
                # The gate can only count this attempt as over once OKX answered: wait for the answer rather
                # than retry while this request may still be read.
                await asyncio.wait({opening}, timeout=cfg.answer_timeout_s - cfg.connect_timeout_s)
            if not opening.done():
                raise TimeoutError("no WebSocket upgrade: " + (
                    f"no answer to the request in {cfg.answer_timeout_s:g} s" if request_out
                    else f"no connection (TCP, TLS) in {cfg.connect_timeout_s:g} s"))
            return opening.result()
        except InvalidStatus as exc:
            if exc.response.status_code == 429:
                # Starts this gate did not see (another client or process on this IP) took OKX's window: a
                # pause for every connection of this client, so one refusal does not become a run of them.
                self._gate.hold(REFUSED_HOLD_S)
            raise
        finally:
            if not opening.done():  # given up, or this shard is closing
                opening.cancel()
                await asyncio.gather(opening, return_exceptions=True)
            self._gate.answered(attempt)  # a success, a refusal, a failure or a cancellation: it is over

    def _mark_invalid(self, channel: Channel, error: ErrorEvent) -> None:
        if channel in self.invalid:
            return
        self.invalid[channel] = error
        logger.warning("OKX refused %s (%s %s); not subscribing it again", channel, error.code, error.msg)
        for shard in self._shards:
            shard.assigned.discard(channel)
        self.handler.on_invalid(channel, error)


@dataclass(eq=False)
class _Link:
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


class _Shard:
    def __init__(self, client: OkxWsClient, index: int):
        self.client = client
        self.index = index
        self.assigned: set[Channel] = set()
        self.link: _Link | None = None
        self.state = "connecting"
        self.detail = ""
        # Frames of links already closed; the live link counts its own (`_Link.rx`).
        self.messages_before = 0
        self.reconnects = self.errors = 0
        # The replacement link while a 64008 handover subscribes it.
        self.incoming: _Link | None = None
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

    def _live_links(self) -> list[_Link]:
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

    async def _connect(self) -> _Link:
        self._set_state("connecting")
        client = self.client
        ws = await client._open()
        link = _Link(ws=ws, opened_at=client.clock(),
                     budget=SlidingWindow(client.config.requests_per_hour, 3600.0, client.clock, client.sleep))
        link.last_rx = client.clock()
        link.reader = asyncio.get_running_loop().create_task(self._read(link), name=f"okx-ws-read-{self.index}")
        self._spawn(self._watchdog(link))
        self._set_state("subscribing")
        await self._send(link, "subscribe", self.assigned)
        return link

    async def _close_link(self, link: _Link) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.ws.close(), timeout=2)
        if link.reader is not None:
            link.reader.cancel()
            await asyncio.gather(link.reader, return_exceptions=True)

    # --- requests ---------------------------------------------------------------------------------

    async def _send(self, link: _Link, op: str, channels: Iterable[Channel]) -> None:
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

    def _check_all_acked(self, link: _Link) -> None:
        if not any(r.op == "subscribe" for r in link.pending.values()) and self.assigned <= link.subscribed | set(
            self.client.invalid
        ):
            link.all_acked.set()
            if link is self.link and self.state == "subscribing":
                self._set_state("open")

    # --- reading ----------------------------------------------------------------------------------

    async def _read(self, link: _Link) -> None:
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
                ws.start_fast_lane(_ignore)  # a link whose reader stopped delivers nothing more
            self.messages_before += link.rx
            link.rx = 0

    async def _watchdog(self, link: _Link) -> None:
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

    def _on_event(self, link: _Link, event: Any) -> None:
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

    def _settle(self, link: _Link, request_id: str | None, channel: Channel) -> None:
        request = link.pending.get(request_id) if request_id else None
        if request is None:
            request = next((r for r in link.pending.values() if channel in r.channels), None)
        if request is None:
            return
        done = link.subscribed if request.op == "subscribe" else set(request.channels) - link.subscribed
        if all(c in done or c in self.client.invalid for c in request.channels):
            link.pending.pop(request.request_id, None)

    def _on_error(self, link: _Link, error: ErrorEvent) -> None:
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

    async def _send_singly(self, link: _Link, request: Request) -> None:
        for channel in request.channels:
            if channel in self.assigned and channel not in link.subscribed:
                await self._send(link, request.op, [channel])

    async def _retry_later(self, link: _Link, request: Request, delay: float) -> None:
        await self.client.sleep(delay)
        if link is self.link and not link.replaced:
            wanted = [c for c in request.channels if (c in self.assigned) == (request.op == "subscribe")]
            await self._send(link, request.op, wanted)

    async def _hand_over(self, old: _Link) -> None:
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


__all__ = [
    "ConnectionStatus",
    "OkxWsClient",
    "SlidingWindow",
    "WsConfig",
    "WsHandler",
    "backoff_delay",
    "connection_spacing",
]
