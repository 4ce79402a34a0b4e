"""The simulator's network side: one port serves OKX's REST paths, the candle WebSockets and /sim/ control.

HTTP requests are read here (websockets' parser refuses bodies, and POST /sim/control has one); WebSocket
upgrades go to websockets' sans-I/O ServerProtocol, and pushes are pre-encoded frames written straight to
the transport, one write per connection per tick.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from websockets.server import ServerProtocol

from . import messages, rest
from .bars import Bar
from .config import SimulatorConfig
from .connection import Channel, WsConnection
from .http import BadRequest, HttpRequest, encode_response, read_request
from .market import Market, substeps_of, wall_clock_ms
from .ratelimit import SlidingWindow

log = logging.getLogger(__name__)

BUSINESS_PATH = "/ws/v5/business"
PUBLIC_PATH = "/ws/v5/public"
IDLE_REASON = "No data received in 30s"  # OKX's wording, whatever the configured timeout
NOTICE_CLOSE_CODE = 1012  # service restart
NOTICE_CLOSE_REASON = "Service upgrade"
CHANNEL_CAP_CLOSE_CODE = 4008
CHANNEL_CAP_REASON = "Too many channels subscribed on this connection"
BUFFER_FULL_CLOSE_CODE = 4005
BUFFER_FULL_REASON = "Server buffer full"
HOUSEKEEPING_INTERVAL_S = 0.05
MAX_REQUEST_BYTES = 64 * 1024  # OKX's limit on one subscribe/unsubscribe request
MAX_REQUEST_ID_LENGTH = 32  # ids are up to 32 alphanumerics
# A tick fires just after each multiple of push_interval: with 1s bars and push_interval 1, every tick sees
# a fresh candle (and can confirm the previous one) instead of straddling the boundary.
TICK_LAG_S = 0.003
# After skipped ticks, at most this many closed candles of a channel are confirmed late; older ones are left
# to REST, as after any outage.
MAX_LATE_CONFIRMS = 30
HANDSHAKE_LOG = 10_000  # upgrade arrivals kept for `handshake_arrivals`

T = TypeVar("T")


@dataclass(frozen=True)
class ServerInfo:
    host: str
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{BUSINESS_PATH}"

    @property
    def public_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{PUBLIC_PATH}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class ChannelFeed:
    """Encoded frames of one channel, shared by every connection subscribed to it."""

    __slots__ = ("_confirm", "_key", "_open", "_prefix", "_row", "bar", "inst_id", "name")

    def __init__(self, inst_id: str, bar: Bar):
        self.inst_id = inst_id
        self.bar = bar
        self.name = messages.CANDLE_PREFIX + bar.name
        self._prefix = messages.push_prefix(self.name, inst_id)
        self._key: tuple[int, int] = (-1, -1)
        self._open = b""
        self._row: list[str] = []
        self._confirm: tuple[int, bytes | None] = (-1, None)

    def open_frame(self, market: Market, open_ms: int, substep: int) -> bytes:
        if self._key != (open_ms, substep):
            self._row = market.row(market.instruments[self.inst_id], self.bar, open_ms, substep, confirmed=False)
            self._open = messages.push_frame_of(self._prefix, self._row)
            self._key = (open_ms, substep)
        return self._open

    def confirm_frame(self, market: Market, open_ms: int, omit_rate: float) -> bytes | None:
        """The final push of the candle opened at `open_ms`, or None when this close is left out."""
        if self._confirm[0] != open_ms:
            frame = None
            if not market.confirm_omitted(self.inst_id, self.bar.name, open_ms, omit_rate):
                last = substeps_of(self.bar)
                if self._key == (open_ms, last):  # its last open version went out already: the same numbers
                    row = [*self._row[:-1], "1"]
                else:
                    row = market.row(market.instruments[self.inst_id], self.bar, open_ms, last, confirmed=True)
                frame = messages.push_frame_of(self._prefix, row)
            self._confirm = (open_ms, frame)
        return self._confirm[1]


class Simulator:
    """An OKX-compatible server over a deterministic market. Control methods are safe from any thread."""

    def __init__(self, config: SimulatorConfig | None = None):
        self.config = config or SimulatorConfig()
        self.market = Market(self.config)
        self._connections: set[WsConnection] = set()
        self._writers: set[asyncio.StreamWriter] = set()  # every open TCP link, HTTP keep-alive ones included
        self._feeds: dict[Channel, ChannelFeed] = {}
        self._feeds_by_bar: dict[str, list[ChannelFeed]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats: Counter[str] = Counter()
        self._confirm_omit_rate = self.config.confirm_omit_rate
        self._ignore_pings = False
        self._rest_429_left = 0
        self._rest_delay: tuple[float, int] = (0.0, 0)
        self._handshakes = SlidingWindow(self.config.new_connections_per_second, 1.0)
        # Arrival times (monotonic) of WebSocket upgrade requests, refused ones included, so that a test can
        # check a client's pacing as OKX would see it: the recent ones per client IP for the busiest second,
        # and the last HANDSHAKE_LOG of all of them for `handshake_arrivals`.
        self._arrivals_by_peer: dict[str, deque[float]] = {}
        self._arrivals: deque[float] = deque(maxlen=HANDSHAKE_LOG)
        self._rest_limits = {
            rest.CANDLES_PATH: SlidingWindow(*self.config.rest_candles_limit),
            rest.HISTORY_PATH: SlidingWindow(*self.config.rest_history_limit),
            rest.INSTRUMENTS_PATH: SlidingWindow(*self.config.rest_instruments_limit),
        }

    # --- lifecycle --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[ServerInfo]:
        """Listen on host:port (0 = a free port) until the block ends."""
        if self._loop is not None:
            raise RuntimeError("this Simulator is already serving")
        self._loop = asyncio.get_running_loop()
        server = await asyncio.start_server(self._handle_client, host, port)
        bound_port = server.sockets[0].getsockname()[1]
        tasks = [asyncio.create_task(self._push_loop()), asyncio.create_task(self._housekeeping_loop())]
        try:
            yield ServerInfo(host, bound_port)
        finally:
            for task in tasks:
                task.cancel()
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)
            self._loop = None

    # --- control (thread-safe) --------------------------------------------------------------------

    def _on_loop(self, action: Callable[[], T]) -> T:
        """Run `action` on the server's event loop and return its result, from whichever thread calls."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            return action()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(action())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    def drop_connections(self) -> int:
        """Abort every WebSocket transport without a close frame; returns how many were dropped."""
        def act() -> int:
            dropped = list(self._connections)
            for connection in dropped:
                connection.abort()
            self._stats["drops"] += len(dropped)
            return len(dropped)
        return self._on_loop(act)

    def send_notice(self, close_after: float = 1.0) -> int:
        """Send the 64008 upgrade notice to every connection and close them `close_after` seconds later."""
        def act() -> int:
            targets = [c for c in self._connections if c.accepts_pushes]
            for connection in targets:
                connection.write(messages.notice_frame(connection.conn_id))
            self._stats["notices_sent"] += len(targets)
            if targets and self._loop is not None:
                self._loop.call_later(close_after, self._close_all, targets, NOTICE_CLOSE_CODE, NOTICE_CLOSE_REASON)
            return len(targets)
        return self._on_loop(act)

    def ignore_pings(self, enabled: bool = True) -> None:
        """Stop (or resume) answering the text frame `ping`."""
        self._ignore_pings = bool(enabled)

    def send_malformed(self, count: int = 1) -> None:
        """Send `count` malformed frames on every connection, between the pushes of the next tick."""
        def act() -> None:
            for connection in self._connections:
                connection.malformed_pending += int(count)
        self._on_loop(act)

    def rest_429(self, count: int = 1) -> None:
        """The next `count` REST requests answer HTTP 429 (code 50011)."""
        self._rest_429_left = int(count)

    def rest_delay(self, seconds: float, count: int = 1) -> None:
        """The next `count` REST requests are answered `seconds` late."""
        self._rest_delay = (float(seconds), int(count))

    def set_confirm_omit_rate(self, rate: float) -> None:
        self._confirm_omit_rate = float(rate)

    def list_instrument(
        self, inst_id: str, list_time_ms: int | None = None, exp_time_ms: int | None = None, state: str = "live",
    ) -> dict[str, Any]:
        """List an instrument now (kind from its instId, see instruments.make_instrument); returns its REST row."""
        def act() -> dict[str, Any]:
            inst = self.market.list_instrument(inst_id, list_time_ms=list_time_ms, exp_time_ms=exp_time_ms,
                                               state=state)
            self._stats["instruments_listed"] += 1
            return rest.instrument_row(inst)
        return self._on_loop(act)

    def delist_instrument(self, inst_id: str) -> bool:
        """Stop listing and pushing an instrument at once, as an expiry does; False if unknown or gone already."""
        def act() -> bool:
            done = self.market.delist_instrument(inst_id)
            self._stats["instruments_delisted"] += int(done)
            return done
        return self._on_loop(act)

    def stats(self) -> dict[str, int]:
        def act() -> dict[str, int]:
            counters = dict.fromkeys(
                ("connections_total", "pushes_sent", "confirms_sent", "confirms_omitted", "rest_requests",
                 "rest_429s", "pings", "pongs", "malformed_sent", "notices_sent", "drops", "idle_closes",
                 "channel_cap_closes", "buffer_full_closes", "handshakes_rejected", "requests",
                 "errors_sent", "ticks", "ticks_skipped", "late_confirms", "tick_busy_ms", "tick_cpu_ms",
                 "tick_busy_ms_max", "handshakes", "handshakes_max_per_second"),
                0,
            )
            counters.update(self._stats)
            counters["connections"] = len(self._connections)
            counters["subscriptions"] = sum(len(c.subscriptions) for c in self._connections)
            return counters
        return self._on_loop(act)

    def stall(self, seconds: float) -> None:
        """Block the server's event loop for `seconds` from now, as a saturated machine does: upgrade requests
        that arrive meanwhile wait in the socket and are read (and counted) together when it ends."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("the simulator is not serving")
        self._stats["stalls"] += 1
        loop.call_soon_threadsafe(time.sleep, float(seconds))

    def handshake_arrivals(self) -> list[float]:
        """Seconds (monotonic clock) at which the last WebSocket upgrade requests arrived, oldest first."""
        return self._on_loop(lambda: list(self._arrivals))

    CONTROL_ACTIONS = (
        "drop_connections", "send_notice", "ignore_pings", "send_malformed", "rest_429", "rest_delay",
        "set_confirm_omit_rate", "stats", "list_instrument", "delist_instrument", "handshake_arrivals", "stall",
    )
    # OKX's names in control bodies ({"action": "list_instrument", "instId": ...}) -> the methods' parameters.
    CONTROL_PARAMS = {"instId": "inst_id", "listTime": "list_time_ms", "expTime": "exp_time_ms"}

    def control(self, action: str, **params: Any) -> Any:
        """Run a control method by name (what POST /sim/control does)."""
        if action not in self.CONTROL_ACTIONS:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(self.CONTROL_ACTIONS)}")
        params = {self.CONTROL_PARAMS.get(name, name): value for name, value in params.items()}
        return getattr(self, action)(**params)

    # --- connections ------------------------------------------------------------------------------

    async def _handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = peername[0] if peername else "?"
        self._writers.add(writer)
        try:
            while True:
                try:
                    request = await read_request(reader)
                except BadRequest as exc:
                    writer.write(encode_response(400, str(exc).encode(), content_type="text/plain", keep_alive=False))
                    break
                if request is None:
                    break
                if request.wants_websocket:
                    await self._websocket(request, reader, writer, peer)
                    return
                keep_alive = await self._http(request, writer, peer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("simulator connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _websocket(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        if request.path not in (BUSINESS_PATH, PUBLIC_PATH):
            writer.write(encode_response(404, b"Not Found", content_type="text/plain", keep_alive=False))
            return
        now = time.monotonic()
        self._count_arrival(peer, now)
        if not self._handshakes.allow(peer, now):
            self._stats["handshakes_rejected"] += 1
            writer.write(encode_response(429, rest.TOO_MANY_REQUESTS[1], keep_alive=False))
            return
        protocol = ServerProtocol(max_size=2**20)
        protocol.receive_data(request.raw_head)
        (handshake,) = protocol.events_received()
        response = protocol.accept(handshake)
        protocol.send_response(response)
        for data in protocol.data_to_send():
            writer.write(data)
        if response.status_code != 101:
            return
        connection = WsConnection(
            protocol, writer, public=request.path == PUBLIC_PATH, requests_per_hour=self.config.requests_per_hour,
            peer=peer,
        )
        self._connections.add(connection)
        self._stats["connections_total"] += 1
        try:
            while True:
                data = await reader.read(65_536)
                if not data:
                    connection.receive_eof()
                    break
                for text in connection.receive(data):
                    self._on_message(connection, text)
                if writer.is_closing():
                    break
        finally:
            self._connections.discard(connection)

    def _count_arrival(self, peer: str, now: float) -> None:
        """Count an upgrade request: `handshakes`, and `handshakes_max_per_second`, the most that arrived from
        one IP within any 1 s (the window the limit applies: this one and those of the last second)."""
        self._stats["handshakes"] += 1
        self._arrivals.append(now)
        recent = self._arrivals_by_peer.setdefault(peer, deque())
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        recent.append(now)
        if len(recent) > self._stats["handshakes_max_per_second"]:
            self._stats["handshakes_max_per_second"] = len(recent)

    def _close_all(self, connections: list[WsConnection], code: int, reason: str) -> None:
        for connection in connections:
            connection.close(code, reason, self.config.close_timeout)

    # --- WebSocket requests -----------------------------------------------------------------------

    def _on_message(self, connection: WsConnection, text: str) -> None:
        if text == "ping":
            self._stats["pings"] += 1
            if not self._ignore_pings:
                connection.write(messages.PONG_FRAME)
                self._stats["pongs"] += 1
            return
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            body = None
        request_id = body.get("id") if isinstance(body, dict) else None
        op = body.get("op") if isinstance(body, dict) else None
        args = body.get("args") if isinstance(body, dict) else None
        if (
            len(text) > MAX_REQUEST_BYTES
            or (request_id is not None and not _valid_request_id(request_id))
            or op not in ("subscribe", "unsubscribe")
            or not isinstance(args, list) or not args
            or not all(isinstance(arg, dict) and isinstance(arg.get("channel"), str) for arg in args)
        ):
            self._error(connection, request_id, "60012", messages.invalid_request_msg(text))
            return
        self._stats["requests"] += 1
        if not connection.requests.allow(None, time.monotonic()):
            self._error(connection, request_id, "60014", messages.TOO_FREQUENT_MSG)
            return
        frames = []
        for arg in args:
            channel_name, inst_id = arg.get("channel"), arg.get("instId")
            channel = self._known_channel(connection, channel_name, inst_id)
            if channel is None:
                self._stats["errors_sent"] += 1
                frames.append(messages.error_frame(
                    request_id, "60018", messages.channel_missing_msg(channel_name, inst_id), connection.conn_id
                ))
                continue
            if op == "subscribe":
                connection.subscriptions.setdefault(channel, None)
            else:
                connection.subscriptions.pop(channel, None)
            frames.append(messages.ack_frame(
                request_id, op, {"channel": channel_name, "instId": inst_id}, connection.conn_id
            ))
        connection.write_many(frames)
        cap = self.config.max_channels_per_connection
        if cap and len(connection.subscriptions) > cap:
            self._stats["channel_cap_closes"] += 1
            connection.close(CHANNEL_CAP_CLOSE_CODE, CHANNEL_CAP_REASON, self.config.close_timeout)

    def _known_channel(self, connection: WsConnection, channel_name: str, inst_id: Any) -> Channel | None:
        if connection.public or not channel_name.startswith(messages.CANDLE_PREFIX) or not isinstance(inst_id, str):
            return None
        bar_name = channel_name[len(messages.CANDLE_PREFIX):]
        if bar_name not in self.market.bars or not self.market.is_listed(inst_id, wall_clock_ms()):
            return None
        return (inst_id, bar_name)

    def _error(self, connection: WsConnection, request_id: Any, code: str, msg: str) -> None:
        self._stats["errors_sent"] += 1
        connection.write(messages.error_frame(request_id, code, msg, connection.conn_id))

    # --- pushes -----------------------------------------------------------------------------------

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

    def _feed(self, channel: Channel) -> ChannelFeed:
        feed = self._feeds.get(channel)
        if feed is None:
            feed = self._feeds[channel] = ChannelFeed(channel[0], self.market.bars[channel[1]])
            self._feeds_by_bar.setdefault(channel[1], []).append(feed)
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
                market.prepare(feed.inst_id, bar_name, next_open)

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
                if gone and channel[0] in gone:
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
            if market.confirm_omitted(feed.inst_id, bar.name, open_ms, self._confirm_omit_rate):
                self._stats["confirms_omitted"] += 1
            else:
                row = market.row(market.instruments[feed.inst_id], bar, open_ms, substeps_of(bar), confirmed=True)
                frames.append(messages.push_frame(feed.name, feed.inst_id, row))
            open_ms = bar.next_open(open_ms)
        self._stats["confirms_sent"] += len(frames)
        self._stats["late_confirms"] += len(frames)
        return frames

    def _interleave_malformed(self, connection: WsConnection, frames: list[bytes], now_ms: int) -> list[bytes]:
        inst_id, bar_name = next(iter(connection.subscriptions), ("BTC-USDT", "1m"))
        bar = self.market.bars.get(bar_name)
        kinds = messages.malformed_frames(
            inst_id, messages.CANDLE_PREFIX + bar_name, bar.floor(now_ms) if bar else now_ms // 60_000 * 60_000
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

    # --- housekeeping -----------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            now = time.monotonic()
            for connection in list(self._connections):
                if connection.close_deadline is not None:
                    if now > connection.close_deadline:
                        connection.abort()
                elif now - connection.last_activity > self.config.idle_timeout:
                    self._stats["idle_closes"] += 1
                    connection.close(4004, IDLE_REASON, self.config.close_timeout)

    # --- HTTP -------------------------------------------------------------------------------------

    async def _http(self, request: HttpRequest, writer: asyncio.StreamWriter, peer: str) -> bool:
        """Answer one plain HTTP request; returns whether the connection stays open."""
        if request.path.startswith("/api/v5/"):
            status, body = await self._rest(request, peer)
        elif request.path.startswith("/sim/"):
            status, body = self._sim_endpoint(request)
        elif request.path in (BUSINESS_PATH, PUBLIC_PATH):
            status, body = 426, orjson.dumps({"msg": "Upgrade Required", "code": "426"})
        else:
            status, body = 404, orjson.dumps({"msg": "Not Found", "code": "404"})
        writer.write(encode_response(status, body, keep_alive=request.keep_alive))
        await writer.drain()
        return request.keep_alive

    async def _rest(self, request: HttpRequest, peer: str) -> rest.Answer:
        self._stats["rest_requests"] += 1
        if self._rest_429_left > 0:
            self._rest_429_left -= 1
            self._stats["rest_429s"] += 1
            return rest.TOO_MANY_REQUESTS
        delay, delays_left = self._rest_delay
        if delays_left > 0:
            self._rest_delay = (delay, delays_left - 1)
            await asyncio.sleep(delay)
        if request.method != "GET":
            return 405, orjson.dumps({"msg": "Method Not Allowed", "code": "405"})
        path, query = request.path, request.query
        limiter = self._rest_limits.get(path)
        if limiter is None:
            return 404, orjson.dumps({"msg": "Not Found", "code": "404"})
        key = (peer, query.get("instType", "")) if path == rest.INSTRUMENTS_PATH else peer
        if not limiter.allow(key, time.monotonic()):
            self._stats["rest_429s"] += 1
            return rest.TOO_MANY_REQUESTS
        if path == rest.INSTRUMENTS_PATH:
            return rest.instruments(self.market, query)
        return rest.candles(self.market, query, wall_clock_ms(), history=path == rest.HISTORY_PATH)

    def _sim_endpoint(self, request: HttpRequest) -> rest.Answer:
        try:
            if request.path == "/sim/stats":
                return 200, orjson.dumps(self.stats())
            if request.path == "/sim/truth":
                return self._sim_truth(request.query)
            if request.path == "/sim/control":
                params: dict[str, Any] = dict(request.query)
                if request.body:
                    body = orjson.loads(request.body)
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                    params.update(body)
                action = params.pop("action", None)
                if not isinstance(action, str):
                    raise ValueError("action is required")
                params = {name: _coerce(value) for name, value in params.items()}
                return 200, orjson.dumps({"ok": True, "result": self.control(action, **params)})
        except (ValueError, TypeError, KeyError) as exc:
            return 400, orjson.dumps({"ok": False, "error": str(exc)})
        return 404, orjson.dumps({"ok": False, "error": f"no such endpoint {request.path}"})

    def _sim_truth(self, query: dict[str, str]) -> rest.Answer:
        inst_id, bar = query.get("instId", ""), query.get("bar", "1m")
        if inst_id not in self.market.instruments or bar not in self.market.bars:
            raise ValueError(f"unknown instId {inst_id!r} or bar {bar!r}")
        start = int(query.get("start") or 0)
        end = int(query.get("end") or wall_clock_ms())
        return 200, orjson.dumps({"data": self.market.truth_range(inst_id, bar, start, end)})


def _valid_request_id(request_id: Any) -> bool:
    return isinstance(request_id, str) and 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH and request_id.isalnum()


def _coerce(value: Any) -> Any:
    """Query-string values arrive as text: turn numbers and booleans back into what the methods expect."""
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
