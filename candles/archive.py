"""The Parquet archive of candle partitions: one file per bar per UTC day, verified against PostgreSQL.

    result = archive_write(table="candles_candle_1s_20261201", bar="1s",
                           start=datetime(2026, 12, 1, tzinfo=UTC), end=datetime(2026, 12, 2, tzinfo=UTC))

Retention detaches a partition (leaf) past its bar's horizon, archives it here, and drops it only if this returned:
every exception means "keep the leaf". The decision and its measurements are in docs/storage-design.md §4; the
layout, the columns and how to read the files are in docs/archive.md.

1. **Checksum in SQL.** PostgreSQL hashes the canonical text of every row of the table, per instrument and UTC
   day (bounded memory: at most one instrument-day of text at a time). This also refuses a table holding rows
   the archive would not cover (outside the range, another bar, an instrument we do not know).
2. **Write.** `COPY (SELECT …) TO STDOUT (FORMAT csv)` streams the rows, ordered by day, instrument and open
   time; PostgreSQL formats every number once (`numeric::text`, exactly as stored) and pyarrow's CSV reader
   parses chunks of the stream, so memory stays bounded however large the leaf. Each day goes to a temporary
   file, is fsynced and renamed into place; when the COPY is over, each file in place gets its `ArchiveFile`
   row (status `written`), also when a later day failed.
3. **Verify.** Each file is read back, the same canonical text is rebuilt from its columns and hashed; the row
   counts and hashes must equal PostgreSQL's. Then the files are `ok`; otherwise all of this run's files are
   `failed` and `ArchiveVerificationError` says what differed.

Running it again for the same leaf rewrites the same files (byte-identical for the same rows) and updates the
same rows. pyarrow is imported only here and in candles/archive_format.py (the file format and its readers), and
only when a function needs it.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from candles.archive_format import (
    COPY_SQL,
    DIGESTS_SQL,
    FORMAT_VERSION,
    LINE_SQL,
    NUMBERS,
    SOURCE_SQL,
    archive_metadata,
    archive_path,
    archive_series,
    csv_options,
    digest_of_series,
    file_schema,
    series_name,
    to_file_table,
)
from candles.models import ArchiveFile, ArchiveStatus, Timeframe
from candles.parquet import open_writer
from okxproject.logs import log_context

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

LEAF_COLUMNS = frozenset({"instrument_id", "timeframe_id", "open_time", "version", "confirmed", "source", *NUMBERS})
# CSV bytes parsed at a time, and rows per row group. Parsed chunks are gathered into row groups: a 72k-row group
# (one 8 MB chunk) made files 19 % larger than 290k-row ones, and 32 MB chunks cost 100 MB more peak memory.
CSV_CHUNK_BYTES = 8 << 20
ROW_GROUP_ROWS = 262_144
PROGRESS_EVERY_S = 10.0
DAY = timedelta(days=1)
DAY_MS = 86_400_000
TABLE_NAME = re.compile(r"(?:[a-z_][a-z0-9_$]{0,62}\.)?[a-z_][a-z0-9_$]{0,62}")



class ArchiveError(Exception):
    """The table is not archived (or not verifiably): keep it."""


class ArchiveDisabled(ArchiveError):
    """CANDLE_ARCHIVE_DIR is empty."""


class ArchiveBusy(ArchiveError):
    """Another process is archiving the same bar right now."""


class ArchiveVerificationError(ArchiveError):
    """A file read back does not match PostgreSQL's checksum of the table; the files are marked failed."""

    def __init__(self, message: str, problems: dict[date, list[str]]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class ArchiveResult:
    """A verified archive of one table: its files (all `ok`) and totals."""

    table: str
    bar: str
    start: datetime
    end: datetime
    files: list[ArchiveFile]
    rows: int
    bytes: int
    seconds: float
    # Where the time went: PostgreSQL's checksum, the COPY and the writing, the read-back.
    checksum_s: float = 0.0
    write_s: float = 0.0
    verify_s: float = 0.0


@dataclass
class DayDigest:
    """The rows of one UTC day as hashes of their canonical text: one entry per series, in file order.

    A series is named by its instrument id, and by its kind after a `|` when it is not trade candles
    (`BTC-USDT-SWAP|mark`, `BTC-USD|index`): the mark-price candles of an id never merge with its trades."""

    day: date
    series: list[tuple[str, int, str]] = field(default_factory=list)  # (series name, rows, sha256 of its lines)

    @property
    def rows(self) -> int:
        return sum(rows for _inst_id, rows, _digest in self.series)

    @property
    def sha256(self) -> str:
        return digest_of_series(self.series)



def archive_root(directory: Path | str | None = None) -> Path:
    """The archive's directory: `directory` if given, else CANDLE_ARCHIVE_DIR; ArchiveDisabled when neither."""
    configured = settings.CANDLE_ARCHIVE_DIR if directory is None else str(directory)
    if not configured.strip():
        raise ArchiveDisabled(
            "Archiving is off: CANDLE_ARCHIVE_DIR is empty. Set it to a directory (shared storage when workers "
            "run on several hosts) to archive candle partitions to Parquet.")
    # Absolute, so a worker started from another directory writes to the same place.
    return Path(configured.strip()).expanduser().resolve()


def archive_list(*, bar: str | None = None) -> list[ArchiveFile]:
    """Archive files known to the database, by bar then day."""
    files = ArchiveFile.objects.select_related("timeframe").order_by("timeframe__display_order", "start")
    if bar is not None:
        files = files.filter(timeframe__code=bar)
    return list(files)


# --- writing ------------------------------------------------------------------------------------------------------


# --- writing ------------------------------------------------------------------------------------------------------


class _DayFile:
    """One day's file: written under a temporary name, then made durable and renamed into place."""

    def __init__(self, path: Path, schema: pa.Schema, metadata: dict[str, str]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        self.schema = schema
        self.writer = open_writer(self.temporary, schema, metadata)
        self.rows = 0
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def write(self, raw: pa.Table) -> None:
        """Rows as parsed from the CSV; written as a row group once ROW_GROUP_ROWS of them are gathered."""
        self.pending.append(raw)
        self.pending_rows += raw.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            table = to_file_table(pa.concat_tables(self.pending), self.schema)
            self.pending, self.pending_rows = [], 0
            self.writer.write_table(table, row_group_size=table.num_rows)
            self.rows += table.num_rows

    def commit(self) -> int:
        self._flush()
        self.writer.close()
        # The leaf is dropped once this returns: the file must be on disk, not in the page cache.
        with open(self.temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(self.temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return self.path.stat().st_size

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # already failing; the temporary file goes either way
            logger.debug("closing an abandoned archive writer failed", exc_info=True)
        self.temporary.unlink(missing_ok=True)


def _render(template: str, **parts: sql.Composable) -> str:
    connection.ensure_connection()
    return sql.SQL(template).format(**parts).as_string(connection.connection)


def _leaf(table: str) -> sql.Identifier:
    """The table as a quoted identifier, after checking it exists and has every column read here (by name)."""
    if not TABLE_NAME.fullmatch(table):
        raise ArchiveError(f"{table!r} is not a table name (lower-case letters, digits and _, optionally schema.)")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname, c.relname, array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid "
            "AND a.attnum > 0 AND NOT a.attisdropped) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s) AND c.relkind = 'r'", [table])
        found = cursor.fetchone()
    if found is None:
        raise ArchiveError(f"No table {table!r} to archive.")
    schema, name, columns = found
    missing = sorted(LEAF_COLUMNS - set(columns))
    if missing:
        raise ArchiveError(f"Table {table!r} lacks the candle columns {', '.join(missing)}.")
    return sql.Identifier(schema, name)


def _day_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ArchiveError("start and end must be aware datetimes (UTC).")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    # A file holds a whole UTC day: a range cut inside a day would make two leaves write the same file.
    for moment in (start, end):
        if moment != datetime.combine(moment.date(), datetime.min.time(), UTC):
            raise ArchiveError(f"The range must start and end at 00:00 UTC; {moment.isoformat()} does not.")
    if end <= start:
        raise ArchiveError(f"Empty range: {start.isoformat()} to {end.isoformat()}.")
    return start, end


def _sql_digests(leaf: sql.Identifier, table: str, timeframe: Timeframe, start: datetime,
                 end: datetime) -> dict[date, DayDigest]:
    """PostgreSQL's checksum of every row of the table, by day; refuses rows the archive would not cover."""
    with connection.cursor() as cursor:
        cursor.execute(_render(DIGESTS_SQL, line=sql.SQL(LINE_SQL), table=leaf))
        groups = cursor.fetchall()
    days: dict[date, DayDigest] = {}
    stray: list[str] = []
    for day, timeframe_id, instrument_id, inst_id, price, rows, digest in groups:
        if timeframe_id != timeframe.pk:
            stray.append(f"{rows} rows of timeframe id {timeframe_id} on {day}")
        elif inst_id is None:
            stray.append(f"{rows} rows of instrument id {instrument_id}, unknown to candles_instrument, on {day}")
        elif not start.date() <= day < end.date():
            stray.append(f"{rows} rows of {inst_id} on {day}")
        else:
            days.setdefault(day, DayDigest(day)).series.append((series_name(inst_id, price), rows, digest))
    if stray:
        shown = "; ".join(stray[:5]) + (f"; and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise ArchiveError(f"Table {table} holds rows an archive of {timeframe.code} from {start.date()} to "
                           f"{end.date()} (exclusive) would not cover, so it would lose them: {shown}.")
    return days


def _csv_chunks(statement: str) -> Iterator[bytearray]:
    """COPY's CSV output in chunks of whole lines of about CSV_CHUNK_BYTES."""
    pending = bytearray()
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for block in copy:
            pending += block
            if len(pending) >= CSV_CHUNK_BYTES:
                # The chunk is handed over as it is, not copied: two copies of it were a third of peak memory.
                cut = pending.rfind(b"\n") + 1
                chunk, pending = pending, pending[cut:]
                del chunk[cut:]
                yield chunk
    if pending:
        yield pending


def _split_by_day(raw: pa.Table) -> Iterator[tuple[date, pa.Table]]:
    """Runs of one UTC day in rows already ordered by day."""
    import pyarrow.compute as pc

    open_ms = raw["open_time"]
    first_day, last_day = open_ms[0].as_py() // DAY_MS, open_ms[-1].as_py() // DAY_MS
    begin = 0
    for day_number in range(first_day, last_day + 1):
        stop = raw.num_rows if day_number == last_day else pc.sum(pc.less(open_ms, (day_number + 1) * DAY_MS)).as_py()
        if stop > begin:
            yield date(1970, 1, 1) + timedelta(days=day_number), raw.slice(begin, stop - begin)
        begin = stop


@dataclass
class _Written:
    day: date
    path: Path
    rows: int
    bytes: int


def _write_days(leaf: sql.Identifier, table: str, timeframe: Timeframe, start: datetime, end: datetime,
                root: Path, expected: dict[date, DayDigest], written: list[_Written]) -> None:
    """Writes each day's file and appends it to `written` once it is in place (also when a later day fails)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    schema = file_schema()
    read_options, convert_options = csv_options()
    # Ordered by day only when there are several: on a day's leaf the primary key's order needs no sort.
    day_first = sql.SQL("(c.open_time AT TIME ZONE 'UTC')::date," if end - start > DAY else "")
    statement = _render(COPY_SQL, source=sql.SQL(SOURCE_SQL), table=leaf, timeframe=sql.Literal(timeframe.pk),
                        start=sql.Literal(start), end=sql.Literal(end), day_first=day_first)
    current: _DayFile | None = None
    current_day: date | None = None
    rows = 0
    started = last_report = time.monotonic()
    chunks = _csv_chunks(statement)
    try:
        for chunk in chunks:
            raw = pacsv.read_csv(pa.py_buffer(chunk), read_options=read_options, convert_options=convert_options)
            for day, part in _split_by_day(raw):
                if day != current_day:
                    if current is not None:
                        written.append(_commit(current, current_day))
                    if day not in expected:
                        raise ArchiveError(f"Table {table} gained rows on {day} while it was archived.")
                    digest = expected[day]
                    current_day = day
                    current = _DayFile(archive_path(root, timeframe.code, day), schema, {
                        "format": FORMAT_VERSION, "bar": timeframe.code,
                        "start": _iso(_day_start(day)), "end": _iso(_day_start(day) + DAY),
                        "rows": str(digest.rows), "instruments": str(len(digest.series)),
                        "series": str(len(digest.series)),
                        "sha256": digest.sha256, "table": table,
                    })
                current.write(part)
            rows += raw.num_rows
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                logger.info("archiving %s: %s rows so far (%.0f rows/s)", table, f"{rows:,}", rows / (now - started))
        if current is not None:
            written.append(_commit(current, current_day))
            current = None
    finally:
        # Ends the COPY now, not whenever the generator is collected, when a chunk failed mid-stream.
        chunks.close()
        if current is not None:
            current.abort()
    missing = sorted(set(expected) - {item.day for item in written})
    if missing:
        raise ArchiveError(f"Table {table} lost its rows of {', '.join(map(str, missing))} while it was archived.")


def _commit(day_file: _DayFile, day: date) -> _Written:
    size = day_file.commit()  # first: it writes the last row group, which `rows` counts
    return _Written(day, day_file.path, day_file.rows, size)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- verifying ----------------------------------------------------------------------------------------------------


def _file_problems(item: ArchiveFile, expected: DayDigest) -> list[str]:
    """What differs between a file read back and PostgreSQL's checksum of its day; empty when it matches."""
    import pyarrow as pa

    try:
        metadata = archive_metadata(item.path)
        series = archive_series(item.path)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        return [f"{item.path} cannot be read back: {exc}"]
    problems = []
    want = {"bar": item.timeframe.code, "rows": str(expected.rows), "sha256": expected.sha256}
    for key, value in want.items():
        if metadata.get(key) != value:
            problems.append(f"metadata {key} is {metadata.get(key)!r}, expected {value!r}")
    found_rows = sum(rows for _inst_id, rows, _digest in series)
    if found_rows != expected.rows:
        problems.append(f"{found_rows:,} rows in the file, {expected.rows:,} in the table")
    if series != expected.series:
        table = {inst_id: (rows, digest) for inst_id, rows, digest in expected.series}
        in_file = {inst_id: (rows, digest) for inst_id, rows, digest in series}
        differing = [inst_id for inst_id in table if in_file.get(inst_id) != table[inst_id]]
        extra = [inst_id for inst_id in in_file if inst_id not in table]
        if differing:
            problems.append(f"rows differ from the table for {', '.join(differing[:10])}"
                            + (f" and {len(differing) - 10} more" if len(differing) > 10 else ""))
        if extra:
            problems.append(f"instruments not in the table: {', '.join(extra[:10])}")
        if not differing and not extra:
            problems.append("instruments are not in the table's order")
    return problems


def _verify(files: list[ArchiveFile], expected: dict[date, DayDigest]) -> dict[date, list[str]]:
    problems: dict[date, list[str]] = {}
    for item in files:
        day = item.start.astimezone(UTC).date()
        found = _file_problems(item, expected[day])
        if found:
            problems[day] = found
    return problems


# --- the whole -----------------------------------------------------------------------------------------------------


@contextmanager
def _bar_lock(timeframe: Timeframe) -> Iterator[None]:
    """One archive writer per bar at a time: two would rename over each other's files and rows."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext('okx_candles.archive'), %s)", [timeframe.pk])
        if not cursor.fetchone()[0]:
            raise ArchiveBusy(f"Another process is archiving bar {timeframe.code}; try again when it is done.")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtext('okx_candles.archive'), %s)", [timeframe.pk])


def archive_write(*, table: str, bar: str, start: datetime, end: datetime, directory: Path | str | None = None,
                  before_verify: Callable[[list[Path]], None] | None = None) -> ArchiveResult:
    """Archive every row of `table` (one bar, open times in [start, end), both at 00:00 UTC) to Parquet files,
    one per UTC day that has rows, then verify them against PostgreSQL.

    Returns only when every file matched: then the table may be dropped. Raises ArchiveDisabled when archiving is
    off, ArchiveBusy when the bar is being archived elsewhere, ArchiveVerificationError (files marked `failed`)
    when a file read back differs from the table, ArchiveError for a table it must not archive (rows outside
    the range or of another bar). `before_verify` is called with the files' paths between writing and verifying
    (fault injection in tests).
    """
    root = archive_root(directory)
    start, end = _day_range(start, end)
    timeframe = Timeframe.objects.filter(code=bar).first()
    if timeframe is None:
        raise ArchiveError(f"No bar {bar!r} (codes are case-sensitive: 1m is a minute, 1M a month).")
    leaf = _leaf(table)
    began = time.monotonic()
    with log_context(archive_table=table, bar=bar), _bar_lock(timeframe):
        logger.info("archiving %s (%s, %s to %s) into %s", table, bar, start.date(), end.date(), root)
        expected = _sql_digests(leaf, table, timeframe, start, end)
        checksummed = time.monotonic()
        in_place: list[_Written] = []
        # A COPY left early is cancelled, which aborts the transaction it runs in; inside a caller's transaction
        # that must be a savepoint's only (retention calls this in autocommit, where each statement is its own).
        guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
        try:
            with guard:
                _write_days(leaf, table, timeframe, start, end, root, expected, in_place)
        except psycopg.Error as exc:
            raise ArchiveError(f"Reading {table} failed: {exc}") from exc
        finally:
            # Recorded once the COPY is over (the connection serves nothing else meanwhile), for every file renamed
            # into place even if a later day failed: the rows must describe what is on disk.
            files = [_record(item, timeframe, table, expected[item.day]) for item in in_place]
        written = time.monotonic()
        if before_verify is not None:
            before_verify([Path(item.path) for item in files])
        problems = _verify(files, expected)
        if problems:
            _mark_failed(files, problems)
            summary = "; ".join(f"{day}: {', '.join(found)}" for day, found in sorted(problems.items()))
            logger.error("archive of %s failed verification, keep the table: %s", table, summary)
            raise ArchiveVerificationError(f"The archive of {table} does not match the table: {summary}", problems)
        verified_at = timezone.now()
        ArchiveFile.objects.filter(pk__in=[item.pk for item in files]).update(
            status=ArchiveStatus.OK, verified_at=verified_at, error="")
        for item in files:
            item.status, item.verified_at, item.error = ArchiveStatus.OK, verified_at, ""
    finished = time.monotonic()
    result = ArchiveResult(table=table, bar=bar, start=start, end=end, files=files,
                           rows=sum(item.rows for item in files), bytes=sum(item.bytes for item in files),
                           seconds=finished - began, checksum_s=checksummed - began, write_s=written - checksummed,
                           verify_s=finished - written)
    logger.info("archived %s: %d files, %s rows, %s bytes in %.1f s (checksum %.1f s, write %.1f s, verify %.1f s), "
                "verified", table, len(files), f"{result.rows:,}", f"{result.bytes:,}", result.seconds,
                result.checksum_s, result.write_s, result.verify_s)
    return result


def _record(item: _Written, timeframe: Timeframe, table: str, digest: DayDigest) -> ArchiveFile:
    row, _created = ArchiveFile.objects.update_or_create(
        timeframe=timeframe, start=_day_start(item.day),
        defaults={"end": _day_start(item.day) + DAY, "rows": item.rows, "instruments": len(digest.series),
                  "inst_ids": [inst_id for inst_id, _rows, _digest in digest.series], "bytes": item.bytes,
                  "path": str(item.path), "sha256": digest.sha256, "status": ArchiveStatus.WRITTEN, "error": "",
                  "source_table": table, "verified_at": None})
    return row


def _mark_failed(files: list[ArchiveFile], problems: dict[date, list[str]]) -> None:
    # Every file of the run: the leaf is kept whole, so none of its files stands for it.
    for item in files:
        day = item.start.astimezone(UTC).date()
        found = problems.get(day)
        item.status = ArchiveStatus.FAILED
        item.error = "; ".join(found) if found else \
            f"another day of the same archive failed verification ({', '.join(map(str, sorted(problems)))})"
        item.verified_at = None
        item.save(update_fields=["status", "error", "verified_at", "updated_at"])
