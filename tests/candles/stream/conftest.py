"""A real uvicorn serving the project's ASGI app on 127.0.0.1, in a thread of the test process (so it reads the
test database), and a WebSocket client that reads frames as the stream's users do."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson
import pytest
import redis as redis_lib
import uvicorn
import websockets
from asgiref.sync import SyncToAsync
from django.conf import settings as django_settings
from django.db import connections, transaction

from candles.storage import CandleRow, candles_upsert
from candles.stream import feed
from tests.support.ports import free_port, release_port


@dataclass
class StreamServer:
    url: str
    server: uvicorn.Server


@pytest.fixture
def stream_prefix(settings) -> Iterator[str]:
    """The feed's keys under a prefix of this test's own, removed afterwards."""
    prefix = f"test:stream:{uuid.uuid4().hex}:"
    settings.REDIS_KEY_PREFIX = prefix
    feed.listening_forget()
    yield prefix
    feed.listening_forget()
    client = redis_lib.Redis.from_url(django_settings.REDIS_URL)
    stale = list(client.scan_iter(match=f"{prefix}*"))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def stream_server(stream_prefix) -> Iterator[StreamServer]:
    from okxproject.asgi import application

    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, ws="websockets-sansio", lifespan="off",
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    workers = 4
    executor = ThreadPoolExecutor(workers, thread_name_prefix="stream-db")

    def close_pool_connections() -> None:
        # Each pool thread holds its own connection: one task per thread (a barrier keeps any thread from taking
        # two) closes them all, so the test database can be dropped at the end of the session.
        barrier = threading.Barrier(workers)

        def close() -> None:
            barrier.wait(10)
            connections.close_all()

        for future in [executor.submit(close) for _ in range(workers)]:
            future.result(15)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        try:
            await server.serve()
        finally:
            close_pool_connections()

    def serve() -> None:
        try:
            asyncio.run(main())
        finally:
            connections.close_all()

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield StreamServer(f"ws://127.0.0.1:{port}/api/v1/stream", server)
    finally:
        server.should_exit = True
        thread.join(10)
        release_port(port)
        # Django's one thread for sync code under ASGI (the session lookup of the auth middleware ran there)
        # keeps its connection open; the test database must be droppable at the end of the session.
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)


def write(*rows: CandleRow) -> None:
    """Rows through the one write path, committed (the stream publishes at commit)."""
    with transaction.atomic():
        candles_upsert(rows=list(rows))


def row(inst_id: str, bar: str, open_time_ms: int, close: str = "105", *, confirmed: bool = True,
        version: int = 1_000, source: str = "ws", high: str | None = None, vol: str = "1.5") -> CandleRow:
    return CandleRow(inst_id, bar, open_time_ms, "100", high or max("110", close, key=float), "90", close, vol,
                     "157.5", None, confirmed, source, version)


class StreamClient:
    """A client of the stream in its own event loop thread, so the test's (synchronous) database writes and its
    reads of frames interleave as they would between two programs."""

    def __init__(self, url: str, *, read: bool = True, **connect_kwargs) -> None:
        self.url = url
        self.frames: list = []
        self.closed: tuple[int | None, str | None] | None = None
        self._kwargs = connect_kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws = self._call(self._connect(url, connect_kwargs))
        # read=False: nothing reads frames until the test calls recv() (a client that stopped reading).
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), self._loop) if read else None

    @staticmethod
    async def _connect(url: str, kwargs: dict):
        return await websockets.connect(url, **kwargs)

    def _call(self, coroutine, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                self.frames.append(message if message == "pong" else orjson.loads(message))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = (self._ws.close_code, self._ws.close_reason)

    def send(self, body: dict | str) -> None:
        self._call(self._ws.send(body if isinstance(body, str) else orjson.dumps(body).decode()))

    def subscribe(self, *args: dict) -> None:
        self.send({"op": "subscribe", "args": list(args)})

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "frames"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(self.frames)
            if found:
                return found
            if self.closed is not None and not predicate(self.frames):
                raise AssertionError(f"closed {self.closed} while waiting for {what}; {self._tail()}")
            time.sleep(0.01)
        raise AssertionError(f"no {what} within {timeout} s; {self._tail()}")

    def _tail(self) -> str:
        return f"{len(self.frames)} frames, the last: {str(self.frames[-3:])[:1500]}"

    def candles(self, symbol: str, timeframe: str) -> list[dict]:
        """Every candle received for one series, in the order received."""
        return [candle for frame in self.frames if isinstance(frame, dict) and "data" in frame
                and frame["arg"] == {"symbol": symbol, "timeframe": timeframe} for candle in frame["data"]]

    def events(self, name: str) -> list[dict]:
        return [f for f in self.frames if isinstance(f, dict) and f.get("event") == name]

    def recv(self, timeout: float = 5.0):
        return self._call(self._ws.recv(), timeout)

    def wait_closed(self, timeout: float = 15.0) -> tuple[int | None, str | None]:
        self._reader.result(timeout)
        return self.closed

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._ws.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


@pytest.fixture
def stream_client(stream_server) -> Iterator:
    clients: list[StreamClient] = []

    def connect(url: str | None = None, **kwargs) -> StreamClient:
        client = StreamClient(url or stream_server.url, **kwargs)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()
