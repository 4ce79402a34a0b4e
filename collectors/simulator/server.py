"""The simulator's network side: one port serves OKX's REST paths, the candle WebSockets and /sim/ control.

HTTP requests are read here (websockets' parser refuses bodies, and POST /sim/control has one) and answered
by web.py; WebSocket upgrades go to websockets' sans-I/O ServerProtocol, and pushes (pushes.py) are
pre-encoded frames written straight to the transport, one write per connection per tick.
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
from .config import SimulatorConfig
from .connection import Channel, WsConnection
from .http import BadRequest, HttpRequest, encode_response, read_request
from .market import Market, wall_clock_ms
from .pushes import ChannelFeed, PushLoop
from .ratelimit import SlidingWindow
from .reference import INDEX, MARK, NO_SECOND_BARS, TRADE, has_mark
from .web import BUSINESS_PATH, PUBLIC_PATH, HttpEndpoints, rest_limits

log = logging.getLogger(__name__)

IDLE_REASON = "No data received in 30s"  # OKX's wording, whatever the configured timeout
NOTICE_CLOSE_CODE = 1012  # service restart
NOTICE_CLOSE_REASON = "Service upgrade"
CHANNEL_CAP_CLOSE_CODE = 4008
CHANNEL_CAP_REASON = "Too many channels subscribed on this connection"
HOUSEKEEPING_INTERVAL_S = 0.05
MAX_REQUEST_BYTES = 64 * 1024  # OKX's limit on one subscribe/unsubscribe request
MAX_REQUEST_ID_LENGTH = 32  # ids are up to 32 alphanumerics
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


class Simulator(PushLoop, HttpEndpoints):
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
        self._rest_limits = rest_limits(self.config)

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
        """The channel a subscribe arg names, or None when OKX would answer 60018: candles live on /business;
        candle{bar} takes a listed instrument, mark-price-candle{bar} a listed swap or future, index-candle{bar}
        an index (not an instrument id); mark and index candles have no 1s bar."""
        if connection.public or not isinstance(inst_id, str):
            return None
        market = self.market
        parsed = _parse_channel_name(channel_name)
        if parsed is None:
            return None
        price, bar_name = parsed
        if bar_name not in market.bars or (price != TRADE and bar_name in NO_SECOND_BARS):
            return None
        if price == INDEX:
            return Channel(inst_id, bar_name, INDEX) if inst_id in market.indices else None
        if not market.is_listed(inst_id, wall_clock_ms()):
            return None
        if price == MARK and not has_mark(market.instruments[inst_id]):
            return None
        return Channel(inst_id, bar_name, price)

    def _error(self, connection: WsConnection, request_id: Any, code: str, msg: str) -> None:
        self._stats["errors_sent"] += 1
        connection.write(messages.error_frame(request_id, code, msg, connection.conn_id))

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


# Longest prefix first: "mark-price-candle1m" must not read as the trade channel of bar "1m".
_PRICES_BY_PREFIX = (
    (messages.MARK_CANDLE_PREFIX, MARK), (messages.INDEX_CANDLE_PREFIX, INDEX), (messages.CANDLE_PREFIX, TRADE),
)


def _parse_channel_name(name: str) -> tuple[str, str] | None:
    """(price, bar) of a candle channel's name, None for other channels."""
    for prefix, price in _PRICES_BY_PREFIX:
        if name.startswith(prefix):
            return price, name[len(prefix):]
    return None


def _valid_request_id(request_id: Any) -> bool:
    return isinstance(request_id, str) and 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH and request_id.isalnum()
