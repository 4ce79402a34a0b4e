"""Shared fixtures: instruments, seeded timeframes, candle rows and stored candles.

Tests run against the real PostgreSQL. State that a test needs before it calls `candles_upsert` is stored
through the ORM (`stored_candles`), so most tests call the write path once and stay inside pytest-django's
per-test transaction.

`make test` runs the suite in pytest-xdist workers, each with a test database of its own; Redis keys are
isolated per test by prefix (`tests.support.isolated_keys`), ports of private servers per process
(`tests.support.ports`), and a test marked `solo` runs while the other workers wait (`tests.support.solo`).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from candles.bar_catalog import bar_catalog_forget
from candles.bars import datetime_to_ms, ms_to_datetime
from candles.derived import derived_forget
from candles.models import Candle, Instrument, Timeframe
from candles.partitions import coverage_forget, leaf_range, partitions_ensure
from candles.storage import CandleRow
from tests.support.solo import Room

# Every bar OKX lists (shared/okx/PROTOCOL.md), in the seed's order.
SEEDED_CODES = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1H", "2H", "4H", "6H", "12H", "1D", "2D", "3D", "5D", "1W", "1M",
    "3M", "6Hutc", "12Hutc", "1Dutc", "2Dutc", "3Dutc", "5Dutc", "1Wutc", "1Mutc", "3Mutc",
)

_ROOM = pytest.StashKey[Room]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After pytest-django's order (database tests, then transactional ones, which leave the tables empty, then
    tests without a database): the chaos run first, as it alone takes minutes and a worker that started it late
    would end last; solo tests last, where they wait for no long test of the other worker and leave no test
    behind them that needs the seeded tables."""

    def place(item: pytest.Item) -> int:
        if item.get_closest_marker("chaos"):
            return 0
        return 2 if item.get_closest_marker("solo") else 1

    items.sort(key=place)


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # a pytest-xdist worker: the workers of one run share one room
        config.stash[_ROOM] = Room(Path(tempfile.gettempdir()) / f"okx-test-solo-{workerinput['testrunuid']}")


def pytest_unconfigure(config: pytest.Config) -> None:
    room = config.stash.get(_ROOM, None)
    if room is not None:
        room.close(unlink=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Every test holds the room shared from setup to teardown; a `solo` test holds it alone."""
    room = item.config.stash.get(_ROOM, None)
    if room is None:
        return (yield)
    with room.exclusive() if item.get_closest_marker("solo") else room.shared():
        return (yield)


@pytest.fixture(autouse=True)
def fresh_partition_catalogue() -> None:
    """Each test starts with this process's caches of bars and leaves empty: a leaf made in an earlier test's
    transaction is gone with its rollback, and the write path would otherwise meet it missing and retry."""
    coverage_forget()
    bar_catalog_forget()
    derived_forget()


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> Iterator[None]:
    """A cheap hasher: tests create users by the hundred, and PBKDF2's million rounds cost half a second each.

    No test is about how passwords are hashed; production keeps Django's default."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def as_ms(moment: datetime | int) -> int:
    return moment if isinstance(moment, int) else datetime_to_ms(moment)


# The open time `build_row` uses when not told: on a minute and on an hour boundary.
DEFAULT_OPEN_TIME = utc(2024, 1, 16, 19, 0)


def build_row(
    open_time: datetime | int = DEFAULT_OPEN_TIME,
    *,
    inst_id: str = "BTC-USDT",
    bar: str = "1m",
    open: object = "100",
    high: object = "110",
    low: object = "90",
    close: object = "105",
    vol: object = "1.5",
    vol_ccy: object = "157.5",
    vol_ccy_quote: object = "157.5",
    confirmed: object = True,
    source: str = "ws",
    version: object = 1_000,
    price: str = "trade",
) -> CandleRow:
    """A valid candle row unless told otherwise; `open_time` is a datetime or epoch milliseconds."""
    open_time_ms = open_time if isinstance(open_time, int) else datetime_to_ms(open_time)
    return CandleRow(
        inst_id, bar, open_time_ms, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, source, version,
        price,
    )


@pytest.fixture
def candle_row():
    """`candle_row(open_time, **fields)` builds a CandleRow (valid by default)."""
    return build_row


@pytest.fixture
def tf(db):
    """`tf("1m")` returns the seeded Timeframe with that exact (case-sensitive) code."""
    cache: dict[str, Timeframe] = {}

    def get(code: str) -> Timeframe:
        if code not in cache:
            cache[code] = Timeframe.objects.get(code=code)
        return cache[code]

    return get


@pytest.fixture
def instrument(db):
    """`instrument("ETH-USDT", inst_type="SWAP", ...)` creates an Instrument row."""
    numbers = itertools.count(1)

    def make(inst_id: str | None = None, inst_type: str = "SPOT", **fields) -> Instrument:
        if inst_id is None:
            inst_id = f"TEST{next(numbers)}-USDT"
        return Instrument.objects.create(inst_id=inst_id, inst_type=inst_type, **fields)

    return make


@pytest.fixture
def btc(instrument) -> Instrument:
    return instrument("BTC-USDT")


def ensure_leaves(code: str, open_times: Iterable[datetime]) -> None:
    """Make the candle table's leaves that these open times of bar `code` fall in (inserts through the ORM do not
    go through `candles_upsert`, which makes them itself)."""
    for start in sorted({leaf_range(code, moment)[0] for moment in open_times}):
        partitions_ensure(bar=code, start=start, end=start + timedelta(milliseconds=1))


@pytest.fixture
def stored_candles(tf):
    """`stored_candles(instrument, "1m", open_times, **fields)` stores candles through the ORM.

    Field values default to those of `build_row`; returns the Candle objects in the order given. The leaves the
    candles need are made first.
    """

    def store(inst: Instrument, code: str, open_times: Iterable[datetime | int], **fields) -> list[Candle]:
        values = {
            "open": Decimal("100"), "high": Decimal("110"), "low": Decimal("90"), "close": Decimal("105"),
            "vol": Decimal("1.5"), "vol_ccy": Decimal("157.5"), "vol_ccy_quote": Decimal("157.5"),
            "confirmed": True, "source": "ws", "version": 1_000,
        }
        values.update(fields)
        times = [ms_to_datetime(as_ms(moment)) for moment in open_times]
        ensure_leaves(code, times)
        candles = [Candle(instrument=inst, timeframe=tf(code), open_time=moment, **values) for moment in times]
        return Candle.objects.bulk_create(candles)

    return store


@pytest.fixture
def candle_table():
    """`candle_table()` returns every stored candle, every column, in key order."""

    def snapshot() -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM candles_candle ORDER BY instrument_id, timeframe_id, open_time")
            return cursor.fetchall()

    return snapshot
