"""The candle table's partitions: which leaf holds an open time, the catalogue of leaves, and their DDL.

    candles_candle                            PARTITION BY LIST (timeframe_id)
      candles_candle_<slug>                   PARTITION BY RANGE (open_time), one table per bar
        candles_candle_<slug>_<YYYYMMDD>      the leaves: a UTC day for 1s, a month for 1m/3m/5m (YYYYMM),
                                              a year for 15m and longer (YYYY)

The slug is the bar's code with `M` spelled `mo`, lower-cased (`1M` → `1mo`, `1m` → `1m`): PostgreSQL folds
unquoted names to lower case, and `1m` and `1M` must not meet. Migration 0011 made the tree; the measured
reasons for its shape are in docs/storage-design.md §1.

There is no DEFAULT partition, so a row whose leaf does not exist fails loudly rather than landing somewhere
no leaf can later be made for. Leaves are therefore made before they are written to: ahead of time for every
bar (`partitions_premake`, scheduled), and on demand for history by the write path (`leaves_cover`, which
calls `partitions_ensure` only when this process's cache of the catalogue does not cover a batch). A leaf
wholly behind its bar's retention horizon is never made: a dropped leaf must not come back.

Leaves are made as `CREATE TABLE (LIKE …)` and then `ATTACH PARTITION`, which locks the bar's table in SHARE
UPDATE EXCLUSIVE mode; `CREATE TABLE … PARTITION OF` would take ACCESS EXCLUSIVE and queue the live flush
behind any slow reader (2.8 s measured). Even so, every such DDL runs under `STORAGE_LOCK_TIMEOUT_MS` and is
retried, so that it gives way to readers instead of holding writers up.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from candles.bars import datetime_to_ms
from candles.models import Timeframe

logger = logging.getLogger(__name__)

ROOT = "candles_candle"

# The size of a bar's leaves. A leaf should hold a few GB at the full firehose (1,000 instruments): a day of
# 1s is 86 M rows (~12 GB), a month of 1m 43 M; a year of 15m 35 M. Bars not listed get years.
PARTITION_UNIT: dict[str, str] = {
    "1s": "day",
    "1m": "month", "3m": "month", "5m": "month",
    **dict.fromkeys(
        ("15m", "30m", "1H", "2H", "4H", "6H", "12H", "1D", "2D", "3D", "5D", "1W", "1M", "3M",
         "6Hutc", "12Hutc", "1Dutc", "2Dutc", "3Dutc", "5Dutc", "1Wutc", "1Mutc", "3Mutc"),
        "year",
    ),
}
_NAME_FORMAT = {"day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}

# Autovacuum for a leaf that is being written: dead rows (every confirm is a new row version) are vacuumed
# after a fixed number, not a share of a table that may hold 86 M rows, and unthrottled, since this is the
# one table that must keep up (§3.4). Close-out resets them once the leaf is closed.
_HOT_SETTINGS = {
    "day": {"autovacuum_vacuum_threshold": 50_000, "autovacuum_vacuum_insert_threshold": 500_000},
    "month": {"autovacuum_vacuum_threshold": 100_000, "autovacuum_vacuum_insert_threshold": 1_000_000},
    "year": {"autovacuum_vacuum_threshold": 100_000, "autovacuum_vacuum_insert_threshold": 1_000_000},
}
_HOT_COMMON = {
    "autovacuum_vacuum_scale_factor": 0,
    "autovacuum_vacuum_insert_scale_factor": 0,
    "autovacuum_vacuum_cost_delay": 0,
    "autovacuum_analyze_scale_factor": 0.02,
}
_HOT_NAMES = ("autovacuum_vacuum_threshold", "autovacuum_vacuum_insert_threshold", *_HOT_COMMON)

# pg_advisory_xact_lock(namespace, timeframe id) serialises the DDL of one bar across processes.
_LOCK_NAMESPACE = 0x70617274  # "part"
_DDL_ATTEMPTS = 4
# A leaf is closed out once every candle in it is final: the repair plane gives up on missing confirms after
# 24 h (collectors/repair/confirms.py), and an hour more lets its last writes land.
CLOSE_OUT_AFTER = timedelta(hours=25)
_CLOSED_OUT = "okx-candles: closed out"


class PartitionConflict(RuntimeError):
    """A table already holds the name of a partition to be made, and is not that partition."""


# --- names and ranges ------------------------------------------------------------------------------


def partition_unit(bar: str) -> str:
    return PARTITION_UNIT.get(bar, "year")


def bar_slug(bar: str) -> str:
    return bar.replace("M", "mo").lower()


def bar_table(bar: str) -> str:
    """The bar's own partitioned table: `candles_candle_1mo` for `1M`."""
    return f"{ROOT}_{bar_slug(bar)}"


def _unit_floor(unit: str, moment: datetime) -> datetime:
    m = moment.astimezone(UTC)
    if unit == "day":
        return datetime(m.year, m.month, m.day, tzinfo=UTC)
    if unit == "month":
        return datetime(m.year, m.month, 1, tzinfo=UTC)
    return datetime(m.year, 1, 1, tzinfo=UTC)


def _unit_add(unit: str, start: datetime, units: int) -> datetime:
    if unit == "day":
        return start + timedelta(days=units)
    if unit == "month":
        index = start.year * 12 + start.month - 1 + units
        return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return datetime(start.year + units, 1, 1, tzinfo=UTC)


def leaf_range(bar: str, moment: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the leaf that holds open time `moment` of `bar` (UTC days, months or years)."""
    unit = partition_unit(bar)
    start = _unit_floor(unit, moment)
    return start, _unit_add(unit, start, 1)


def leaf_name(bar: str, start: datetime) -> str:
    """`candles_candle_1s_20261201`, `candles_candle_1m_202612`, `candles_candle_1mo_2026`."""
    return f"{bar_table(bar)}_{start.astimezone(UTC).strftime(_NAME_FORMAT[partition_unit(bar)])}"


def leaf_starts(bar: str, start: datetime, end: datetime) -> list[datetime]:
    """The start of every leaf that [start, end) touches, in order."""
    unit = partition_unit(bar)
    current, starts = _unit_floor(unit, start), []
    while current < end:
        starts.append(current)
        current = _unit_add(unit, current, 1)
    return starts


# --- the catalogue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    name: str
    bar: str
    timeframe_id: int
    start: datetime
    end: datetime
    detach_pending: bool  # DETACH … CONCURRENTLY began and did not finish
    bytes: int  # heap, indexes and TOAST
    live_rows: int  # from the statistics: exact to the last flush of counters, not a count(*)


# One statement over pg_inherits for the whole tree. A bar's id is read from its table's partition bound
# (FOR VALUES IN (5)) and a leaf's range from its own (FOR VALUES FROM ('…') TO ('…')), not from names, so
# that the catalogue says what PostgreSQL routes by.
_CATALOGUE = r"""
SELECT leaf.oid::bigint, leaf.relname::text, t.code::text, t.id, bounds.m[1]::timestamptz,
       bounds.m[2]::timestamptz, i.inhdetachpending{extra}
FROM pg_inherits b
JOIN pg_class bar ON bar.oid = b.inhrelid
JOIN candles_timeframe t
  ON t.id = (regexp_match(pg_get_expr(bar.relpartbound, bar.oid), 'IN \(''?(-?[0-9]+)''?\)'))[1]::integer
JOIN pg_inherits i ON i.inhparent = bar.oid
JOIN pg_class leaf ON leaf.oid = i.inhrelid AND leaf.relkind = 'r'
CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(leaf.relpartbound, leaf.oid),
                                        'FROM \(''([^'']*)''\) TO \(''([^'']*)''\)') AS m) bounds
WHERE b.inhparent = to_regclass('candles_candle') AND bounds.m IS NOT NULL{where}
ORDER BY {order}
"""
_BY_BAR = "t.display_order, t.id, 5"


def partition_list(*, bar: str | None = None) -> list[Leaf]:
    """The attached leaves (detach-pending ones included) of one bar or of all, by bar then start."""
    sql = _CATALOGUE.format(
        extra=", pg_total_relation_size(leaf.oid), coalesce(pg_stat_get_live_tuples(leaf.oid), 0)",
        where="" if bar is None else " AND t.code = %s", order=_BY_BAR,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [] if bar is None else [bar])
        rows = cursor.fetchall()
    return [Leaf(name, code, tf_id, start, end, pending, size, live)
            for _, name, code, tf_id, start, end, pending, size, live in rows]


# --- making leaves -------------------------------------------------------------------------------------


def partitions_ensure(*, bar: str, start: datetime, end: datetime) -> list[str]:
    """Make every leaf of `bar` that [start, end) touches exist; returns the names of those it created.

    Leaves wholly behind the bar's retention horizon are not made. Idempotent, and safe from several
    connections at once (serialised per bar by an advisory lock). Inside a caller's transaction the leaves
    are made in it, and are gone again if it rolls back.
    """
    timeframe = Timeframe.objects.only("id", "code", "retention").get(code=bar)
    return _ensure(timeframe, start, end)


def partitions_premake(*, now: datetime) -> list[str]:
    """Leaves for [now − 1 unit, now + 2 units) of every bar, so that the live flush never meets a missing one
    (even when the scheduler was down for a while); returns the names created."""
    created: list[str] = []
    for timeframe in Timeframe.objects.only("id", "code", "retention").order_by("display_order", "id"):
        unit = partition_unit(timeframe.code)
        current = _unit_floor(unit, now)
        created += _ensure(timeframe, _unit_add(unit, current, -1), _unit_add(unit, current, 3))
    if created:
        logger.info("partitions made ahead: %s", ", ".join(created))
    return created


def _ensure(timeframe: Timeframe, start: datetime, end: datetime) -> list[str]:
    bar = timeframe.code
    horizon = timeframe.horizon(timezone.now())
    wanted = [(first, _unit_add(partition_unit(bar), first, 1)) for first in leaf_starts(bar, start, end)]
    wanted = [(first, after) for first, after in wanted if horizon is None or after > horizon]
    if not wanted:
        return []
    created: list[str] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, timeframe.pk])
        cursor.execute("SELECT current_setting('lock_timeout')")
        (previous_timeout,) = cursor.fetchone()
        _bar_table_ensure(cursor, timeframe)
        existing = [(leaf.start, leaf.end) for leaf in _bar_leaves(cursor, timeframe.pk)]
        for first, after in wanted:
            if any(first < e and s < after for s, e in existing):
                if (first, after) not in existing:
                    logger.warning("%s: [%s, %s) overlaps a leaf of another size; not made", bar, first, after)
                continue
            name = leaf_name(bar, first)
            _leaf_create(cursor, bar, name, first, after)
            created.append(name)
        # The lock timeout set for the DDL outlives this block inside a caller's transaction; the caller's
        # later row locks must wait as long as they always did. (On an error, the rollback undoes it.)
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous_timeout])
    coverage_forget()
    return created


def _bar_leaves(cursor, timeframe_id: int) -> list[Leaf]:
    cursor.execute(_CATALOGUE.format(extra=", 0, 0", where=" AND t.id = %s", order=_BY_BAR), [timeframe_id])
    return [Leaf(name, code, tf_id, start, end, pending, size, live)
            for _, name, code, tf_id, start, end, pending, size, live in cursor.fetchall()]


def _relation_state(cursor, name: str, parent: str) -> tuple[bool, bool]:
    """(exists, attached to `parent`)."""
    cursor.execute(
        "SELECT to_regclass(%s) IS NOT NULL, EXISTS (SELECT 1 FROM pg_inherits "
        "WHERE inhrelid = to_regclass(%s) AND inhparent = to_regclass(%s))", [name, name, parent])
    return cursor.fetchone()


def _bar_table_ensure(cursor, timeframe: Timeframe) -> None:
    """A bar added after migration 0011 gets its table on first use."""
    table = bar_table(timeframe.code)
    exists, attached = _relation_state(cursor, table, ROOT)
    if attached:
        return
    if exists:
        raise PartitionConflict(f"{table} exists but is not the partition of bar {timeframe.code} in {ROOT}")
    q = connection.ops.quote_name
    _locked_ddl(cursor, [
        f"CREATE TABLE {q(table)} (LIKE {ROOT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (open_time)",
        f"ALTER TABLE {ROOT} ATTACH PARTITION {q(table)} FOR VALUES IN ({int(timeframe.pk)})",
    ])
    logger.info("partitioned table made for bar %s: %s", timeframe.code, table)


def _leaf_options(bar: str) -> str:
    options = {"fillfactor": 100, **_HOT_SETTINGS[partition_unit(bar)], **_HOT_COMMON}
    return ", ".join(f"{name} = {value}" for name, value in options.items())


def _leaf_create(cursor, bar: str, name: str, start: datetime, end: datetime) -> None:
    parent = bar_table(bar)
    exists, _ = _relation_state(cursor, name, parent)
    if exists:  # a leaf detached by retention and not yet dropped: never reattach or overwrite it here
        raise PartitionConflict(f"{name} exists but is not a partition of {parent}")
    q = connection.ops.quote_name
    # The leaf's primary key, partial and BRIN indexes are made by ATTACH, from the parent's, on the empty table.
    _locked_ddl(cursor, [
        f"CREATE TABLE {q(name)} (LIKE {q(parent)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        f"WITH ({_leaf_options(bar)})",
        f"ALTER TABLE {q(parent)} ATTACH PARTITION {q(name)} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')",
    ])


def _locked_ddl(cursor, statements: list[str]) -> None:
    """Run DDL that locks a parent table, giving up after STORAGE_LOCK_TIMEOUT_MS and retrying a few times."""
    for attempt in range(1, _DDL_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                cursor.execute("SELECT set_config('lock_timeout', %s, true)",
                               [f"{settings.STORAGE_LOCK_TIMEOUT_MS}ms"])
                for sql in statements:
                    cursor.execute(sql)
            return
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "55P03" or attempt == _DDL_ATTEMPTS:
                raise
            logger.info("partition DDL waited %d ms for a lock (attempt %d); retrying: %s",
                        settings.STORAGE_LOCK_TIMEOUT_MS, attempt, statements[-1])
            time.sleep(0.05 * attempt)


# --- the write path's cache of covered ranges -----------------------------------------------------------


class _Coverage:
    """The attached leaves per timeframe id, as sorted starts, ends and oids (epoch ms), for bisection."""

    def __init__(self, rows: Iterable[tuple[int, int, int, int]]) -> None:
        self.leaves: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for tf_id, start_ms, end_ms, oid in sorted(rows):
            starts, ends, oids = self.leaves.setdefault(tf_id, ([], [], []))
            starts.append(start_ms)
            ends.append(end_ms)
            oids.append(oid)

    def leaf(self, timeframe_id: int, moment_ms: int) -> int | None:
        """The oid of the leaf holding `moment_ms`, if this process knows one."""
        found = self.leaves.get(timeframe_id)
        if found is None:
            return None
        starts, ends, oids = found
        i = bisect_right(starts, moment_ms) - 1
        return oids[i] if i >= 0 and moment_ms < ends[i] else None


_coverage: _Coverage | None = None
_coverage_lock = threading.Lock()


def _coverage_load() -> _Coverage:
    global _coverage
    with connection.cursor() as cursor:
        cursor.execute(_CATALOGUE.format(extra="", where=" AND NOT i.inhdetachpending", order=_BY_BAR))
        rows = [(tf_id, datetime_to_ms(start), datetime_to_ms(end), oid)
                for oid, _, _, tf_id, start, end, _ in cursor.fetchall()]
    coverage = _Coverage(rows)
    with _coverage_lock:
        _coverage = coverage
    return coverage


def coverage_forget() -> None:
    """Read the catalogue again on next use: after DDL, or when a write met a leaf that is not there."""
    global _coverage
    with _coverage_lock:
        _coverage = None


def leaves_cover(needed: Mapping[int, tuple[str, Iterable[datetime]]]) -> list[int]:
    """The write path's guard: make sure the leaves starting at the given moments exist, and name them.

    `needed` maps a timeframe id to (bar code, leaf starts). Leaves this process already knows cost nothing;
    the others are made by `partitions_ensure`. Returns the oids of the leaves, for the caller's counting of
    what its statement did; a leaf that retention forbids is neither made nor returned.
    """
    coverage = _coverage or _coverage_load()
    oids: list[int] = []
    missing: dict[int, tuple[str, list[datetime]]] = {}
    for tf_id, (bar, starts) in needed.items():
        for first in starts:
            oid = coverage.leaf(tf_id, datetime_to_ms(first))
            if oid is None:
                missing.setdefault(tf_id, (bar, []))[1].append(first)
            else:
                oids.append(oid)
    if not missing:
        return oids
    for bar, starts in missing.values():
        for first, after in _runs(bar, sorted(starts)):
            partitions_ensure(bar=bar, start=first, end=after)
    coverage = _coverage_load()
    for tf_id, (_, starts) in missing.items():
        oids += [oid for oid in (coverage.leaf(tf_id, datetime_to_ms(first)) for first in starts) if oid is not None]
    return oids


def _runs(bar: str, starts: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Consecutive leaf starts as [first, end) ranges: one `partitions_ensure` per run."""
    unit = partition_unit(bar)
    runs: list[tuple[datetime, datetime]] = []
    for first in starts:
        after = _unit_add(unit, first, 1)
        if runs and runs[-1][1] >= first:
            runs[-1] = (runs[-1][0], max(runs[-1][1], after))
        else:
            runs.append((first, after))
    return runs


# --- close-out --------------------------------------------------------------------------------------------


def partition_close_out(*, now: datetime) -> str | None:
    """Close out one closed leaf not yet closed out, the most recently closed first; returns its name.

    A leaf is closed once its last candle is final (`CLOSE_OUT_AFTER` past its end). Its primary key, bloated
    by the confirms that are never HOT updates (§3.3), is rebuilt (`REINDEX … CONCURRENTLY`), its rows frozen
    (`VACUUM (FREEZE, ANALYZE)`: no anti-wraparound vacuum ever again), the hot-leaf autovacuum settings reset,
    and the leaf marked in its comment. Minutes for a firehose day: one leaf per call. Must run outside a
    transaction (autocommit).
    """
    if connection.in_atomic_block:
        raise RuntimeError("partition_close_out runs outside a transaction: REINDEX CONCURRENTLY and VACUUM")
    sql = _CATALOGUE.format(
        extra="",
        # Not a leaf retention is about to retire (or failed to): rebuilding it would be work thrown away.
        where=" AND NOT i.inhdetachpending AND bounds.m[2]::timestamptz <= %s "
              "AND (t.retention IS NULL OR bounds.m[2]::timestamptz > %s::timestamptz - t.retention) "
              "AND coalesce(obj_description(leaf.oid, 'pg_class'), '') NOT LIKE %s",
        order="6 DESC, t.display_order LIMIT 1",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [now - CLOSE_OUT_AFTER, now, _CLOSED_OUT + "%"])
        row = cursor.fetchone()
        if row is None:
            return None
        name = row[1]
        q = connection.ops.quote_name(name)
        started = time.monotonic()
        cursor.execute(f"REINDEX TABLE CONCURRENTLY {q}")
        cursor.execute(f"VACUUM (FREEZE, ANALYZE) {q}")
        cursor.execute(f"ALTER TABLE {q} RESET ({', '.join(_HOT_NAMES)})")
        cursor.execute(f"COMMENT ON TABLE {q} IS %s", [f"{_CLOSED_OUT} {now.isoformat()}"])
    logger.info("partition closed out: %s (%.1f s)", name, time.monotonic() - started)
    return name
