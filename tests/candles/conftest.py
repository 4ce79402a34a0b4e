"""A real ASGI server for tests of candles/: uvicorn serving the project's app (okxproject.asgi) on 127.0.0.1, in a
thread of the test process, so it reads the test database. It serves HTTP (static files included, SERVE_STATIC
being on by default) and the live stream at /api/v1/stream: the stream's tests and the chart page's browser tests
use it. A test may stop it and start it again on the same port, as a restarted web process does.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as redis_lib
import uvicorn
from asgiref.sync import SyncToAsync
from django.conf import settings as django_settings
from django.db import connections

from candles.stream import feed
from tests.support.ports import free_port, release_port

# Threads of the server's default executor: the stream's database reads run there, each with its connection.
POOL_WORKERS = 4


class StreamServer:
    """uvicorn on 127.0.0.1:`port` serving okxproject.asgi:application; `url` is the stream, `http_url` the site."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/api/v1/stream"
        self.http_url = f"http://127.0.0.1:{port}"
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._conn_max_age: object = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        from okxproject.asgi import application

        assert not self.running, "the server runs already"
        # Django runs each HTTP request's sync code in a thread of its own under ASGI: a persistent connection
        # (CONN_MAX_AGE) would outlive that thread, open until garbage collection, and keep the test database
        # from being dropped. Closed at the end of each request instead, as Django advises for ASGI.
        settings_dict = connections["default"].settings_dict
        if self._conn_max_age is None:
            self._conn_max_age = settings_dict.get("CONN_MAX_AGE", 0)
        settings_dict["CONN_MAX_AGE"] = 0
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, ws="websockets-sansio",
                                lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        executor = ThreadPoolExecutor(POOL_WORKERS, thread_name_prefix="stream-db")

        def close_pool_connections() -> None:
            # Each pool thread holds its own connection: one task per thread (a barrier keeps any thread from
            # taking two) closes them all, so the test database can be dropped at the end of the session.
            barrier = threading.Barrier(POOL_WORKERS)

            def close() -> None:
                barrier.wait(10)
                connections.close_all()

            for future in [executor.submit(close) for _ in range(POOL_WORKERS)]:
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
        self.server, self._thread = server, thread

    def stop(self) -> None:
        """Shut down as a web process does: WebSocket clients get a close frame (1012), listening stops."""
        if self.server is None or self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(15)
        assert not self._thread.is_alive(), "uvicorn did not stop within 15 s"
        self.server, self._thread = None, None
        # Django's one thread for sync code under ASGI (the session lookup of the auth middleware ran there) keeps
        # its connection open; the test database must be droppable at the end of the session.
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)
        # Connections of threads that ended (each HTTP request's) are closed when collected.
        gc.collect()
        if self._conn_max_age is not None:
            connections["default"].settings_dict["CONN_MAX_AGE"] = self._conn_max_age
            self._conn_max_age = None


@pytest.fixture
def stream_prefix(settings) -> Iterator[str]:
    """The feed's keys (and any other Redis key of the test) under a prefix of this test's own, removed afterwards."""
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
    """The project's ASGI app served by uvicorn on a port of this test's own, stopped at the end of the test."""
    port = free_port()
    server = StreamServer(port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        release_port(port)
