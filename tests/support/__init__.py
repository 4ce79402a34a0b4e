"""Helpers for tests of the Redis pipeline, against the real Redis (no mocks).

    with isolated_keys(redis) as keys:          # Keys(prefix="test:<uuid>:"), every key deleted at the end
        buffer = LiveBuffer(redis, keys)
        buffer.put(candle_update(open_time_ms=..., close="101"), version=5)

Real database failures, for tests that must fail a write half-way (transactional tests only):

    with row_locked(open_time_ms):              # a concurrent writer holds a stored candle's row lock
        run = InThread(some_service); run.start()
        terminate_backend(waiting_backend())    # kill the connection that waits for it
    run.finish().error

`candle_update` builds a valid `CandleUpdate` (Decimals from strings); `LiveBuffer.put` writes it the way a
collector does, through `PUT_NEWEST_LUA`, so the buffer keeps the newest version. Private servers that a
test may stop and start are in `tests.support.private_services`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from redis import Redis

from collectors.okx.candle_rows import CandleUpdate
from okxproject.keys import Keys

# Nothing here imports Django at import time (collectors.live.buffer does, through candles.storage), so
# that `tests.support.private_services` can be used by a subprocess before it sets Django up.

# 2024-01-16 19:00 UTC: on a minute and an hour boundary.
T0_MS = 1_705_431_600_000
MINUTE_MS = 60_000


def candle_update(
    open_time_ms: int = T0_MS,
    *,
    inst_id: str = "BTC-USDT",
    bar: str = "1m",
    open: str = "100",
    high: str = "110",
    low: str = "90",
    close: str = "105",
    vol: str = "1.5",
    vol_ccy: str = "157.5",
    vol_ccy_quote: str | None = "157.5",
    confirmed: bool = True,
) -> CandleUpdate:
    """A candle update as the OKX parser produces it; valid unless told otherwise."""
    return CandleUpdate(
        inst_id, bar, open_time_ms, Decimal(open), Decimal(high), Decimal(low), Decimal(close), Decimal(vol),
        Decimal(vol_ccy), None if vol_ccy_quote is None else Decimal(vol_ccy_quote), confirmed,
    )


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition",
             poll_s: float = 0.05) -> object:
    """`condition()`'s first truthy value, polled every `poll_s`; the test fails after `timeout` seconds."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out waiting for {what}")


def new_keys() -> Keys:
    """Keys under a prefix no other test or process uses."""
    return Keys(prefix=f"test:{uuid.uuid4().hex}:")


def delete_keys(redis: Redis, keys: Keys) -> int:
    """Delete every key under the prefix (the prefix holds no glob characters)."""
    names = list(redis.scan_iter(match=f"{keys.prefix}*", count=1000))
    return redis.delete(*names) if names else 0


@contextlib.contextmanager
def isolated_keys(redis: Redis) -> Iterator[Keys]:
    keys = new_keys()
    try:
        yield keys
    finally:
        delete_keys(redis, keys)


class LiveBuffer:
    """Writes candles into the live buffer the way a collector does (newest version wins)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        from collectors.live.buffer import PUT_NEWEST_LUA

        self.redis = redis
        self.keys = keys
        self._put = redis.register_script(PUT_NEWEST_LUA)

    def put(self, update: CandleUpdate, version: int) -> int:
        """Returns 1 when the entry was written, 0 when the buffer kept a newer (or confirmed) one."""
        return self.put_many([(update, version)])

    def put_many(self, updates: Iterable[tuple[CandleUpdate, int]]) -> int:
        from collectors.live.buffer import encode_entry, pack_entries

        entries = [encode_entry(update, version) for update, version in updates]
        return int(self._put(keys=[self.keys.live], args=[pack_entries(entries)])) if entries else 0

    def put_raw(self, field: str, value: str | bytes) -> None:
        """An entry as stored, bypassing the encoder (for entries a collector would never write)."""
        self.redis.hset(self.keys.live, field, value)

    def live(self) -> dict[bytes, bytes]:
        return self.redis.hgetall(self.keys.live)

    def taken(self) -> dict[bytes, bytes]:
        return self.redis.hgetall(self.keys.taken)

    def counters(self) -> dict[str, int]:
        """Event counters; time sums (`*_ms`) depend on the machine and are read with `timings()`."""
        return {name.decode(): int(value) for name, value in self.redis.hgetall(self.keys.counters).items()
                if not name.endswith(b"_ms")}

    def timings(self) -> dict[str, int]:
        return {name.decode(): int(value) for name, value in self.redis.hgetall(self.keys.counters).items()
                if name.endswith(b"_ms")}


# --- what the database holds ------------------------------------------------------------------------


def exact(value: Decimal | None) -> tuple | None:
    """Sign, digits and exponent: Decimal("1.50") == Decimal("1.5"), but not here."""
    return None if value is None else value.as_tuple()


def stored_candles() -> dict[tuple[str, str, int], tuple]:
    """Every stored candle by (inst_id, bar, open_ms), as (exact numbers..., confirmed, source, version)."""
    from candles.bars import datetime_to_ms
    from candles.models import Candle

    table = {}
    for c in Candle.objects.select_related("instrument", "timeframe"):
        numbers = (c.open, c.high, c.low, c.close, c.vol, c.vol_ccy, c.vol_ccy_quote)
        table[candle_key(c.instrument.inst_id, c.timeframe.code, datetime_to_ms(c.open_time))] = (
            *map(exact, numbers), c.confirmed, c.source, c.version
        )
    return table


def candle_key(inst_id: str, bar: str, open_time_ms: int) -> tuple[str, str, int]:
    return inst_id, bar, open_time_ms


def as_stored(update: CandleUpdate, version: int) -> tuple[tuple[str, str, int], tuple]:
    """The `stored_candles()` item a buffered update must become."""
    u = update
    numbers = (u.open, u.high, u.low, u.close, u.vol, u.vol_ccy, u.vol_ccy_quote)
    return candle_key(u.inst_id, u.bar, u.open_time_ms), (*map(exact, numbers), u.confirmed, "ws", version)


# --- real database failures -------------------------------------------------------------------------


def _connect(autocommit: bool):
    """A psycopg connection of our own to the database Django uses (the test database in tests)."""
    import psycopg
    from django.db import connection

    params = connection.settings_dict
    return psycopg.connect(dbname=params["NAME"], host=params["HOST"] or None, port=params["PORT"] or None,
                           user=params["USER"] or None, autocommit=autocommit)


@contextlib.contextmanager
def row_locked(open_time_ms: int) -> Iterator[None]:
    """Hold the row lock of the stored candle(s) at this open time, as a concurrent writer would."""
    from candles.bars import ms_to_datetime

    with _connect(autocommit=False) as blocker:
        rows = blocker.execute("SELECT 1 FROM candles_candle WHERE open_time = %s FOR UPDATE",
                               [ms_to_datetime(open_time_ms)]).fetchall()
        assert rows, "the row to lock must be stored (and committed) first"
        try:
            yield
        finally:
            blocker.rollback()


def waiting_backend(timeout_s: float = 10.0) -> int:
    """The pid of a backend of this database that waits for a lock."""
    deadline = time.monotonic() + timeout_s
    with _connect(autocommit=True) as observer:
        while time.monotonic() < deadline:
            row = observer.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.02)
    raise TimeoutError("no backend started waiting for a lock")


def terminate_backend(pid: int) -> None:
    """Kill one backend's connection, as a database restart or a network cut would."""
    with _connect(autocommit=True) as killer:
        assert killer.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]


class InThread(threading.Thread):
    """Runs `target(**kwargs)` in a thread with its own database connection, closed at the end."""

    def __init__(self, target: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.target, self.kwargs = target, kwargs
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from django.db import connection

        try:
            self.result = self.target(**self.kwargs)
        except BaseException as exc:
            self.error = exc
        finally:
            connection.close()

    def finish(self, timeout_s: float = 30.0) -> InThread:
        self.join(timeout=timeout_s)
        assert not self.is_alive(), f"{self.target.__name__} did not finish within {timeout_s} s"
        return self
