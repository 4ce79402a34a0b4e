"""The one write path for candles (its SQL is candles/upsert_sql.py; the reads are candles/reads.py).

`candles_upsert` is the only code that writes the candles table: live data, backfill and the admin all
call it. It has two strategies, chosen by the size of the batch, with the same checks and the same
`ON CONFLICT DO UPDATE` rules (shared text below): a large batch (a flush) is copied into a temporary staging
table and merged with one `INSERT … SELECT … ON CONFLICT DO UPDATE`, inside one transaction; a small one (a REST
page) travels as one JSON parameter and is checked, merged and reported on in a single statement, without the
staging table's create, copy and drop. The database enforces the rules:

* a row is validated in SQL (known instrument and bar, decimal numbers, high ≥ max(open, close),
  low ≤ min(open, close), volumes ≥ 0, open time on the bar's boundary); an invalid row is reported
  with its index and reason, and the valid rows of the batch still land;
* a confirmed candle is never replaced by an unconfirmed one, and replaces an open one;
* between two open versions the data decides (cumulative volume, then high, then low), and only states it
  cannot order fall back to the version (receipt time), so a retried flush of an older batch, or a second
  collector of the same shard on a host with another clock, cannot undo a newer write;
* open candles from REST are not stored (REST caches lag; the open candle comes from the WebSocket);
* within one batch, the same key keeps the valid row the database would keep by those same rules;
* rows behind their bar's retention horizon (`Timeframe.retention`) are not stored, and counted as expired.

The table is partitioned by bar, then open time (candles/partitions.py), with no default partition: before
the merge, the leaves the batch needs are made where this process does not know them already. What the merge
inserted and what it updated is read from the transaction's statistics counters of those leaves (PostgreSQL
15 refuses `RETURNING xmax` on a partitioned table).

Numbers are copied straight into typed columns (or cast from the JSON's text by the same input functions), so
PostgreSQL parses each value once. Only a batch that holds text which is not a number goes through a slower text
staging that names the bad column of each bad row. Measured choices are recorded in bench/upsert.py.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

import orjson
import psycopg
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from candles import bar_catalog
from candles.bars import ms_to_datetime
from candles.partitions import coverage_forget, leaf_range, leaf_starts, leaves_cover
from candles.stream import feed
from candles.upsert_sql import (
    COPY_STAGING,
    COPY_TEXT_STAGING,
    CREATE_STAGING,
    CREATE_TEXT_STAGING,
    DROP_STAGING,
    MERGE_JSON,
    MERGE_STAGED,
    PARSE_TEXT_STAGING,
    REPORT,
)

logger = logging.getLogger(__name__)

Number = Decimal | str


class CandleRow(NamedTuple):
    """One candle as the write path takes it: the candle and where it came from (source and version).

    The candle fields are those of the OKX library's two candle types, `CandleText` (OKX's number texts, the live
    path) and `CandleUpdate` (Decimals, for code that computes); `of` makes a row of either. This module does not
    name them: `candles` never imports `collectors`. Field order is the staging table's column order, so a row
    is copied without being rebuilt. Prices and volumes are Decimals or decimal strings, never floats.
    """

    inst_id: str
    bar: str
    open_time_ms: int
    open: Number
    high: Number
    low: Number
    close: Number
    vol: Number | None
    vol_ccy: Number | None
    vol_ccy_quote: Number | None
    confirmed: bool
    source: str  # "ws" or "rest"
    version: int  # receipt time in microseconds since the epoch; newer wins
    # "trade", "mark" or "index": which of the instrument's series (candles.models.PriceKind). Mark and index
    # candles have no volumes (vol and vol_ccy None).
    price: str = "trade"

    @classmethod
    def of(cls, candle: Sequence, *, source: str, version: int) -> CandleRow:
        """The row of a candle with `CandleText`'s or `CandleUpdate`'s fields (their `price` read as an attribute)."""
        return cls(*candle[:11], source, version, candle.price)


# (inst_id, bar, open_time_ms, price) of a CandleRow, in C: a sort or set key for thousands of rows.
candle_key = operator.itemgetter(0, 1, 2, 13)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    index: int
    row: CandleRow
    reason: str

    def __str__(self) -> str:
        r = self.row
        return f"row {self.index} ({r.inst_id} {r.bar} {r.open_time_ms}): {self.reason}"


@dataclass(slots=True)
class UpsertResult:
    received: int = 0
    inserted: int = 0
    updated: int = 0
    # Valid rows that changed nothing: older than the stored version, unconfirmed over confirmed,
    # or a duplicate key within the batch that lost to its twin.
    unchanged: int = 0
    # Open candles from REST, which are never stored.
    skipped_open_rest: int = 0
    # Rows behind their bar's retention horizon (Timeframe.retention): not stored, and no partition is made
    # for them (a dropped one never comes back).
    expired: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.inserted + self.updated



# Batches up to this many rows take the JSON strategy: for a REST page (1-300 rows) one statement instead of a
# temporary table, a COPY, a merge and a drop, a third of the CPU for one row. Past about 600 rows the staging
# table's merge is the cheaper (bench/upsert.py --strategies).
JSON_BATCH_MAX = 500


class _Merged(NamedTuple):
    inserted: int
    updated: int
    skipped_open_rest: int
    rejected: list[tuple[int, str]]  # (index in the batch, reason), in index order
    feed: str | None = None  # the written rows for the live stream (feed lines); None when nobody listens


# What the merge did, from the transaction's own statistics counters over the leaves it wrote to, read before
# and after it: `RETURNING (xmax = 0)` cannot tell an insert from an update on a partitioned table in
# PostgreSQL 15 ("cannot retrieve a system column"), and probing each key first cost a third of the rate
# (docs/storage-design.md §1.3). 1–3.5 ms a batch.
_COUNTERS = """
SELECT coalesce(sum(pg_stat_get_xact_tuples_inserted(r)), 0)::bigint,
       coalesce(sum(pg_stat_get_xact_tuples_updated(r)), 0)::bigint
FROM unnest(%s::oid[]) AS r
"""


def _counters(cursor, leaves: list[int]) -> tuple[int, int]:
    cursor.execute(_COUNTERS, [leaves])
    return cursor.fetchone()


def _split(written: int, before: tuple[int, int], after: tuple[int, int]) -> tuple[int, int]:
    """(inserted, updated) of a merge that wrote `written` rows."""
    inserted, updated = after[0] - before[0], after[1] - before[1]
    if inserted + updated != written:
        # A leaf this process does not know took rows (made again elsewhere since): the split cannot be told,
        # the total can. The catalogue is read again for the next batch.
        logger.info("candle merge: counters say %d + %d for %d rows written; catalogue reread",
                    inserted, updated, written)
        coverage_forget()
        inserted = min(max(inserted, 0), written)
        updated = written - inserted
    return inserted, updated


def _merge_json(rows: Sequence[CandleRow], leaves: list[int], fed: bool) -> _Merged | None:
    """The batch merged in one statement; None when text in it is not a number (nothing was written then)."""
    try:
        # orjson writes plain tuples only, not NamedTuples; a Decimal goes as its str(), as COPY writes it, and
        # Decimal.__str__ refuses any other type (orjson then raises).
        params = {"rows": orjson.dumps(list(map(tuple, rows)), default=Decimal.__str__).decode()}
    except orjson.JSONEncodeError:  # an integer past 64 bits, a value of no candle type: COPY's turn to say
        return None
    # One transaction (a savepoint inside the caller's) for the counters around the merge; a statement that
    # fails then leaves the caller's transaction usable.
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            before = _counters(cursor, leaves)
            cursor.execute(MERGE_JSON[fed], params)
            written, skipped_open_rest, invalid, feed = cursor.fetchone()
            after = _counters(cursor, leaves)
    except (DataError, psycopg.DataError):  # the staging path names the bad column, or raises what is not that
        return None
    return _Merged(*_split(written, before, after), skipped_open_rest, [tuple(item) for item in invalid], feed)


def _stage_text_fallback(cursor, rows: Sequence[CandleRow]) -> list[tuple[int, str]]:
    cursor.execute(CREATE_TEXT_STAGING)
    with cursor.copy(COPY_TEXT_STAGING) as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute(PARSE_TEXT_STAGING)
    return cursor.fetchall()


def _merge_staged(rows: Sequence[CandleRow], leaves: list[int], fed: bool) -> _Merged:
    """The batch copied into a temporary staging table and merged from there, in one transaction."""
    has_duplicates = len(set(map(candle_key, rows))) < len(rows)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(CREATE_STAGING)
        try:
            with transaction.atomic(), cursor.copy(COPY_STAGING) as copy:
                for row in rows:
                    copy.write_row(row)
            unparsable: list[tuple[int, str]] = []
        except psycopg.DataError:  # the COPY is not wrapped by Django, so psycopg's own class
            unparsable = _stage_text_fallback(cursor, rows)
        before = _counters(cursor, leaves)
        cursor.execute(MERGE_STAGED[has_duplicates, fed])
        written, *feed = cursor.fetchone()
        after = _counters(cursor, leaves)
        skipped_open_rest, invalid = 0, []
        # Live flushes usually write every row; only a batch with rows left over needs the second pass
        # that says which were invalid and which were REST's open candles.
        if written < len(rows):
            cursor.execute(REPORT)
            skipped_open_rest, invalid = cursor.fetchone()
        # ON COMMIT DROP alone would leave the tables to a second call inside the same outer transaction.
        cursor.execute(DROP_STAGING)
    return _Merged(*_split(written, before, after), skipped_open_rest,
                   sorted(unparsable + [tuple(item) for item in invalid]), feed[0] if feed else None)


class _Batch(NamedTuple):
    rows: Sequence[CandleRow]  # the rows to merge
    positions: list[int] | None  # where they sit in the caller's batch, when expired rows were left out
    expired: int
    leaves: list[int]  # oids of the leaves the rows belong in, made if they were missing


# Open times any timestamp can hold (years 1 to 9999); the merge rejects the others, and they need no leaf.
_MS_MIN, _MS_MAX = -62_135_596_800_000, 253_402_300_799_999
# A batch whose open times of one bar span more leaves than this (a backfill mixed with live rows) gets leaves
# only for the periods its rows fall in, not for every period between its first and last row.
_SPAN_LEAVES_MAX = 4
_ONE_MS = timedelta(milliseconds=1)


def _open_ms(value: object) -> int | None:
    """An open time as the merge will read it, or None where it will reject the row anyway."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _batch_prepare(rows: Sequence[CandleRow], *, fresh: bool) -> _Batch:
    """Leave out the rows behind their bar's retention horizon, and make sure the others' leaves exist.

    One pass over the rows for each bar's first and last open time. Rows are counted expired only against a
    retention read just now (`fresh`), so an operator's lengthened retention never costs a row.
    """
    horizons = bar_catalog.horizons_ms(timezone.now(), fresh=fresh)
    spans: dict[str, list[int]] = {}
    expired: list[int] = []
    for position, row in enumerate(rows):
        bar, ms = row[1], row[2]
        if type(ms) is not int:
            ms = _open_ms(ms)
            if ms is None:
                continue
        if type(bar) is not str or not _MS_MIN <= ms <= _MS_MAX:
            continue
        horizon = horizons.get(bar)
        if horizon is not None and ms < horizon:
            expired.append(position)
            continue
        span = spans.get(bar)
        if span is None:
            spans[bar] = [ms, ms]
        elif ms < span[0]:
            span[0] = ms
        elif ms > span[1]:
            span[1] = ms
    if expired and not fresh:
        return _batch_prepare(rows, fresh=True)
    needed: dict[int, tuple[str, list[datetime]]] = {}
    for bar, (low, high) in spans.items():
        tf_id = bar_catalog.timeframe_id(bar)
        if tf_id is None:  # the merge rejects the rows
            continue
        try:
            starts = leaf_starts(bar, ms_to_datetime(low), ms_to_datetime(high) + _ONE_MS)
            if len(starts) > _SPAN_LEAVES_MAX:
                times = (_open_ms(row[2]) for row in rows if row[1] == bar)
                starts = sorted({leaf_range(bar, ms_to_datetime(ms))[0] for ms in times
                                 if ms is not None and _MS_MIN <= ms <= _MS_MAX})
        except (OverflowError, ValueError):  # out of any timestamp's range: the merge says so
            continue
        needed[tf_id] = (bar, starts)
    leaves = leaves_cover(needed)
    if not expired:
        return _Batch(rows, None, 0, leaves)
    left_out = set(expired)
    positions = [position for position in range(len(rows)) if position not in left_out]
    return _Batch([rows[position] for position in positions], positions, len(expired), leaves)


def _is_missing_leaf(exc: IntegrityError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == "23514" and "no partition of relation" in str(exc)


def _write(rows: Sequence[CandleRow], *, fresh: bool) -> tuple[_Batch, _Merged]:
    batch = _batch_prepare(rows, fresh=fresh)
    if not batch.rows:
        return batch, _Merged(0, 0, 0, [])
    # Asked once a batch (a cached Redis read): with no stream client anywhere the merge returns a count only.
    fed = feed.listening()
    merged = _merge_json(batch.rows, batch.leaves, fed) if len(batch.rows) <= JSON_BATCH_MAX else None
    if merged is None:
        merged = _merge_staged(batch.rows, batch.leaves, fed)
    return batch, merged


def candles_upsert(*, rows: Sequence[CandleRow]) -> UpsertResult:
    """Write a batch of candles in one transaction; see the module docstring for the rules.

    Invalid rows come back in `result.rejected` (and are logged); rows behind their bar's retention horizon
    are counted in `result.expired` and not stored. Database errors propagate and roll the whole batch back,
    so a caller that keeps the batch on failure loses nothing.
    """
    result = UpsertResult(received=len(rows))
    if not rows:
        return result
    try:
        batch, merged = _write(rows, fresh=False)
    except IntegrityError as exc:
        if not _is_missing_leaf(exc):
            raise
        # This process's catalogue was stale: a leaf it knew was rolled back, detached or dropped since.
        coverage_forget()
        batch, merged = _write(rows, fresh=True)
    if merged.feed is not None and merged.inserted + merged.updated:
        # After the caller's outermost commit, never before: a stream client must not see a version that a
        # rollback takes back. A rolled-back transaction drops the callback with it.
        transaction.on_commit(functools.partial(feed.publish, merged.feed))
    positions = batch.positions
    result.inserted = merged.inserted
    result.updated = merged.updated
    result.skipped_open_rest = merged.skipped_open_rest
    result.expired = batch.expired
    result.rejected = [
        RejectedRow(index, rows[index], reason)
        for index, reason in ((seq if positions is None else positions[seq], reason) for seq, reason in merged.rejected)
    ]
    result.unchanged = (len(rows) - len(result.rejected) - merged.skipped_open_rest - batch.expired
                        - merged.inserted - merged.updated)
    for item in result.rejected[:20]:
        logger.warning("candle rejected: %s", item)
    if len(result.rejected) > 20:
        logger.warning("candle batch: %d more rows rejected", len(result.rejected) - 20)
    if batch.expired:
        logger.info("candle batch: %d rows behind their bar's retention horizon, not stored", batch.expired)
    return result
