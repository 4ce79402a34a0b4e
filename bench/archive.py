"""Archive a generated partition of 1s candles to Parquet: M candles/s, MB per million candles, verified round trip.

    .venv/bin/python bench/archive.py [--rows 1000000] [--instruments 12] [--keep]

Runs in its own database (the configured one's name + `_bench_archive`, created and migrated here) so it never
touches real data. It generates ROWS candles of `1s` for INSTRUMENTS instruments in SQL (generate_series) into a
scratch table shaped like a detached partition (compact layout: `source` as "char", no updated_at), loaded in
arrival order (time-major) as the live table is, then calls `candles.archive.archive_write` on it, which checksums
the table in SQL, COPYs it out, writes one Parquet file per UTC day and reads every file back against the
checksum. The values are shaped like OKX's (docs/storage-design.md §3.2): twelve instruments from BTC at 97123.4
to PEPE at 0.000012345, numbers trimmed of trailing zeros as OKX writes them, a third of the candles flat with
zero volume, quote volumes with up to 9 decimals.

Prints the time of each phase, the end-to-end rate, the file size per million candles against PostgreSQL's bytes
for the same rows, the process's peak memory, and pandas/polars read times when they are installed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TABLE = "bench_archive_leaf"
DAY_START = datetime(2026, 12, 1, tzinfo=UTC)
# inst_id, price, price decimals, size decimals, share of flat candles, typical size of a 1s candle
PROFILES = [
    ("BTC-USDT", "97123.4", 1, 8, 0.10, "0.5"), ("ETH-USDT", "3456.78", 2, 6, 0.15, "5"),
    ("SOL-USDT", "180.12", 2, 6, 0.30, "40"), ("XRP-USDT", "2.3456", 4, 4, 0.35, "3000"),
    ("DOGE-USDT", "0.32145", 5, 6, 0.40, "20000"), ("SHIB-USDT", "0.00002134", 8, 0, 0.60, "300000000"),
    ("PEPE-USDT", "0.000012345", 9, 0, 0.60, "500000000"), ("BTC-USDT-SWAP", "97120.1", 1, 2, 0.05, "300"),
    ("ETH-USDT-SWAP", "3456.7", 2, 2, 0.10, "800"), ("TON-USDT", "5.432", 3, 4, 0.55, "500"),
    ("LTC-USDT", "98.76", 2, 6, 0.50, "20"), ("TRX-USDT", "0.2345", 4, 2, 0.65, "20000"),
]

LEAF_DDL = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (
    instrument_id integer NOT NULL, timeframe_id smallint NOT NULL, open_time timestamptz NOT NULL,
    version bigint NOT NULL, confirmed boolean NOT NULL, source "char" NOT NULL,
    open numeric NOT NULL, high numeric NOT NULL, low numeric NOT NULL, close numeric NOT NULL,
    vol numeric NOT NULL, vol_ccy numeric NOT NULL, vol_ccy_quote numeric NULL
) WITH (fillfactor = 100);
CREATE TEMPORARY TABLE bench_profile (instrument_id int, base numeric, d int, l int, quiet float8, unit numeric)
    ON COMMIT DROP;
"""
# One row per (second, instrument), seconds outer: the order rows arrive in live.
GENERATE = f"""
INSERT INTO {TABLE}
WITH raw AS (
    SELECT p.*, k, %(t0)s::timestamptz + k * interval '1 second' AS ot,
           p.base * (1 + 0.03 * sin(k / 5000.0 + p.instrument_id))::numeric AS price,
           random() AS r1, random() AS r2, random() AS r3, random() AS r4
    FROM generate_series(0, %(steps)s - 1) k CROSS JOIN bench_profile p
), candle AS (
    SELECT *, round(price, d) AS o, round(price * (1 + (r2 - 0.5) * 0.002)::numeric, d) AS c, r1 < quiet AS flat,
           trim_scale(round((r3 * unit)::numeric, l)) AS v
    FROM raw
)
SELECT instrument_id, %(timeframe)s, ot,
       (extract(epoch FROM ot) * 1000000)::bigint + 1500000 + (r2 * 100000)::bigint, true, 'w',
       trim_scale(o),
       trim_scale(CASE WHEN flat THEN o ELSE greatest(o, c) + round((r4 * base * 0.0005)::numeric, d) END),
       trim_scale(CASE WHEN flat THEN o
                  ELSE greatest(least(o, c) - round((r4 * base * 0.0004)::numeric, d), power(10::numeric, -d)) END),
       trim_scale(CASE WHEN flat THEN o ELSE c END),
       CASE WHEN flat THEN 0 ELSE v END,
       CASE WHEN flat THEN 0 ELSE trim_scale(v * c) END,
       CASE WHEN flat THEN 0 ELSE trim_scale(v * c) END
FROM candle
ORDER BY k, instrument_id
LIMIT %(rows)s;
"""


def _use_bench_database() -> str:
    """Point DATABASE_URL at a dedicated benchmark database and create it if needed."""
    from dotenv import load_dotenv

    load_dotenv(ROOT / ".env", override=False)
    import dj_database_url
    import psycopg
    from psycopg import sql

    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/okx_candles")
    config = dj_database_url.parse(url)
    name = f"{config['NAME']}_bench_archive"
    conninfo = {key: value for key, value in {
        "host": config.get("HOST"), "port": config.get("PORT") or None, "user": config.get("USER"),
        "password": config.get("PASSWORD") or None, "dbname": "postgres",
    }.items() if value}
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    os.environ["DATABASE_URL"] = url.rsplit("/", 1)[0] + "/" + name
    return name


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _instruments(count: int) -> list[tuple[int, tuple]]:
    from candles.models import Instrument

    made = []
    for index in range(count):
        profile = PROFILES[index % len(PROFILES)]
        inst_id = profile[0] if index < len(PROFILES) else f"{profile[0]}-{index // len(PROFILES)}"
        instrument, _ = Instrument.objects.get_or_create(
            inst_id=inst_id, defaults={"inst_type": "SWAP" if "-SWAP" in inst_id else "SPOT"})
        made.append((instrument.pk, profile))
    return made


def generate(rows: int, instruments: int) -> tuple[datetime, datetime, float]:
    from django.db import connection, transaction

    from candles.models import Timeframe

    started = time.perf_counter()
    steps = -(-rows // instruments)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(LEAF_DDL)
        for pk, (_inst_id, base, d, lot, quiet, unit) in _instruments(instruments):
            cursor.execute("INSERT INTO bench_profile VALUES (%s, %s::numeric, %s, %s, %s, %s::numeric)",
                           [pk, base, d, lot, quiet, unit])
        cursor.execute("SELECT setseed(0.42)")  # the same candles on every run
        cursor.execute(GENERATE, {"t0": DAY_START, "steps": steps, "rows": rows,
                                  "timeframe": Timeframe.objects.get(code="1s").pk})
    with connection.cursor() as cursor:
        # After the load, as partitions get their index: faster than maintaining it row by row.
        cursor.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (instrument_id, timeframe_id, open_time)")
        cursor.execute(f"VACUUM (ANALYZE) {TABLE}")
    last = DAY_START + timedelta(seconds=steps - 1)
    end = datetime.combine(last.date(), datetime.min.time(), UTC) + timedelta(days=1)
    return DAY_START, end, time.perf_counter() - started


def _table_bytes() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [TABLE])
        return cursor.fetchone()[0]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read_times(paths: list[Path]) -> str:
    try:
        import pandas as pd
        import polars as pl
    except ImportError:
        return "pandas/polars not installed"
    started = time.perf_counter()
    for path in paths:
        pd.read_parquet(path)
    pandas_s = time.perf_counter() - started
    started = time.perf_counter()
    for path in paths:
        pl.read_parquet(path)
    return f"pandas {pandas_s:.2f} s, polars {time.perf_counter() - started:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--instruments", type=int, default=12)
    parser.add_argument("--keep", action="store_true", help="keep the scratch table and the files")
    args = parser.parse_args()

    database = _use_bench_database()
    _setup_django()
    from django.db import connection

    from candles.archive import archive_write
    from candles.models import ArchiveFile, ArchiveStatus

    start, end, load_s = generate(args.rows, args.instruments)
    table_bytes = _table_bytes()
    print(f"database {database}: {args.rows:,} candles of 1s for {args.instruments} instruments generated in "
          f"{load_s:.1f} s; PostgreSQL holds them in {table_bytes / 1e6:.1f} MB ({table_bytes / args.rows:.1f} B "
          f"per candle)")
    directory = Path(tempfile.mkdtemp(prefix="okx-bench-archive-"))
    rss_before = _peak_rss_mb()
    try:
        result = archive_write(table=TABLE, bar="1s", start=start, end=end, directory=directory)
        rss_after = _peak_rss_mb()
        files = list(ArchiveFile.objects.filter(pk__in=[item.pk for item in result.files]))
        verified = all(item.status == ArchiveStatus.OK for item in files) and result.rows == args.rows
        print(f"archive_write: {len(result.files)} file(s), {result.rows:,} candles, {result.bytes / 1e6:.1f} MB in "
              f"{result.seconds:.1f} s = {result.rows / result.seconds / 1e6:.3f} M candles/s end to end")
        print(f"  SQL checksum {result.checksum_s:.1f} s, COPY + Parquet write {result.write_s:.1f} s "
              f"({result.rows / result.write_s / 1e6:.3f} M candles/s), read-back verification "
              f"{result.verify_s:.1f} s")
        print(f"  {result.bytes / result.rows:.1f} B per candle = {result.bytes / result.rows:.1f} MB per million "
              f"candles, {table_bytes / result.bytes:.1f}x smaller than PostgreSQL")
        print(f"  verified round trip (row counts and sha256 of every row's text equal PostgreSQL's): "
              f"{'yes' if verified else 'NO'}")
        print(f"  peak memory of this process: {rss_after:.0f} MB (before archiving {rss_before:.0f} MB)")
        print(f"  reading the file(s) back: {_read_times([Path(item.path) for item in result.files])}")
    finally:
        if not args.keep:
            shutil.rmtree(directory)
            ArchiveFile.objects.filter(source_table=TABLE).delete()
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        else:
            print(f"kept: table {TABLE} in {database}, files in {directory}")


if __name__ == "__main__":
    main()
