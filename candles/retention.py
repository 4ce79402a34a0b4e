"""Retention per bar: candles leave the database a whole partition at a time, never by a DELETE.

A bar's horizon is `Timeframe.horizon(now)` (now − its retention; a bar without retention keeps everything). A
leaf goes once its upper bound is at or behind the horizon, so a candle inside the horizon, even by one
millisecond, is never dropped; a bar keeps between its retention and its retention plus one leaf.

Retiring a leaf takes four steps, and each one can be interrupted and is taken up again by the next run
(docs/storage-design.md §1.5):

1. **mark**: `COMMENT ON TABLE <leaf> IS 'okx-candles:retired {...}'` with its bar and range. It is written
   before the detach, so that a detached table is never without it: the comment is how the next run finds the
   tables that left the tree but are not dropped yet (`retired_tables`). No bookkeeping table is needed,
   and the state survives any restart.
2. **detach**: `ALTER TABLE <bar parent> DETACH PARTITION <leaf> CONCURRENTLY`, in autocommit. It takes only
   SHARE UPDATE EXCLUSIVE on the parent, so readers and the live writer go on; it waits for the transactions
   that can still see the leaf. Interrupted, it leaves the leaf "detach pending", which the next run
   completes with `… DETACH PARTITION <leaf> FINALIZE` before anything else (a parent allows one pending
   detach at a time).
3. **archive**, when the bar's `archive` is set: `candles.archive.archive_write` writes and verifies a
   Parquet copy of the detached table. A failure (or archiving being unavailable) keeps the table for the
   next run; a success is written into the comment, so a drop that fails afterwards does not archive twice.
4. **drop**: `DROP TABLE <leaf>`.

Every statement that may wait for a lock runs under `lock_timeout` (STORAGE_LOCK_TIMEOUT_MS): behind a long
reader it gives up within that time, the step is counted as failed, and the next run retries it. Running
twice is harmless: the second run finds nothing left to do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from psycopg import sql

from candles import bar_catalog
from candles.bars import ms_to_datetime
from candles.models import Timeframe
from candles.partitions import Leaf, bar_table, partition_list

logger = logging.getLogger(__name__)

# The comment that marks a leaf being retired; the JSON after it carries the bar, the range and whether the
# archive is written.
RETIRED_MARK = "okx-candles:retired "

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RetiredTable:
    """A leaf detached by retention and not dropped yet (its archive failed, or its drop timed out)."""

    name: str
    bar: str
    start: datetime
    end: datetime
    archived: bool
    bytes: int
    live_rows: int


@dataclass(frozen=True, slots=True)
class BarPlan:
    """One bar's partitions against its horizon."""

    bar: str
    timeframe_id: int
    retention: timedelta | None
    horizon: datetime | None
    archive: bool
    leaves: tuple[Leaf, ...]  # attached and detach-pending, oldest first
    due: tuple[Leaf, ...]  # of those, the ones wholly behind the horizon
    retired: tuple[RetiredTable, ...]  # detached, waiting for their archive or drop
    # When the next table of this bar may go: the oldest upper bound plus the retention. At or before `now` when
    # something is due (overdue if it stays there); None when the bar keeps everything or has no leaf.
    next_drop: datetime | None

    @property
    def bytes(self) -> int:
        return sum(leaf.bytes for leaf in self.leaves) + sum(t.bytes for t in self.retired)

    @property
    def live_rows(self) -> int:
        return sum(leaf.live_rows for leaf in self.leaves)


@dataclass(slots=True)
class BarCounts:
    finalized: int = 0
    detached: int = 0
    archived: int = 0
    dropped: int = 0
    failed: int = 0
    bytes_freed: int = 0

    @property
    def busy(self) -> bool:
        return any((self.finalized, self.detached, self.archived, self.dropped, self.failed))

    def __str__(self) -> str:
        parts = [f"{n} {name}" for name in ("finalized", "detached", "archived", "dropped", "failed")
                 if (n := getattr(self, name))]
        if self.bytes_freed:
            parts.append(f"{human_bytes(self.bytes_freed)} freed")
        return ", ".join(parts) or "nothing to do"


@dataclass(slots=True)
class RetentionResult:
    bars: dict[str, BarCounts] = field(default_factory=dict)

    def of(self, bar: str) -> BarCounts:
        return self.bars.setdefault(bar, BarCounts())

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.bars.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.bars.values())

    @property
    def bytes_freed(self) -> int:
        return sum(c.bytes_freed for c in self.bars.values())

    def __str__(self) -> str:
        return "; ".join(f"{bar}: {c}" for bar, c in self.bars.items() if c.busy) or "nothing to do"


def human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# --- the plan ---------------------------------------------------------------------------------------------


_RETIRED = """
SELECT c.relname, d.description, pg_total_relation_size(c.oid), pg_stat_get_live_tuples(c.oid)
FROM pg_description d
JOIN pg_class c ON c.oid = d.objoid
WHERE d.classoid = 'pg_class'::regclass AND d.objsubid = 0 AND d.description LIKE %(mark)s
  AND c.relkind = 'r' AND NOT c.relispartition AND pg_table_is_visible(c.oid)
ORDER BY c.relname
"""


def _mark_text(bar: str, start: datetime, end: datetime, *, archived: bool = False) -> str:
    return RETIRED_MARK + json.dumps({"bar": bar, "start": start.isoformat(), "end": end.isoformat(),
                                      "archived": archived})


def retired_tables() -> list[RetiredTable]:
    """The tables retention detached and has not dropped yet (found by their comment), oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(_RETIRED, {"mark": RETIRED_MARK + "%"})
        rows = cursor.fetchall()
    tables = []
    for name, description, size, live_rows in rows:
        try:
            mark = json.loads(description[len(RETIRED_MARK):])
            tables.append(RetiredTable(name, mark["bar"], datetime.fromisoformat(mark["start"]),
                                       datetime.fromisoformat(mark["end"]), bool(mark.get("archived")),
                                       size or 0, live_rows or 0))
        except (ValueError, KeyError, TypeError):
            logger.error("retention: %s carries an unreadable retirement mark %r; left alone", name, description)
    tables.sort(key=lambda t: (t.bar, t.start))
    return tables


def retention_plan(*, now: datetime) -> list[BarPlan]:
    """Every bar with partitions (or retired tables), in display order: its horizon, the leaves due (upper
    bound ≤ horizon), the tables detached and not dropped, and when the next one may go."""
    timeframes = list(Timeframe.objects.order_by("display_order", "code"))
    leaves: dict[str, list[Leaf]] = {}
    for leaf in partition_list():
        leaves.setdefault(leaf.bar, []).append(leaf)
    retired: dict[str, list[RetiredTable]] = {}
    for table in retired_tables():
        retired.setdefault(table.bar, []).append(table)

    plans = []
    for tf in timeframes:
        own = sorted(leaves.get(tf.code, ()), key=lambda leaf: leaf.start)
        gone = retired.get(tf.code, [])
        if not own and not gone:
            continue
        horizon = tf.horizon(now)
        due = tuple(leaf for leaf in own if horizon is not None and leaf.end <= horizon)
        ends = [leaf.end for leaf in own] + [t.end for t in gone]
        next_drop = min(ends) + tf.retention if tf.retention is not None and ends else None
        plans.append(BarPlan(tf.code, tf.pk, tf.retention, horizon, tf.archive, tuple(own), due, tuple(gone),
                             next_drop))
    return plans


def bar_horizon(bar: str, *, now: datetime) -> datetime | None:
    """The retention horizon of the bar with this exact code; None when it keeps everything or does not exist.

    Asked on every /data request, so it comes from this process's catalogue of bars, not a query: an admin edit
    of a retention reaches it within `bar_catalog.RETENTION_TTL_S`."""
    horizon_ms = bar_catalog.horizons_ms(now).get(bar)
    return None if horizon_ms is None else ms_to_datetime(horizon_ms)


def iso_z(moment: datetime) -> str:
    """ISO 8601 in UTC as the API writes open times: `2024-01-16T19:00:00Z`, milliseconds only when there are."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


# --- enforcing it -----------------------------------------------------------------------------------------


class _Skip(Exception):
    """A step that cannot be taken now; the reason is logged, and the next run tries again."""


def _is_lock_timeout(exc: BaseException) -> bool:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return getattr(cause, "sqlstate", None) == "55P03"


def _run(statement: sql.Composable, what: str) -> None:
    """One DDL statement in autocommit, giving up after STORAGE_LOCK_TIMEOUT_MS of waiting for a lock.

    The timeout is set for the session around the statement alone (a concurrent detach cannot run in a
    transaction block, so SET LOCAL cannot scope it), and reset at once: the connection is reused, and the
    archive in between must not give up on its own waits."""
    connection.ensure_connection()
    text = statement.as_string(connection.connection)
    started = time.monotonic()
    with connection.cursor() as cursor:
        try:
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{settings.STORAGE_LOCK_TIMEOUT_MS}ms"])
            cursor.execute(text)
        except DatabaseError as exc:
            if _is_lock_timeout(exc):
                raise _Skip(f"{what}: gave up waiting for a lock after {time.monotonic() - started:.2f} s "
                            f"(lock_timeout {settings.STORAGE_LOCK_TIMEOUT_MS} ms); retried next run") from None
            raise _Skip(f"{what}: {type(exc).__name__}: {exc}".strip()) from None
        finally:
            # A broken connection is discarded by Django, and its setting with it.
            with suppress(DatabaseError):
                cursor.execute("RESET lock_timeout")


def _mark(name: str, text: str) -> None:
    _run(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(name), sql.Literal(text)), f"mark {name}")


def _archive_unavailable() -> str | None:
    """Why archiving cannot run here, or None when it can."""
    if not getattr(settings, "CANDLE_ARCHIVE_DIR", ""):
        return "CANDLE_ARCHIVE_DIR is not set"
    try:
        import candles.archive  # noqa: F401  (optional until the archive is installed)
    except ImportError as exc:
        return f"candles.archive cannot be imported ({exc})"
    return None


def _archive(table: RetiredTable) -> None:
    """The seam to the Parquet archive: returns once the rows are written and verified, raises _Skip otherwise."""
    reason = _archive_unavailable()
    if reason is not None:
        raise _Skip(f"archive {table.name}: {reason}")
    from candles.archive import archive_write

    try:
        archive_write(table=table.name, bar=table.bar, start=table.start, end=table.end)
    except Exception as exc:
        logger.exception("retention: archive of %s (%s) failed", table.name, table.bar)
        raise _Skip(f"archive {table.name}: {type(exc).__name__}: {exc}") from None


def _say(progress: Progress | None, line: str) -> None:
    if progress is not None:
        progress(line)


def retention_enforce(*, now: datetime, progress: Progress | None = None) -> RetentionResult:
    """Retire every leaf wholly behind its bar's horizon: finalize pending detaches, detach, archive when the bar
    archives, drop. Must run in autocommit (outside any atomic block). Safe to run twice, and to interrupt."""
    if connection.in_atomic_block:
        raise RuntimeError("retention_enforce detaches concurrently, which cannot run inside a transaction")
    result = RetentionResult()
    plans = {plan.bar: plan for plan in retention_plan(now=now)}
    for plan in plans.values():
        _enforce_bar(plan, result.of(plan.bar), progress)
    # What the loop detached, and what earlier runs detached and could not drop: archive and drop them.
    for table in retired_tables():
        _retire_table(table, plans.get(table.bar), result.of(table.bar), progress)
    result.bars = {bar: counts for bar, counts in result.bars.items() if counts.busy}
    if result.bars:
        logger.info("retention: %s", result)
    return result


def _skipped(skip: _Skip, bar: str, counts: BarCounts, progress: Progress | None, consequence: str = "") -> None:
    """A step given up for now (a lock not had in time): counted as failed, logged, and retried by the next run."""
    counts.failed += 1
    logger.warning("retention: %s%s", skip, consequence)
    _say(progress, f"  {bar}: {skip}")


def _enforce_bar(plan: BarPlan, counts: BarCounts, progress: Progress | None) -> None:
    parent = bar_table(plan.bar)
    due = {leaf.name for leaf in plan.due}
    for leaf in (leaf for leaf in plan.leaves if leaf.detach_pending):
        try:
            if leaf.name in due:
                _mark(leaf.name, _mark_text(plan.bar, leaf.start, leaf.end))
            _run(sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(
                sql.Identifier(parent), sql.Identifier(leaf.name)), f"finalize the detach of {leaf.name}")
        except _Skip as skip:
            # A parent takes one pending detach at a time: no other leaf of this bar can go before it.
            _skipped(skip, plan.bar, counts, progress)
            return
        counts.finalized += 1
        _say(progress, f"  {plan.bar}: finalized the pending detach of {leaf.name}")
        if leaf.name not in due:
            logger.warning("retention: finalized a pending detach of %s that retention did not start (it is not "
                           "behind the %s horizon); the table is left as it is", leaf.name, plan.bar)

    for leaf in (leaf for leaf in plan.due if not leaf.detach_pending):
        if plan.archive and (reason := _archive_unavailable()) is not None:
            # Nothing is detached that could not be archived: the leaf stays readable where it is.
            counts.failed += 1
            logger.error("retention: %s keeps %d leaves past its horizon: it archives, and %s", plan.bar,
                         len(plan.due), reason)
            _say(progress, f"  {plan.bar}: not retired, archiving is unavailable ({reason})")
            return
        try:
            _mark(leaf.name, _mark_text(plan.bar, leaf.start, leaf.end))
            _run(sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                sql.Identifier(parent), sql.Identifier(leaf.name)), f"detach {leaf.name}")
        except _Skip as skip:
            _skipped(skip, plan.bar, counts, progress)
            return
        counts.detached += 1
        _say(progress, f"  {plan.bar}: detached {leaf.name} ({_range(leaf.start, leaf.end)})")


def _retire_table(table: RetiredTable, plan: BarPlan | None, counts: BarCounts, progress: Progress | None) -> None:
    if plan is None or plan.horizon is None or table.end > plan.horizon:
        # The bar's retention was lengthened or removed after the detach: this data is inside the horizon now,
        # and it is not dropped. Putting it back is an operator's decision (ATTACH PARTITION).
        logger.warning("retention: %s (%s, %s) was detached but is no longer behind the bar's horizon; kept. "
                       "Attach it again or drop it by hand.", table.name, table.bar, _range(table.start, table.end))
        return
    try:
        if plan.archive and not table.archived:
            _archive(table)
            _mark(table.name, _mark_text(table.bar, table.start, table.end, archived=True))
            counts.archived += 1
            _say(progress, f"  {table.bar}: archived {table.name}")
        _run(sql.SQL("DROP TABLE {}").format(sql.Identifier(table.name)), f"drop {table.name}")
    except _Skip as skip:
        _skipped(skip, table.bar, counts, progress, "; the detached table stays until then")
        return
    counts.dropped += 1
    counts.bytes_freed += table.bytes
    logger.info("retention: dropped %s (%s, %s): %d rows, %s", table.name, table.bar,
                _range(table.start, table.end), table.live_rows, human_bytes(table.bytes))
    _say(progress, f"  {table.bar}: dropped {table.name} ({_range(table.start, table.end)}, {table.live_rows:,} "
                   f"rows, {human_bytes(table.bytes)})")


def _range(start: datetime, end: datetime) -> str:
    return f"{start.isoformat()} to {end.isoformat()}"
