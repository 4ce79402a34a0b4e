"""Archive one day of one bar to Parquet and read it back, three exact encodings compared.

    /tmp/wtf-arrow/bin/python bench/storage_spike/parquet_roundtrip.py DB PARTITION OUTDIR

(a venv with pyarrow, pandas, polars and psycopg; the project's .venv has no pyarrow.)

Encodings of the seven price/volume columns:
  strings       numeric::text as stored: exact digit for digit by construction
  decimal       decimal128(38, S), S = the largest scale in the file's column: the exact value, but the stored
                scale (trailing zeros: 43000.0 vs 43000) is not kept
  decimal+scale decimal128 as above plus a small int8 column per value with its stored scale: exact digit for
                digit, and readers that ignore the scale columns still get exact decimals

The rows leave PostgreSQL as CSV through COPY (PostgreSQL formats every number once, in C) and are parsed by
pyarrow's CSV reader, streamed in blocks, so memory stays bounded for a full firehose day.
"""

import io
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

NUMS = ["open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote"]
db, partition, outdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
# "inst": rows by instrument then time (better compression, one sort); "heap": as stored (time-major, no sort)
order = sys.argv[4] if len(sys.argv) > 4 else "inst"
outdir.mkdir(parents=True, exist_ok=True)
dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"

SELECT = f"""
SELECT i.inst_id, (extract(epoch FROM c.open_time) * 1000)::bigint AS open_time_ms,
       {", ".join(f"c.{n}::text AS {n}" for n in NUMS)},
       {", ".join(f"scale(c.{n})::smallint AS {n}_scale" for n in NUMS)},
       c.confirmed, c.source::text AS source, c.version
FROM {partition} c JOIN candles_instrument i ON i.id = c.instrument_id
""" + ("ORDER BY c.instrument_id, c.open_time" if order == "inst" else "")
COLUMN_TYPES = {"inst_id": pa.string(), "open_time_ms": pa.int64(), **{n: pa.string() for n in NUMS},
                **{f"{n}_scale": pa.int8() for n in NUMS}, "confirmed": pa.bool_(), "source": pa.string(),
                "version": pa.int64()}


def fetch_csv() -> tuple[bytes, float]:
    started = time.perf_counter()
    buf = io.BytesIO()
    with psycopg.connect(dsn) as conn, conn.cursor().copy(f"COPY ({SELECT}) TO STDOUT (FORMAT csv, HEADER)") as copy:
        for block in copy:
            buf.write(block)
    return buf.getvalue(), time.perf_counter() - started


def to_table(raw: bytes, encoding: str) -> pa.Table:
    t = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(
        column_types=COLUMN_TYPES, strings_can_be_null=True, quoted_strings_can_be_null=False,
        true_values=["t"], false_values=["f"]))
    cols = {"inst_id": t["inst_id"].dictionary_encode(),
            "open_time": pc.cast(t["open_time_ms"], pa.timestamp("ms", tz="UTC"))}
    for n in NUMS:
        if encoding == "strings":
            cols[n] = t[n]
        else:
            scale = pc.max(t[f"{n}_scale"]).as_py() or 0
            cols[n] = pc.cast(t[n], pa.decimal128(38, scale))
            if encoding == "decimal+scale":
                cols[f"{n}_scale"] = t[f"{n}_scale"]
    cols["confirmed"] = t["confirmed"]
    cols["source"] = t["source"].dictionary_encode()
    cols["version"] = t["version"]
    return pa.table(cols)


def exact_text(value: Decimal | None, scale: int | None) -> str | None:
    if value is None:
        return None
    return format(value, f".{scale}f")


raw, fetch_s = fetch_csv()
t_csv = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(
    column_types=COLUMN_TYPES, strings_can_be_null=True, quoted_strings_can_be_null=False,
    true_values=["t"], false_values=["f"]))
rows = t_csv.num_rows
truth = {n: t_csv[n].to_pylist() for n in NUMS}
print(f"{partition} ({order} order): {rows:,} rows; COPY out as CSV {fetch_s:.2f}s ({len(raw) / 1e6:.0f} MB CSV)")
for encoding in ("strings", "decimal", "decimal+scale"):
    path = outdir / f"{partition}.{encoding.replace('+', '_')}.parquet"
    started = time.perf_counter()
    table = to_table(raw, encoding)
    pq.write_table(table, path, compression="zstd", row_group_size=1_000_000)
    write_s = time.perf_counter() - started
    size = path.stat().st_size
    # read back with pyarrow, compare every value's text with PostgreSQL's numeric::text
    started = time.perf_counter()
    back = pq.read_table(path)
    read_s = time.perf_counter() - started
    digit_exact = value_exact = True
    for n in NUMS:
        col = back[n].to_pylist()
        if encoding == "strings":
            texts = col
            values_equal = texts == truth[n]
        else:
            scales = back[f"{n}_scale"].to_pylist() if encoding == "decimal+scale" else None
            texts = [exact_text(v, s) for v, s in zip(col, scales, strict=True)] if scales else [
                None if v is None else str(v) for v in col]
            values_equal = all((a is None and b is None) or Decimal(a) == b for a, b in zip(truth[n], col, strict=True))
        digit_exact &= texts == truth[n]
        value_exact &= values_equal
    total_s = fetch_s + write_s
    print(f"  {encoding:<14} {size / 1e6:7.1f} MB ({size / rows:5.1f} B/candle, {size / rows * 1e6 / 1e6:.1f} MB per "
          f"million); write {rows / total_s / 1e6:.2f} M candles/s incl. COPY ({write_s:.2f}s build+write); "
          f"read {read_s:.2f}s; values exact {value_exact}; digit for digit {digit_exact}")

# pandas and polars read the files directly
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402

for encoding in ("strings", "decimal_scale"):
    path = outdir / f"{partition}.{encoding}.parquet"
    started = time.perf_counter()
    df = pd.read_parquet(path)
    pd_s = time.perf_counter() - started
    started = time.perf_counter()
    pf = pl.read_parquet(path)
    pl_s = time.perf_counter() - started
    print(f"  {encoding}: pandas {pd_s:.2f}s dtypes open={df['open'].dtype}; "
          f"polars {pl_s:.2f}s open={pf['open'].dtype};"
          f" first close pandas {df['close'].iloc[0]!r} polars {pf['close'][0]!r}")
