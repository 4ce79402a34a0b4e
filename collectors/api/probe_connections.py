"""PostgreSQL connections kept between probes: at most one idle per database, lent to one probe at a time.

A new connection costs the server a backend (about 4 ms of its CPU here) and the caller as much waiting, two
to four times that on a busy machine; a kept one costs a `SELECT 1` round trip. A probe takes the idle
connection (none: it connects anew), and gives it back only after it answered, so a connection stuck on a
hung server is never lent again.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created
from django.dispatch import receiver


class IdleConnections:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple, tuple[psycopg.Connection, float]] = {}

    def take(self, key: tuple) -> tuple[psycopg.Connection, float] | None:
        """The idle connection for `key` and when it was made (time.monotonic()), now the caller's; or None."""
        with self._lock:
            return self._idle.pop(key, None)

    def give(self, key: tuple, conn: psycopg.Connection, made_at: float) -> None:
        """Keep `conn` for the next probe of `key` (one that was kept meanwhile is closed)."""
        with self._lock:
            spare = self._idle.pop(key, None)
            self._idle[key] = (conn, made_at)
        if spare is not None:
            spare[0].close()

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conn, _ in idle.values():
            conn.close()


idle_connections = IdleConnections()


def connection_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((name, str(value)) for name, value in params.items()))


@receiver(connection_created)
def _close_idle_before_creating_or_dropping_a_database(sender: Any, connection: Any, **kwargs: Any) -> None:
    # Django connects to no database in particular to create or drop one (the test runner does, before and
    # after a run): an idle probe connection to that database would make DROP DATABASE fail.
    if connection.alias == NO_DB_ALIAS:
        idle_connections.close_all()
