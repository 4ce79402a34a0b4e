"""A WebSocket client that reads frames as the stream's users do, and the write path's rows for the stream's tests.

The server, `stream_server` (uvicorn serving the project's ASGI app in a thread of the test process, so it reads the
test database), and `stream_prefix` live in tests/candles/conftest.py, shared with the chart page's browser tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
import websockets
from django.db import transaction

from candles.storage import CandleRow, candles_upsert


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
