"""The one Parquet encoding of candles: the day archive, the API's format=parquet and `export --format parquet`.

Prices and volumes are strings holding PostgreSQL's own text of the stored numeric (`numeric::text`), digit for
digit as OKX sent them, so no reader ever meets a float; open times are timestamp[ms, UTC]; repeated names are
dictionary strings; files are zstd-compressed and carry the project's key-value metadata under `okx_candles.`.
The archive's columns are in candles.archive (docs/archive.md); the served columns are `CANDLE_COLUMNS` below,
the API's candle shape with the v1 names (docs/api.md).

    writer = CandleParquetWriter(sink, metadata={"symbol": "BTC-USDT", "bar": "1m"})
    writer.write(rows)   # (open_time_ms, open, high, low, close, volume, volume_currency, volume_quote, confirm)
    writer.close()

`sink` is a path or any object with `write(bytes)`: pyarrow tracks the position itself, so a pipe, a socket or
`ParquetDrain` (bytes handed on as they are written) will do. pyarrow is imported only when a function needs
it: the rest of the project does not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candles.candle_shape import CANDLE_FIELDS

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

MEDIA_TYPE = "application/vnd.apache.parquet"
META_PREFIX = "okx_candles."
COMPRESSION = "zstd"
# Version of the served file's columns, in its metadata (the archive has its own FORMAT_VERSION).
FORMAT_VERSION = "1"

# The served candle, the one shape of JSON, CSV and webhooks. Rows given to CandleParquetWriter.write are in the
# same order from open_time_ms on (the timestamp is made from the milliseconds, so it is not given twice).
CANDLE_COLUMNS = CANDLE_FIELDS
DECIMAL_COLUMNS = ("open", "high", "low", "close", "volume", "volume_currency", "volume_quote")
# Rows gathered into one row group. A row group is what the writer holds in memory before its bytes go out, so
# this bounds memory (about 10 MB of Arrow data at 65,536 rows); row groups much smaller than this make files
# larger (each restarts its pages and statistics).
ROW_GROUP_ROWS = 65_536


def time_type() -> pa.DataType:
    """Open times: epoch milliseconds, as OKX and the API give them, marked UTC."""
    import pyarrow as pa

    return pa.timestamp("ms", tz="UTC")


def dictionary_string() -> pa.DataType:
    """Names repeated on every row (instrument, source): stored once per row group."""
    import pyarrow as pa

    return pa.dictionary(pa.int32(), pa.string())


def decimal_text(name: str, *, nullable: bool = False) -> pa.Field:
    """A price or volume: the exact text of the stored numeric (a string, never a float or a rounded decimal)."""
    import pyarrow as pa

    return pa.field(name, pa.string(), nullable=nullable)


def with_metadata(schema: pa.Schema, metadata: dict[str, str]) -> pa.Schema:
    return schema.with_metadata({f"{META_PREFIX}{key}": value for key, value in metadata.items()})


def open_writer(where: str | Path | Any, schema: pa.Schema, metadata: dict[str, str]) -> pq.ParquetWriter:
    """A ParquetWriter with the project's encoding options, the metadata under `okx_candles.`."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(where, with_metadata(schema, metadata), compression=COMPRESSION)


def candle_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        pa.field("timestamp", time_type(), nullable=False),
        pa.field("open_time_ms", pa.int64(), nullable=False),
        # Volumes are null for mark-price and index candles (and volume_quote for OKX's older 7-field rows).
        *(decimal_text(name, nullable=name.startswith("volume")) for name in DECIMAL_COLUMNS),
        pa.field("confirm", pa.bool_(), nullable=False),
    ])


def candle_batch(rows: Sequence[Sequence], schema: pa.Schema, *, skip: int = 0) -> pa.RecordBatch:
    """Rows (open_time_ms, seven decimal texts, confirm) as one record batch, built column by column; `skip`
    leading fields of each row are left out (the API's rows begin with the open time as ISO text)."""
    import pyarrow as pa

    columns = list(zip(*rows, strict=True))[skip:] if rows else [()] * (len(CANDLE_COLUMNS) - 1)
    millis = pa.array(columns[0], pa.int64())
    arrays = [millis.cast(time_type()), millis,
              *(pa.array(values, pa.string()) for values in columns[1:8]),
              pa.array(columns[8], pa.bool_())]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class CandleParquetWriter:
    """Candles to Parquet in row groups of `row_group_rows`: rows are written as they are given, so memory is one
    row group whatever the number of rows."""

    def __init__(self, where: str | Path | Any, *, metadata: dict[str, str],
                 row_group_rows: int = ROW_GROUP_ROWS, skip: int = 0) -> None:
        self.skip = skip
        self.schema = candle_schema()
        self.writer = open_writer(where, self.schema, {"format": FORMAT_VERSION, **metadata})
        self.row_group_rows = row_group_rows
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0

    def write(self, rows: Sequence[Sequence]) -> None:
        """Rows as `CANDLE_COLUMNS` from open_time_ms on; a row group goes out once enough are gathered."""
        if not rows:
            return
        self.pending.append(candle_batch(rows, self.schema, skip=self.skip))
        self.pending_rows += len(rows)
        if self.pending_rows >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        """Write what is gathered as one row group now (its bytes reach the sink before this returns)."""
        import pyarrow as pa

        if self.pending:
            table = pa.Table.from_batches(self.pending, schema=self.schema)
            self.writer.write_table(table, row_group_size=table.num_rows)
            self.rows += table.num_rows
            self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        """The last row group and the footer (a Parquet file is readable only once its footer is written)."""
        self.flush()
        self.writer.close()


class ParquetDrain:
    """A write-only sink whose bytes are taken out as they come (`take`): a Parquet writer streaming into an HTTP
    response without a file. pyarrow needs only write/flush/closed from it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def stream_pages(pages: Iterator[Sequence[Sequence]], *, metadata: dict[str, str],
                 row_group_rows: int = ROW_GROUP_ROWS, skip: int = 0) -> Iterator[bytes]:
    """A Parquet file as byte chunks, written while `pages` of rows are read: the magic at once, a row group as
    soon as one is gathered, the footer at the end. Memory is one row group, never the file."""
    drain = ParquetDrain()
    writer = CandleParquetWriter(drain, metadata=metadata, row_group_rows=row_group_rows, skip=skip)
    try:
        yield drain.take()
        for rows in pages:
            writer.write(rows)
            if chunk := drain.take():
                yield chunk
        writer.close()
    finally:
        # A client gone mid-stream closes this generator: the writer's buffers go with it.
        drain.close()
    yield drain.take()
