"""The archive's file format: one Parquet file per bar per UTC day, its columns and schema, the canonical text of
a row (built by PostgreSQL when writing and by pyarrow when reading back, so both sides hash the same bytes), and
the readers (`archive_read`, `archive_series`, `archive_digest`, `archive_metadata`). docs/archive.md describes it
for readers of the files. pyarrow is imported only inside the functions that need it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from candles.parquet import META_PREFIX, decimal_text, dictionary_string, time_type

if TYPE_CHECKING:
    import pyarrow as pa

NUMBERS = ("open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote")
# Mark-price and index candles have no volumes: these are empty (null) on their rows.
VOLUMES = ("vol", "vol_ccy", "vol_ccy_quote")
COLUMNS = ("inst_id", "price", "open_time", *NUMBERS, "confirmed", "source", "version")
# Files of format 1 were written before price kinds: every row of them is a trade candle.
COLUMNS_V1 = tuple(column for column in COLUMNS if column != "price")
# What a file's rows hash to is defined by this version of the canonical text (docs/archive.md). Format 2 added
# the `price` column (trade, mark, index) and null volumes; a trade row's text, and so its digest, is unchanged.
FORMAT_VERSION = "2"
NULL_TEXT = r"\N"

# Rows read back per batch when a file is verified.
VERIFY_BATCH_ROWS = 65_536


def series_name(inst_id: str, price: str = "trade") -> str:
    """How an archive names a series: the instrument id, with `|mark` or `|index` for those kinds."""
    return inst_id if price == "trade" else f"{inst_id}|{price}"


def digest_of_series(series: Sequence[tuple[str, int, str]]) -> str:
    """A file's sha256: over one line `name,rows,sha256` per series (`series_name`), in file order.

    Two levels because PostgreSQL has no streaming hash: it can hash one instrument-day of text at a time (86,400
    lines of a 1s bar, a few MB), never a whole firehose day (GBs, past its 1 GB limit on one value)."""
    text = "".join(f"{inst_id},{rows},{digest}\n" for inst_id, rows, digest in series)
    return hashlib.sha256(text.encode()).hexdigest()


def bar_slug(code: str) -> str:
    """The bar's directory name: lower-case with months spelled `mo`, so `1m` and `1M` differ on any disk."""
    return code.replace("M", "mo").lower()


def archive_path(root: Path, bar: str, day: date) -> Path:
    return root / bar_slug(bar) / f"{day:%Y}" / f"{bar}_{day.isoformat()}.parquet"



# --- the canonical text of a row, on both sides ----------------------------------------------------------------
#
# open_time_us,open,high,low,close,vol,vol_ccy,vol_ccy_quote,confirmed,source,version\n
#
# open time in epoch microseconds (PostgreSQL's precision, so a file that lost sub-millisecond digits would not
# match), numbers as numeric::text, a NULL volume as \N (mark-price and index candles have none; a trade candle's
# quote volume may be missing), confirmed t/f, source ws/rest. The series' kind is in its name, not in the line.

SOURCE_SQL = "CASE c.source::text WHEN 'w' THEN 'ws' WHEN 'r' THEN 'rest' ELSE c.source::text END"
LINE_SQL = (r"concat_ws(',', (extract(epoch FROM c.open_time) * 1000000)::bigint, c.open, c.high, c.low, c.close, "
         r"coalesce(c.vol::text, '\N'), coalesce(c.vol_ccy::text, '\N'), coalesce(c.vol_ccy_quote::text, '\N'), "
         r"CASE WHEN c.confirmed THEN 't' ELSE 'f' END, " + SOURCE_SQL + r", c.version) || E'\n'")
# One group per instrument and day: the most text string_agg holds at once is one instrument-day (8 MB for 1s).
DIGESTS_SQL = """
SELECT g.day, g.timeframe_id, g.instrument_id, i.inst_id, i.price, g.rows, g.sha256
FROM (
    SELECT c.instrument_id, c.timeframe_id, (c.open_time AT TIME ZONE 'UTC')::date AS day, count(*) AS rows,
           encode(sha256(convert_to(string_agg({line}, '' ORDER BY c.open_time), 'UTF8')), 'hex') AS sha256
    FROM {table} c
    GROUP BY c.instrument_id, c.timeframe_id, (c.open_time AT TIME ZONE 'UTC')::date
) g LEFT JOIN candles_instrument i ON i.id = g.instrument_id
ORDER BY g.day, g.instrument_id
"""
COPY_SQL = """
COPY (
    SELECT i.inst_id, i.price, (extract(epoch FROM c.open_time) * 1000)::bigint, c.open, c.high, c.low, c.close, c.vol,
           c.vol_ccy, c.vol_ccy_quote, c.confirmed, {source}, c.version
    FROM {table} c LEFT JOIN candles_instrument i ON i.id = c.instrument_id
    WHERE c.timeframe_id = {timeframe} AND c.open_time >= {start} AND c.open_time < {end}
    ORDER BY {day_first} c.instrument_id, c.open_time
) TO STDOUT (FORMAT csv)
"""


def canonical_lines(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """Each row's canonical text with its newline, built from the file's columns (vectorized)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def column(name: str) -> pa.Array:
        values = batch.column(name)
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values

    micros = pc.multiply_checked(pc.cast(column("open_time"), pa.int64()), 1000)
    fields = [
        pc.cast(micros, pa.string()),
        *(column(name) for name in NUMBERS if name not in VOLUMES),
        *(pc.fill_null(column(name), NULL_TEXT) for name in VOLUMES),
        pc.if_else(column("confirmed"), "t", "f"),
        pc.cast(column("source"), pa.string()),
        # The newline goes on the last field rather than on the joined line: one short array, not a second
        # copy of every line.
        pc.binary_join_element_wise(pc.cast(column("version"), pa.string()), "\n", ""),
    ]
    return pc.binary_join_element_wise(*fields, ",")


def _series_names(batch: pa.RecordBatch) -> pa.Array:
    """Each row's series name (`series_name`): the instrument id, `|kind` appended for mark and index rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = pc.cast(batch.column("inst_id"), pa.string())
    if "price" not in batch.schema.names:  # format 1: trade candles only
        return names
    price = pc.cast(batch.column("price"), pa.string())
    suffix = pc.if_else(pc.equal(price, "trade"), "", pc.binary_join_element_wise("|", price, ""))
    return pc.binary_join_element_wise(names, suffix, "")


def _series_of_batches(batches: Iterator[pa.RecordBatch]) -> list[tuple[str, int, str]]:
    """(series name, rows, sha256 of its lines) per run of one series, in order, hashing the lines' bytes where
    they lie in Arrow's buffers (no Python string per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    series: list[tuple[str, int, str]] = []
    current: str | None = None
    hasher = hashlib.sha256()
    rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        lines = canonical_lines(batch)
        if pa.types.is_large_string(lines.type):
            offsets = memoryview(lines.buffers()[1]).cast("q")
        else:
            offsets = memoryview(lines.buffers()[1]).cast("i")
        data = memoryview(lines.buffers()[2]) if lines.buffers()[2] is not None else memoryview(b"")
        names = _series_names(batch)
        count = batch.num_rows
        changes = pc.indices_nonzero(pc.not_equal(names.slice(1), names.slice(0, count - 1))).to_pylist()
        bounds = [0, *(index + 1 for index in changes), count]
        for first, stop in pairwise(bounds):
            name = names[first].as_py()
            if name != current:
                if current is not None:
                    series.append((current, rows, hasher.hexdigest()))
                current, hasher, rows = name, hashlib.sha256(), 0
            hasher.update(data[offsets[lines.offset + first]:offsets[lines.offset + stop]])
            rows += stop - first
    if current is not None:
        series.append((current, rows, hasher.hexdigest()))
    return series


def archive_series(path: Path | str) -> list[tuple[str, int, str]]:
    """(series name, rows, sha256) per series of an archive file, computed from its rows (bounded memory)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        columns = COLUMNS if "price" in parquet.schema_arrow.names else COLUMNS_V1
        return _series_of_batches(parquet.iter_batches(batch_size=VERIFY_BATCH_ROWS, columns=list(columns),
                                                       use_threads=False))


def archive_digest(path: Path | str) -> str:
    """The sha256 of a file's rows, recomputed from them: equal to its `okx_candles.sha256` metadata when intact."""
    return digest_of_series(archive_series(path))


def archive_metadata(path: Path | str) -> dict[str, str]:
    """The archive's key-value metadata of a file (bar, start, end, rows, sha256, table, format), prefix removed."""
    import pyarrow.parquet as pq

    raw = pq.read_metadata(path).metadata or {}
    return {key.decode()[len(META_PREFIX):]: value.decode() for key, value in raw.items()
            if key.decode().startswith(META_PREFIX)}


def archive_read(path: Path | str) -> pa.Table:
    """A whole archive file as an Arrow table (prices and volumes as exact decimal strings), with its `price`
    column (every row `trade` in a file of format 1, written before price kinds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "price" in table.column_names:
        return table
    trade = pa.array(["trade"] * table.num_rows, pa.string()).dictionary_encode()
    return table.add_column(1, pa.field("price", trade.type, nullable=False), trade)


def file_schema() -> pa.Schema:
    """The archive's columns, in the encoding every Parquet file of the project shares (candles.parquet)."""
    import pyarrow as pa

    return pa.schema([
        pa.field("inst_id", dictionary_string(), nullable=False),
        pa.field("price", dictionary_string(), nullable=False),
        pa.field("open_time", time_type(), nullable=False),
        *(decimal_text(name, nullable=name in VOLUMES) for name in NUMBERS),
        pa.field("confirmed", pa.bool_(), nullable=False),
        pa.field("source", dictionary_string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
    ])


def csv_options() -> tuple:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(column_names=list(COLUMNS), block_size=4 << 20, use_threads=False)
    types = {"inst_id": pa.string(), "price": pa.string(), "open_time": pa.int64(),
             **dict.fromkeys(NUMBERS, pa.string()),
             "confirmed": pa.bool_(), "source": pa.string(), "version": pa.int64()}
    # COPY's CSV writes NULL as an empty unquoted field and an empty string as "": only the former is null.
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False,
                                   true_values=["t"], false_values=["f"])
    return read, convert


def to_file_table(raw: pa.Table, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    # One dictionary per row group: chunks encoded apart would each bring their own.
    arrays = [raw["inst_id"].combine_chunks().dictionary_encode(), raw["price"].combine_chunks().dictionary_encode(),
              raw["open_time"].cast(time_type()),
              *(raw[name] for name in NUMBERS), raw["confirmed"], raw["source"].combine_chunks().dictionary_encode(),
              raw["version"]]
    return pa.Table.from_arrays(arrays, schema=schema)
