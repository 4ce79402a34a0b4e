"""Retention: whole partitions past their bar's horizon leave through DETACH CONCURRENTLY, an optional archive and
DROP; nothing inside the horizon goes, nothing is DELETEd, every step resumes on the next run.

The partitions are four `1s` days of 2020, made while `1s` keeps everything (no partition wholly behind a
horizon is ever made), with a candle at the first and at the last second of each day. Retiring a partition
cannot run in a transaction block, so these tests commit.
"""

from __future__ import annotations

import logging
import sys
import time
import types
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from candles import retention
from candles.models import Candle, Timeframe
from candles.partitions import partition_list, partitions_ensure
from candles.retention import RETIRED_MARK, retention_enforce, retention_plan, retired_tables
from tests.conftest import utc

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
D1 = utc(2020, 1, 1)
DAYS = [D1 + k * DAY for k in range(4)]
NAMES = [f"candles_candle_1s_202001{d:02d}" for d in range(1, 5)]
RETENTION = timedelta(days=2)


def now_for(horizon: datetime) -> datetime:
    """The moment at which the `1s` horizon (now − RETENTION) is `horizon`."""
    return horizon + RETENTION


def set_policy(bar: str, retention: timedelta | None, *, archive: bool = False) -> None:
    Timeframe.objects.filter(code=bar).update(retention=retention, archive=archive)


def leaf_names(bar: str = "1s") -> list[str]:
    return sorted(leaf.name for leaf in partition_list(bar=bar) if leaf.name in NAMES)


def stored_open_times() -> list[datetime]:
    return list(Candle.objects.filter(timeframe__code="1s", open_time__lt=D1 + 4 * DAY)
                .order_by("open_time").values_list("open_time", flat=True))


def tables_named(names: list[str]) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r' ORDER BY 1", [names])
        return [name for (name,) in cursor.fetchall()]


def _drop_leftovers() -> None:
    for leaf in partition_list(bar="1s"):
        if leaf.name in NAMES and leaf.detach_pending:
            with connection.cursor() as cursor:
                cursor.execute(f'ALTER TABLE candles_candle_1s DETACH PARTITION "{leaf.name}" FINALIZE')
    with connection.cursor() as cursor:
        for name in tables_named(NAMES):
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
def days(btc, stored_candles) -> Iterator[list[datetime]]:
    """The four 2020 days of `1s`, each with its first and last second stored; dropped again afterwards."""
    _drop_leftovers()
    set_policy("1s", None)
    partitions_ensure(bar="1s", start=D1, end=D1 + 4 * DAY)
    stored_candles(btc, "1s", [t for day in DAYS for t in (day, day + DAY - SECOND)])
    assert leaf_names() == NAMES
    yield DAYS
    _drop_leftovers()


@contextmanager
def reader(sql: str) -> Iterator[None]:
    """Another session inside a transaction that ran `sql` (and holds its locks) until the block ends."""
    params = connection.settings_dict
    with psycopg.connect(dbname=params["NAME"], host=params["HOST"] or None, port=params["PORT"] or None,
                         user=params["USER"] or None, autocommit=False) as other:
        other.execute(sql)
        try:
            yield
        finally:
            other.rollback()


def pending() -> list[str]:
    return [leaf.name for leaf in partition_list(bar="1s") if leaf.detach_pending]


# --- what goes and what stays ----------------------------------------------------------------------------


def test_only_partitions_whose_upper_bound_is_at_or_behind_the_horizon_go(days):
    set_policy("1s", RETENTION)

    result = retention_enforce(now=now_for(D1 + 2 * DAY))  # the horizon is the end of 2020-01-02, exactly

    assert leaf_names() == NAMES[2:]
    assert tables_named(NAMES) == NAMES[2:]
    assert stored_open_times() == [t for day in DAYS[2:] for t in (day, day + DAY - SECOND)]
    counts = result.bars["1s"]
    assert (counts.detached, counts.archived, counts.dropped, counts.failed) == (2, 0, 2, 0)
    assert counts.bytes_freed > 0


def test_a_candle_one_millisecond_inside_the_horizon_survives_with_its_whole_partition(days):
    set_policy("1s", RETENTION)
    last_second_of_day_2 = D1 + 2 * DAY - SECOND

    result = retention_enforce(now=now_for(last_second_of_day_2 - timedelta(milliseconds=1)))

    assert leaf_names() == NAMES[1:]
    assert result.bars["1s"].dropped == 1
    assert stored_open_times()[:2] == [D1 + DAY, last_second_of_day_2]


def test_a_bar_without_retention_keeps_everything(days):
    set_policy("1s", None)

    result = retention_enforce(now=utc(2030, 1, 1))

    assert result.bars == {}
    assert leaf_names() == NAMES
    [plan] = [p for p in retention_plan(now=utc(2030, 1, 1)) if p.bar == "1s"]
    assert (plan.horizon, plan.due, plan.next_drop) == (None, (), None)


def test_running_twice_gives_the_same_result(days):
    set_policy("1s", RETENTION)
    now = now_for(D1 + 2 * DAY)
    retention_enforce(now=now)
    tables, candles = tables_named(NAMES), stored_open_times()

    again = retention_enforce(now=now)

    assert again.bars == {}
    assert str(again) == "nothing to do"
    assert (tables_named(NAMES), stored_open_times()) == (tables, candles)


def test_the_plan_names_the_partitions_due_and_when_the_next_drop_is(days):
    set_policy("1s", RETENTION)
    now = now_for(D1 + DAY + timedelta(hours=12))

    [plan] = [p for p in retention_plan(now=now) if p.bar == "1s"]

    assert plan.horizon == D1 + DAY + timedelta(hours=12)
    assert [leaf.name for leaf in plan.due] == NAMES[:1]
    assert plan.next_drop == D1 + DAY + RETENTION  # the oldest partition's end plus the retention: due now
    retention_enforce(now=now)
    [plan] = [p for p in retention_plan(now=now) if p.bar == "1s"]
    assert plan.due == ()
    assert plan.next_drop == D1 + 2 * DAY + RETENTION  # when 2020-01-02 ends behind the horizon


def test_candles_are_never_deleted_only_whole_tables_dropped(days):
    set_policy("1s", RETENTION)

    with CaptureQueriesContext(connection) as queries:
        retention_enforce(now=now_for(D1 + 2 * DAY))

    statements = [q["sql"].upper() for q in queries.captured_queries]
    assert not [s for s in statements if "DELETE" in s]
    assert [s for s in statements if s.startswith("ALTER TABLE") and "DETACH PARTITION" in s and "CONCURRENTLY" in s]
    assert [s for s in statements if s.startswith("DROP TABLE")]


def test_it_refuses_to_run_inside_a_transaction(days):
    with transaction.atomic(), pytest.raises(RuntimeError, match="transaction"):
        retention_enforce(now=now_for(D1 + 2 * DAY))


def test_each_dropped_partition_is_logged_with_its_bar_range_rows_and_size(days, caplog):
    set_policy("1s", RETENTION)

    with caplog.at_level(logging.INFO, logger="candles.retention"):
        retention_enforce(now=now_for(D1 + DAY))

    [line] = [r.getMessage() for r in caplog.records if "dropped candles_candle_1s_" in r.getMessage()]
    assert line.startswith("retention: dropped candles_candle_1s_20200101 (1s, 2020-01-01T00:00:00+00:00 to "
                           "2020-01-02T00:00:00+00:00): ")
    assert " rows, " in line
    assert line.endswith("B")


# --- interrupted and blocked steps ---------------------------------------------------------------------


def test_a_detach_left_pending_is_finalized_then_the_partition_dropped(days):
    # A detach interrupted in its second phase (here: it gave up waiting for a reader) leaves the partition
    # "detach pending"; the parent accepts no other concurrent detach until it is finished.
    with reader("SELECT count(*) FROM candles_candle_1s"), connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '100ms'")
        with pytest.raises(Exception, match="lock timeout"):
            cursor.execute(f"ALTER TABLE candles_candle_1s DETACH PARTITION {NAMES[0]} CONCURRENTLY")
        cursor.execute("RESET lock_timeout")
    assert pending() == NAMES[:1]
    set_policy("1s", RETENTION)

    result = retention_enforce(now=now_for(D1 + 2 * DAY))

    assert pending() == []
    assert leaf_names() == NAMES[2:]
    assert tables_named(NAMES) == NAMES[2:]
    counts = result.bars["1s"]
    assert (counts.finalized, counts.detached, counts.dropped, counts.failed) == (1, 1, 2, 0)


def test_behind_a_long_reader_of_the_bar_the_detach_gives_up_quickly_and_finishes_on_the_next_run(days, settings):
    settings.STORAGE_LOCK_TIMEOUT_MS = 200
    set_policy("1s", RETENTION)
    now = now_for(D1 + DAY)

    with reader("SELECT count(*) FROM candles_candle_1s"):  # an analyst's query, still open
        started = time.monotonic()
        first = retention_enforce(now=now)
        took = time.monotonic() - started

    assert took < 2.0
    assert first.bars["1s"].failed == 1
    assert first.bars["1s"].dropped == 0
    assert NAMES[0] in tables_named(NAMES)  # nothing lost: pending, or still attached

    second = retention_enforce(now=now)

    assert second.bars["1s"].dropped == 1
    assert second.bars["1s"].failed == 0
    assert tables_named(NAMES) == NAMES[1:]
    assert pending() == []


def test_a_run_that_stopped_after_its_detach_is_finished_by_the_next_one(days, monkeypatch):
    set_policy("1s", RETENTION)
    now = now_for(D1 + DAY)
    with monkeypatch.context() as patch:
        patch.setattr(retention, "_retire_table", lambda *args: None)  # the worker died after the detach
        retention_enforce(now=now)
    [left] = retired_tables()
    assert (left.name, left.bar, left.start, left.end, left.archived) == (NAMES[0], "1s", D1, D1 + DAY, False)
    assert leaf_names() == NAMES[1:]

    result = retention_enforce(now=now)

    assert (result.bars["1s"].dropped, result.bars["1s"].failed) == (1, 0)
    assert retired_tables() == []
    assert tables_named(NAMES) == NAMES[1:]


def test_a_drop_behind_a_reader_of_the_retired_table_gives_up_quickly_and_succeeds_on_the_next_run(days, settings,
                                                                                                   monkeypatch):
    settings.STORAGE_LOCK_TIMEOUT_MS = 200
    set_policy("1s", RETENTION)
    now = now_for(D1 + DAY)
    with monkeypatch.context() as patch:
        patch.setattr(retention, "_retire_table", lambda *args: None)
        retention_enforce(now=now)

    with reader(f"SELECT count(*) FROM {NAMES[0]}"):  # someone still reads the detached table
        started = time.monotonic()
        first = retention_enforce(now=now)
        took = time.monotonic() - started

    assert took < 2.0
    assert (first.bars["1s"].dropped, first.bars["1s"].failed) == (0, 1)
    assert [t.name for t in retired_tables()] == NAMES[:1]

    second = retention_enforce(now=now)

    assert (second.bars["1s"].dropped, second.bars["1s"].failed) == (1, 0)
    assert retired_tables() == []
    assert tables_named(NAMES) == NAMES[1:]


def test_a_retired_table_is_kept_when_the_retention_was_lengthened_after_its_detach(days, monkeypatch, caplog):
    set_policy("1s", RETENTION)
    with monkeypatch.context() as patch:
        patch.setattr(retention, "_retire_table", lambda *args: None)
        retention_enforce(now=now_for(D1 + DAY))
    set_policy("1s", None)

    with caplog.at_level(logging.WARNING, logger="candles.retention"):
        result = retention_enforce(now=now_for(D1 + DAY))

    assert [t.name for t in retired_tables()] == NAMES[:1]
    assert result.bars == {}
    assert "no longer behind the bar's horizon; kept" in caplog.text


# --- the archive seam ---------------------------------------------------------------------------------------


@pytest.fixture
def archive(monkeypatch, settings, tmp_path):
    """A stand-in for `candles.archive`: records its calls, and fails while `fail` is set."""
    settings.CANDLE_ARCHIVE_DIR = str(tmp_path)
    module = types.ModuleType("candles.archive")
    module.calls = []
    module.fail = None

    module.then = None  # called after a successful write, with the table's name

    def archive_write(*, table: str, bar: str, start: datetime, end: datetime):
        module.calls.append((table, bar, start, end))
        if module.fail:
            raise module.fail
        if module.then:
            module.then(table)
        return {"rows": 2}

    module.archive_write = archive_write
    monkeypatch.setitem(sys.modules, "candles.archive", module)
    return module


def test_a_bar_that_archives_has_its_partition_archived_before_the_drop(days, archive):
    set_policy("1s", RETENTION, archive=True)

    result = retention_enforce(now=now_for(D1 + DAY))

    assert archive.calls == [(NAMES[0], "1s", D1, D1 + DAY)]
    counts = result.bars["1s"]
    assert (counts.detached, counts.archived, counts.dropped, counts.failed) == (1, 1, 1, 0)
    assert tables_named(NAMES) == NAMES[1:]


def test_a_failed_archive_keeps_the_detached_table_and_is_retried_next_run(days, archive):
    set_policy("1s", RETENTION, archive=True)
    archive.fail = OSError("disk full")
    now = now_for(D1 + DAY)

    first = retention_enforce(now=now)

    assert (first.bars["1s"].detached, first.bars["1s"].dropped, first.bars["1s"].failed) == (1, 0, 1)
    [kept] = retired_tables()
    assert (kept.name, kept.archived, kept.live_rows >= 0) == (NAMES[0], False, True)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {NAMES[0]}")  # every row still there
        assert cursor.fetchone()[0] == 2
        cursor.execute("SELECT obj_description(%s::regclass, 'pg_class')", [NAMES[0]])
        assert cursor.fetchone()[0].startswith(RETIRED_MARK)

    archive.fail = None
    second = retention_enforce(now=now)

    assert (second.bars["1s"].archived, second.bars["1s"].dropped, second.bars["1s"].failed) == (1, 1, 0)
    assert archive.calls == [(NAMES[0], "1s", D1, D1 + DAY)] * 2
    assert tables_named(NAMES) == NAMES[1:]


def test_an_archived_table_whose_drop_failed_is_not_archived_again(days, archive, settings):
    settings.STORAGE_LOCK_TIMEOUT_MS = 200
    set_policy("1s", RETENTION, archive=True)
    now = now_for(D1 + DAY)
    with ExitStack() as readers:
        # Someone starts reading the detached table while it is archived: its DROP has to wait.
        archive.then = lambda table: readers.enter_context(reader(f"SELECT count(*) FROM {table}"))
        first = retention_enforce(now=now)
    assert (first.bars["1s"].archived, first.bars["1s"].dropped, first.bars["1s"].failed) == (1, 0, 1)
    assert [t.archived for t in retired_tables()] == [True]

    second = retention_enforce(now=now)

    assert (second.bars["1s"].archived, second.bars["1s"].dropped) == (0, 1)
    assert len(archive.calls) == 1


def test_while_archiving_is_unavailable_a_bar_that_archives_keeps_its_partitions_attached(days, settings, caplog):
    settings.CANDLE_ARCHIVE_DIR = ""
    set_policy("1s", RETENTION, archive=True)

    with caplog.at_level(logging.ERROR, logger="candles.retention"):
        result = retention_enforce(now=now_for(D1 + 2 * DAY))

    assert (result.bars["1s"].detached, result.bars["1s"].failed) == (0, 1)
    assert leaf_names() == NAMES
    assert "CANDLE_ARCHIVE_DIR is not set" in caplog.text


def test_with_the_real_archive_a_partition_is_dropped_only_after_its_files_are_verified(days, settings, tmp_path):
    archive = pytest.importorskip("candles.archive", reason="the Parquet archive (candles/archive.py) is not installed")
    settings.CANDLE_ARCHIVE_DIR = str(tmp_path / "archive")
    set_policy("1s", RETENTION, archive=True)

    result = retention_enforce(now=now_for(D1 + DAY))

    counts = result.bars["1s"]
    assert (counts.detached, counts.archived, counts.dropped, counts.failed) == (1, 1, 1, 0)
    assert tables_named(NAMES) == NAMES[1:]
    [file] = archive.archive_list(bar="1s")
    assert (file.start, file.end, file.rows, file.status) == (D1, D1 + DAY, 2, "ok")
    from candles.archive_format import archive_read

    assert archive_read(file.path).column("open_time").to_pylist() == [D1, D1 + DAY - SECOND]
