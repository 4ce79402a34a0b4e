"""The simulator's network side: one port serves OKX's REST paths, the candle WebSockets and /sim/ control.

HTTP requests are read here (websockets' parser refuses bodies, and POST /sim/control has one) and answered
by web.py; WebSocket upgrades become sessions (session.py, websockets' sans-I/O ServerProtocol), pushes
(pushes.py) are pre-encoded frames written straight to the transport, one write per connection per tick, and
faults and control are faults.py. The `Simulator` class puts them together over one market.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from .config import SimulatorConfig
from .connection import Channel, WsConnection
from .faults import FaultControls
from .http import BadRequest, encode_response, read_request
from .market import Market
from .pushes import ChannelFeed, PushLoop
from .ratelimit import SlidingWindow
from .session import HANDSHAKE_LOG, WsSessions
from .web import BUSINESS_PATH, PUBLIC_PATH, HttpEndpoints, rest_limits

log = logging.getLogger(__name__)

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


class Simulator(WsSessions, FaultControls, PushLoop, HttpEndpoints):
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

