"""The Parquet archive of a candle partition: exact digit for digit, one file per UTC day, verified before anyone
may drop the partition, and the same files however often it runs.

Each test builds a leaf table itself, with the layout of a detached partition of the partitioned candle table
(compact: `source` as "char" w/r, no updated_at), so nothing here depends on how partitions are made.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.db import connection

from candles import archive, archive_format
from candles.archive import (
    ArchiveBusy,
    ArchiveDisabled,
    ArchiveError,
    ArchiveVerificationError,
    archive_list,
    archive_write,
)
from candles.archive_format import (
    archive_digest,
    archive_metadata,
    archive_path,
    archive_read,
    archive_series,
    bar_slug,
    digest_of_series,
)
from candles.models import ArchiveFile, ArchiveStatus, Timeframe

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
NUMBERS = ("open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote")

LEAF_DDL = """
CREATE TABLE {name} (
    instrument_id integer NOT NULL, timeframe_id smallint NOT NULL, open_time timestamptz NOT NULL,
    version bigint NOT NULL, confirmed boolean NOT NULL, source "char" NOT NULL,
    open numeric NOT NULL, high numeric NOT NULL, low numeric NOT NULL, close numeric NOT NULL,
    vol numeric NULL, vol_ccy numeric NULL, vol_ccy_quote numeric NULL,
    PRIMARY KEY (instrument_id, timeframe_id, open_time))
"""
INSERT = """
INSERT INTO {name} (open_time, instrument_id, timeframe_id, vol_ccy_quote, vol_ccy, vol, close, low, high, open,
                    source, confirmed, version)
VALUES (%s, %s, %s, %s::numeric, %s::numeric, %s::numeric, %s::numeric, %s::numeric, %s::numeric, %s::numeric,
        %s, %s, %s)
"""


class Row(NamedTuple):
    """A candle as the archive must give it back: numbers as the exact text stored."""

    inst_id: str
    open_time: datetime
    open: str = "100"
    high: str = "110"
    low: str = "90"
    close: str = "105"
    vol: str = "1.5"
    vol_ccy: str = "157.5"
    vol_ccy_quote: str | None = "157.5"
    confirmed: bool = True
    source: str = "ws"
    version: int = 1_000
    price: str = "trade"  # last, so that the rows of trade candles read as before price kinds


@pytest.fixture
def archive_dir(tmp_path, settings) -> Path:
    settings.CANDLE_ARCHIVE_DIR = str(tmp_path / "archive")
    return tmp_path / "archive"


@pytest.fixture
def leaf(instrument):
    """`leaf(name, bar, rows)` creates a partition-shaped table holding the rows (instruments made as needed, one
    row per id and price kind): a detached leaf as retention hands it over, named `detached_…` since real leaves
    of those days may exist."""
    known: dict[tuple[str, str], int] = {}
    types = {"trade": "SPOT", "mark": "SWAP", "index": "INDEX"}

    def make(name: str, bar: str, rows: list[Row]) -> str:
        timeframe_id = Timeframe.objects.get(code=bar).pk
        with connection.cursor() as cursor:
            cursor.execute(LEAF_DDL.format(name=name))
            for row in rows:
                key = (row.inst_id, row.price)
                if key not in known:
                    inst_type = "SWAP" if row.inst_id.endswith("-SWAP") else types[row.price]
                    known[key] = instrument(row.inst_id, inst_type=inst_type, price=row.price).pk
                cursor.execute(INSERT.format(name=name), [
                    row.open_time, known[key], timeframe_id, row.vol_ccy_quote, row.vol_ccy, row.vol,
                    row.close, row.low, row.high, row.open, {"ws": "w", "rest": "r"}[row.source], row.confirmed,
                    row.version])
        return name

    return make


def file_rows(path: Path) -> list[Row]:
    return [Row(**{**item, "inst_id": item["inst_id"]}) for item in archive_read(path).to_pylist()]


def stored_text(name: str) -> list[tuple]:
    """The table as PostgreSQL prints it, in the archive's order."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            SELECT i.inst_id, c.open_time, c.open::text, c.high::text, c.low::text, c.close::text, c.vol::text,
                   c.vol_ccy::text, c.vol_ccy_quote::text, c.confirmed, c.source::text, c.version, i.price
            FROM {name} c JOIN candles_instrument i ON i.id = c.instrument_id ORDER BY c.instrument_id, c.open_time""")
        return [(*row[:10], {"w": "ws", "r": "rest"}[row[10]], *row[11:]) for row in cursor.fetchall()]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The values OKX sends and that a float or a decimal128 of fixed scale would change.
EXACT = [
    Row("BTC-USDT", DEC_1, open="43000.0", high="43000.10", low="0.10", close="43000", vol="0.00000001",
        vol_ccy="0.0000000100", vol_ccy_quote=None),
    Row("BTC-USDT", DEC_1 + timedelta(seconds=1), open="43000.10", close="99547.80", source="rest",
        vol_ccy_quote="0.4683024500"),
    Row("BTC-USDT", DEC_1 + timedelta(seconds=2), open="0.000012345", confirmed=False, version=2**62),
    Row("ETH-USDT", DEC_1 + timedelta(hours=23, minutes=59, seconds=59), vol="0", vol_ccy="0", vol_ccy_quote="0"),
]


# --- exact round trip ---------------------------------------------------------------------------------------


def test_a_round_trip_is_exact_digit_for_digit(leaf, archive_dir):
    name = leaf("detached_1s_20261201", "1s", EXACT)

    result = archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)

    [archived] = result.files
    assert file_rows(Path(archived.path)) == EXACT
    assert [tuple(row) for row in file_rows(Path(archived.path))] == stored_text(name)
    assert (result.rows, result.bytes) == (4, Path(archived.path).stat().st_size)


def test_pandas_and_polars_read_the_same_strings(leaf, archive_dir):
    name = leaf("detached_1s_20261201", "1s", EXACT)
    [archived] = archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY).files

    frame = pd.read_parquet(archived.path)
    polars_frame = pl.read_parquet(archived.path)

    for column in NUMBERS:
        expected = [getattr(row, column) for row in EXACT]
        assert [None if pd.isna(value) else value for value in frame[column]] == expected, column
        assert polars_frame[column].to_list() == expected, column
    assert frame["inst_id"].astype(str).tolist() == polars_frame["inst_id"].cast(pl.String).to_list() == [
        row.inst_id for row in EXACT]
    assert frame["source"].astype(str).tolist() == ["ws", "rest", "ws", "ws"]
    assert polars_frame["open_time"].to_list() == [row.open_time for row in EXACT]
    assert frame["confirmed"].tolist() == [True, True, False, True]
    assert polars_frame["version"].to_list() == [row.version for row in EXACT]


def test_the_file_has_the_documented_layout_columns_and_metadata(leaf, archive_dir):
    rows = [Row("SOL-USDT", DEC_1), Row("BTC-USDT", DEC_1 + timedelta(seconds=5)), Row("BTC-USDT", DEC_1)]
    name = leaf("detached_1s_20261201", "1s", rows)

    [archived] = archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY).files

    path = archive_dir / "1s" / "2026" / "1s_2026-12-01.parquet"
    assert Path(archived.path) == path
    schema = pq.read_schema(path)
    assert schema.names == ["inst_id", "price", "open_time", *NUMBERS, "confirmed", "source", "version"]
    assert schema.field("inst_id").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("price").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("open_time").type == pa.timestamp("ms", tz="UTC")
    assert all(schema.field(column).type == pa.string() for column in NUMBERS)
    assert all(schema.field(column).nullable for column in ("vol", "vol_ccy", "vol_ccy_quote"))  # mark, index
    assert not schema.field("close").nullable
    assert schema.field("source").type == pa.dictionary(pa.int32(), pa.string())
    assert (schema.field("confirmed").type, schema.field("version").type) == (pa.bool_(), pa.int64())
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    # Sorted by instrument (as created: SOL-USDT first), then open time.
    assert [(row.inst_id, row.open_time) for row in file_rows(path)] == [
        ("SOL-USDT", DEC_1), ("BTC-USDT", DEC_1), ("BTC-USDT", DEC_1 + timedelta(seconds=5))]
    metadata = archive_metadata(path)
    assert metadata == {"format": "2", "bar": "1s", "start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z",
                        "rows": "3", "instruments": "2", "series": "2", "sha256": archived.sha256, "table": name}
    assert archive_digest(path) == archived.sha256
    assert not list(path.parent.glob(".*"))  # no temporary file left beside it


def test_the_archive_file_row_describes_the_verified_file(leaf, archive_dir):
    name = leaf("detached_1s_20261201", "1s", EXACT)

    archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)

    archived = ArchiveFile.objects.get()
    path = Path(archived.path)
    assert (archived.timeframe.code, archived.start, archived.end) == ("1s", DEC_1, DEC_1 + DAY)
    assert (archived.rows, archived.instruments, archived.inst_ids) == (4, 2, ["BTC-USDT", "ETH-USDT"])
    assert (archived.bytes, archived.sha256) == (path.stat().st_size, archive_metadata(path)["sha256"])
    assert (archived.status, archived.error, archived.source_table) == (ArchiveStatus.OK, "", name)
    assert archived.verified_at is not None
    assert archive_list(bar="1s") == [archived]
    assert archive_list(bar="1m") == []


# --- one file per bar per UTC day -------------------------------------------------------------------------------


def test_a_month_leaf_writes_one_file_per_utc_day_that_has_rows(leaf, archive_dir):
    minute = timedelta(minutes=1)
    rows = [
        Row("BTC-USDT", DEC_1), Row("BTC-USDT", DEC_1 + DAY - minute), Row("BTC-USDT", DEC_1 + DAY),
        Row("ETH-USDT", DEC_1 + DAY - minute), Row("ETH-USDT", DEC_1 + 3 * DAY + 5 * minute),
    ]
    name = leaf("detached_1m_202612", "1m", rows)

    result = archive_write(table=name, bar="1m", start=DEC_1, end=datetime(2027, 1, 1, tzinfo=UTC))

    by_day = {archived.start.date().isoformat(): archived for archived in result.files}
    assert sorted(by_day) == ["2026-12-01", "2026-12-02", "2026-12-04"]  # nothing on the 3rd: no file
    assert sorted(path.name for path in (archive_dir / "1m" / "2026").iterdir()) == [
        "1m_2026-12-01.parquet", "1m_2026-12-02.parquet", "1m_2026-12-04.parquet"]
    assert file_rows(Path(by_day["2026-12-01"].path)) == [rows[0], rows[1], rows[3]]
    assert file_rows(Path(by_day["2026-12-02"].path)) == [rows[2]]
    assert file_rows(Path(by_day["2026-12-04"].path)) == [rows[4]]
    assert [archived.rows for archived in result.files] == [3, 1, 1]
    assert ArchiveFile.objects.filter(status=ArchiveStatus.OK).count() == 3


def test_minutes_and_months_never_share_a_directory_even_on_case_insensitive_disks(leaf, archive_dir):
    assert [bar_slug(code) for code in ("1s", "1m", "1M", "3M", "1H", "1Mutc", "6Hutc")] == [
        "1s", "1m", "1mo", "3mo", "1h", "1moutc", "6hutc"]
    year = datetime(2026, 1, 1, tzinfo=UTC)
    leaf("detached_1mo_2026", "1M", [Row("BTC-USDT", datetime(2026, 11, 30, 16, tzinfo=UTC))])

    [archived] = archive_write(table="detached_1mo_2026", bar="1M", start=year,
                               end=datetime(2027, 1, 1, tzinfo=UTC)).files

    assert Path(archived.path) == archive_dir / "1mo" / "2026" / "1M_2026-11-30.parquet"
    assert archive_path(archive_dir, "1m", year.date()) == archive_dir / "1m" / "2026" / "1m_2026-01-01.parquet"


def test_a_large_leaf_is_streamed_in_chunks_and_verified_across_them(leaf, archive_dir, monkeypatch):
    # Tiny chunks, row groups and read-back batches, so instruments and days straddle their boundaries.
    monkeypatch.setattr(archive, "CSV_CHUNK_BYTES", 1_000)
    monkeypatch.setattr(archive, "ROW_GROUP_ROWS", 30)
    monkeypatch.setattr(archive_format, "VERIFY_BATCH_ROWS", 7)
    rows = [Row(inst_id, DEC_1 + timedelta(minutes=37 * step), close=f"{100 + step}.{step % 10}0")
            for inst_id in ("BTC-USDT", "ETH-USDT", "SOL-USDT") for step in range(100)]
    name = leaf("detached_1m_202612", "1m", rows)

    result = archive_write(table=name, bar="1m", start=DEC_1, end=datetime(2027, 1, 1, tzinfo=UTC))

    assert len(result.files) == 3
    assert sorted(row for archived in result.files for row in file_rows(Path(archived.path))) == sorted(rows)
    assert pq.ParquetFile(result.files[0].path).num_row_groups > 1
    assert all(archived.status == ArchiveStatus.OK for archived in result.files)


# --- verification before the drop ---------------------------------------------------------------------------


def rewrite(path: Path, change) -> None:
    """Replace the file with `change(table)`, keeping its metadata: what a corrupting disk or tool could do."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path, compression="zstd")


def one_digit_dropped(table: pa.Table) -> pa.Table:
    high = table.column("high").to_pylist()
    assert high[0] == "43000.10"
    return table.set_column(table.schema.get_field_index("high"), "high", pa.array(["43000.1", *high[1:]]))


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(("tamper", "reported"), [
    (lambda path: rewrite(path, one_digit_dropped), "rows differ from the table for BTC-USDT"),
    (lambda path: rewrite(path, lambda table: table.slice(1)), "3 rows in the file, 4 in the table"),
    (truncated, "cannot be read back"),
], ids=["a trailing zero lost", "a row lost", "a truncated file"])
def test_a_file_that_does_not_match_the_table_fails_and_nothing_is_marked_ok(leaf, archive_dir, tamper, reported):
    name = leaf("detached_1s_20261201", "1s", EXACT)

    with pytest.raises(ArchiveVerificationError, match=reported) as failure:
        archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY,
                      before_verify=lambda paths: [tamper(path) for path in paths])

    assert list(failure.value.problems) == [DEC_1.date()]
    archived = ArchiveFile.objects.get()
    assert archived.status == ArchiveStatus.FAILED
    assert reported in archived.error
    assert archived.verified_at is None
    assert not ArchiveFile.objects.filter(status=ArchiveStatus.OK).exists()


def test_one_bad_day_fails_every_file_of_the_partition(leaf, archive_dir):
    rows = [Row("BTC-USDT", DEC_1), Row("BTC-USDT", DEC_1 + DAY)]
    name = leaf("detached_1m_202612", "1m", rows)

    def tamper_second_day(paths: list[Path]) -> None:
        rewrite(paths[1], lambda table: table.set_column(
            table.schema.get_field_index("close"), "close", pa.array(["105.0"])))

    with pytest.raises(ArchiveVerificationError, match="2026-12-02"):
        archive_write(table=name, bar="1m", start=DEC_1, end=datetime(2027, 1, 1, tzinfo=UTC),
                      before_verify=tamper_second_day)

    assert sorted(ArchiveFile.objects.values_list("status", flat=True)) == [ArchiveStatus.FAILED] * 2
    first = ArchiveFile.objects.get(start=DEC_1)
    assert "another day of the same archive failed verification (2026-12-02)" in first.error


def test_an_open_time_the_file_cannot_hold_fails_verification(leaf, archive_dir):
    # Parquet keeps milliseconds: a sub-millisecond open time would be rounded, and the checksum sees it.
    name = leaf("detached_1s_20261201", "1s", [Row("BTC-USDT", DEC_1 + timedelta(microseconds=1500))])

    with pytest.raises(ArchiveVerificationError, match="rows differ from the table for BTC-USDT"):
        archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)


def test_a_table_with_rows_outside_the_range_is_refused_before_anything_is_written(leaf, archive_dir):
    name = leaf("detached_1s_20261201", "1s", [Row("BTC-USDT", DEC_1), Row("BTC-USDT", DEC_1 + DAY)])

    with pytest.raises(ArchiveError, match="would not cover, so it would lose them: 1 rows of BTC-USDT on 2026-12-02"):
        archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)

    assert not archive_dir.exists() or not any(archive_dir.rglob("*.parquet"))
    assert not ArchiveFile.objects.exists()


def test_a_table_of_another_bar_is_refused(leaf, archive_dir):
    name = leaf("detached_1m_202612", "1m", [Row("BTC-USDT", DEC_1)])

    with pytest.raises(ArchiveError, match="rows of timeframe id"):
        archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)


def test_a_failure_while_writing_leaves_no_temporary_file_and_the_connection_usable(leaf, archive_dir, monkeypatch):
    monkeypatch.setattr(archive, "CSV_CHUNK_BYTES", 200)
    monkeypatch.setattr(archive, "ROW_GROUP_ROWS", 5)
    name = leaf("detached_1s_20261201", "1s", [Row("BTC-USDT", DEC_1 + timedelta(seconds=s)) for s in range(50)])
    calls = []
    real = archive.to_file_table

    def disk_full_on_second_row_group(raw, schema):
        calls.append(raw.num_rows)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(raw, schema)

    monkeypatch.setattr(archive, "to_file_table", disk_full_on_second_row_group)

    with pytest.raises(OSError, match="No space left"):
        archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)

    assert [path for path in archive_dir.rglob("*") if path.is_file()] == []
    assert not ArchiveFile.objects.exists()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {name}")
        assert cursor.fetchone() == (50,)


# --- idempotency, refusals ---------------------------------------------------------------------------------------


def test_running_twice_gives_the_same_files_and_one_set_of_rows(leaf, archive_dir):
    name = leaf("detached_1m_202612", "1m", [Row("BTC-USDT", DEC_1), Row("ETH-USDT", DEC_1 + 2 * DAY)])
    month = {"table": name, "bar": "1m", "start": DEC_1, "end": datetime(2027, 1, 1, tzinfo=UTC)}

    first = archive_write(**month)
    bytes_first = {archived.path: sha256_of(Path(archived.path)) for archived in first.files}
    rows_first = list(ArchiveFile.objects.order_by("start").values_list("pk", "path", "sha256", "rows", "status"))
    second = archive_write(**month)

    assert {archived.path: sha256_of(Path(archived.path)) for archived in second.files} == bytes_first
    assert list(ArchiveFile.objects.order_by("start").values_list("pk", "path", "sha256", "rows", "status")) == \
        rows_first
    assert sorted(path.name for path in archive_dir.rglob("*") if path.is_file()) == [
        "1m_2026-12-01.parquet", "1m_2026-12-03.parquet"]


def test_a_rerun_after_a_failure_replaces_the_failed_files(leaf, archive_dir):
    name = leaf("detached_1s_20261201", "1s", EXACT)
    day = {"table": name, "bar": "1s", "start": DEC_1, "end": DEC_1 + DAY}
    with pytest.raises(ArchiveVerificationError):
        archive_write(**day, before_verify=lambda paths: [truncated(path) for path in paths])

    [archived] = archive_write(**day).files

    assert ArchiveFile.objects.get().status == ArchiveStatus.OK
    assert file_rows(Path(archived.path)) == EXACT


def test_an_empty_table_archives_to_no_file(leaf, archive_dir):
    name = leaf("detached_1s_20261201", "1s", [])

    result = archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)

    assert (result.files, result.rows) == ([], 0)
    assert not ArchiveFile.objects.exists()


def test_archiving_off_is_a_clear_error(leaf, settings):
    settings.CANDLE_ARCHIVE_DIR = ""
    name = leaf("detached_1s_20261201", "1s", EXACT)

    with pytest.raises(ArchiveDisabled, match="Archiving is off: CANDLE_ARCHIVE_DIR is empty"):
        archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)


def test_a_directory_given_by_the_caller_wins_over_the_setting(leaf, settings, tmp_path):
    settings.CANDLE_ARCHIVE_DIR = ""
    name = leaf("detached_1s_20261201", "1s", EXACT)

    [archived] = archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY, directory=tmp_path).files

    assert Path(archived.path) == tmp_path / "1s" / "2026" / "1s_2026-12-01.parquet"


@pytest.mark.parametrize(("table", "bar", "start", "end", "message"), [
    ("no_such_table", "1s", DEC_1, DEC_1 + DAY, "No table 'no_such_table'"),
    ("candles_candle; DROP TABLE x", "1s", DEC_1, DEC_1 + DAY, "is not a table name"),
    ("candles_instrument", "1s", DEC_1, DEC_1 + DAY, "lacks the candle columns"),
    ("detached_1s_20261201", "1S", DEC_1, DEC_1 + DAY, "No bar '1S'"),
    ("detached_1s_20261201", "1s", DEC_1 + timedelta(hours=6), DEC_1 + DAY, "must start and end at 00:00 UTC"),
    ("detached_1s_20261201", "1s", DEC_1, DEC_1, "Empty range"),
])
def test_what_cannot_be_archived_is_refused_with_a_reason(leaf, archive_dir, table, bar, start, end, message):
    leaf("detached_1s_20261201", "1s", EXACT)

    with pytest.raises(ArchiveError, match=message):
        archive_write(table=table, bar=bar, start=start, end=end)


def test_a_second_archiver_of_the_same_bar_is_refused_while_the_first_runs(leaf, archive_dir):
    name = leaf("detached_1s_20261201", "1s", EXACT)
    timeframe_id = Timeframe.objects.get(code="1s").pk
    params = connection.get_connection_params()
    with psycopg.connect(**{key: value for key, value in params.items() if key != "cursor_factory"},
                         autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('okx_candles.archive'), %s)", [timeframe_id])

        with pytest.raises(ArchiveBusy, match="Another process is archiving bar 1s"):
            archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY)
        # Released by the holder, not by hanging up: its backend may outlive the closed connection a moment.
        other.execute("SELECT pg_advisory_unlock(hashtext('okx_candles.archive'), %s)", [timeframe_id])

    assert archive_write(table=name, bar="1s", start=DEC_1, end=DEC_1 + DAY).rows == 4


# --- price kinds: trade, mark-price and index candles of the same ids ------------------------------------------

NO_VOLUMES = {"vol": None, "vol_ccy": None, "vol_ccy_quote": None}
KINDS = [
    Row("BTC-USDT-SWAP", DEC_1, close="105"),
    Row("BTC-USDT-SWAP", DEC_1 + timedelta(minutes=1), close="106"),
    Row("BTC-USDT-SWAP", DEC_1, close="105.25", price="mark", **NO_VOLUMES),
    Row("BTC-USDT-SWAP", DEC_1 + timedelta(minutes=1), close="106.5", price="mark", **NO_VOLUMES),
    Row("BTC-USDT", DEC_1, close="104.9"),
    Row("BTC-USDT", DEC_1, close="104.95", price="index", **NO_VOLUMES),
]


def test_mark_and_index_candles_archive_beside_the_trades_of_the_same_ids_as_series_of_their_own(leaf, archive_dir):
    name = leaf("detached_1m_20261201", "1m", KINDS)

    [archived] = archive_write(table=name, bar="1m", start=DEC_1, end=DEC_1 + DAY).files

    path = Path(archived.path)
    assert file_rows(path) == KINDS  # each row keeps its kind, mark and index rows their null volumes
    assert [tuple(row) for row in file_rows(path)] == stored_text(name)
    assert archived.inst_ids == ["BTC-USDT-SWAP", "BTC-USDT-SWAP|mark", "BTC-USDT", "BTC-USDT|index"]
    assert (archived.instruments, archived.rows, archived.status) == (4, 6, ArchiveStatus.OK)
    assert [name for name, _rows, _digest in archive_series(path)] == archived.inst_ids
    assert archive_metadata(path)["series"] == "4"


def test_a_trade_only_day_keeps_the_digest_it_had_before_price_kinds(leaf, archive_dir):
    # Format 1's canonical text of a trade row, by hand: a file written before mark and index candles existed
    # must still verify against the same table.
    rows = [Row("BTC-USDT", DEC_1), Row("BTC-USDT", DEC_1 + timedelta(minutes=1), vol_ccy_quote=None)]
    name = leaf("detached_1m_20261201", "1m", rows)
    micros = [int(row.open_time.timestamp()) * 1_000_000 for row in rows]
    lines = (f"{micros[0]},100,110,90,105,1.5,157.5,157.5,t,ws,1000\n"
             f"{micros[1]},100,110,90,105,1.5,157.5,\\N,t,ws,1000\n")
    series = [("BTC-USDT", 2, hashlib.sha256(lines.encode()).hexdigest())]

    [archived] = archive_write(table=name, bar="1m", start=DEC_1, end=DEC_1 + DAY).files

    assert archived.sha256 == digest_of_series(series)


def test_tampering_with_the_mark_rows_alone_is_caught_and_named(leaf, archive_dir):
    name = leaf("detached_1m_20261201", "1m", KINDS)

    def change_a_mark_close(paths: list[Path]) -> None:
        table = pq.read_table(paths[0])
        closes = table.column("close").to_pylist()
        kinds = table.column("price").to_pylist()
        closes[kinds.index("mark")] = "105.26"
        rewrite(paths[0], lambda t: t.set_column(t.schema.get_field_index("close"), "close",
                                                 pa.array(closes, pa.string())))

    with pytest.raises(ArchiveVerificationError) as failed:
        archive_write(table=name, bar="1m", start=DEC_1, end=DEC_1 + DAY, before_verify=change_a_mark_close)

    [problems] = failed.value.problems.values()
    assert any("rows differ from the table for BTC-USDT-SWAP|mark" in problem for problem in problems), problems
    assert not any("BTC-USDT-SWAP," in problem for problem in problems)
    assert ArchiveFile.objects.get().status == ArchiveStatus.FAILED


def test_a_file_of_format_1_reads_as_trade_candles_and_its_series_are_named_as_before(tmp_path):
    path = tmp_path / "1m_2026-12-01.parquet"
    rows = [{"inst_id": "BTC-USDT", "open_time": DEC_1, "open": "100", "high": "110", "low": "90", "close": "105",
             "vol": "1.5", "vol_ccy": "157.5", "vol_ccy_quote": None, "confirmed": True, "source": "ws",
             "version": 1_000}]
    schema = pa.schema([("inst_id", pa.string()), ("open_time", pa.timestamp("ms", tz="UTC")),
                        *((name, pa.string()) for name in NUMBERS), ("confirmed", pa.bool_()),
                        ("source", pa.string()), ("version", pa.int64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

    table = archive_read(path)

    assert table.column("price").to_pylist() == ["trade"]
    assert [name for name, _rows, _digest in archive_series(path)] == ["BTC-USDT"]
