"""Benchmark the one write path against a raw COPY of the same rows.

    .venv/bin/python bench/upsert.py [--rows 100000] [--rounds 3] [--compare-keys]

Runs in its own database (the configured one's name + `_bench`, created and migrated here) so it never
touches real data. Each round:

1. preloads half of the keys into an empty candles table;
2. times `candles_upsert` on ROWS rows: the preloaded half again with a newer version (updates) and the
   other half new (inserts);
3. times a raw `COPY` of the same rows, already resolved to ids and timestamps, into an empty copy of
   the candles table (same columns, same primary key).

Target (issue 2): the upsert reaches at least 0.5× the raw COPY's rows/s.

`--strategies` measures the two strategies of the write path apart, at the sizes of a REST page and beyond: the
CPU of the writing process and of its PostgreSQL backend per batch (1-row to 3,000-row batches that update stored
candles), which is how `candles.storage.JSON_BATCH_MAX` was chosen.

`--compare-keys` also measures the choice made in candles.models.Candle: a composite primary key against
a surrogate id plus a unique constraint, on a table of 1M rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _use_bench_database() -> str:
    """Point DATABASE_URL at a dedicated benchmark database and create it if needed."""
    from dotenv import load_dotenv

    load_dotenv(ROOT / ".env", override=False)
    import dj_database_url
    import psycopg
    from psycopg import sql

    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/okx_candles")
    cfg = dj_database_url.parse(url)
    bench_name = f"{cfg['NAME']}_bench"
    conninfo = {k: v for k, v in {
        "host": cfg.get("HOST"), "port": cfg.get("PORT") or None, "user": cfg.get("USER"),
        "password": cfg.get("PASSWORD") or None, "dbname": "postgres",
    }.items() if v}
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (bench_name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(bench_name)))
    os.environ["DATABASE_URL"] = url.rsplit("/", 1)[0] + "/" + bench_name
    return bench_name


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


INSTRUMENTS = 50
BAR = "1m"
BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def _make_rows(n: int, version: int):
    """n rows spread over INSTRUMENTS series of 1m candles, values shaped like OKX's."""
    from candles.storage import CandleRow

    rows = []
    for i in range(n):
        inst = i % INSTRUMENTS
        minute = i // INSTRUMENTS
        base = Decimal(43000 + (i % 997)) + Decimal(i % 10) / 10
        rows.append(CandleRow(
            f"BENCH-{inst}-USDT", BAR, BASE_MS + minute * 60_000,
            base, base + Decimal("12.5"), base - Decimal("7.3"), base + Decimal("3.1"),
            Decimal("404.74017381"), Decimal("17447600.212916623"), Decimal("17447600.212916623"),
            True, "ws", version,
        ))
    return rows


def _reset(cursor) -> None:
    cursor.execute("TRUNCATE candles_candle")
    cursor.execute("DROP TABLE IF EXISTS bench_raw_copy")
    cursor.execute("CREATE TABLE bench_raw_copy (LIKE candles_candle INCLUDING ALL)")
    cursor.execute("CHECKPOINT")


def run_round(rows_total: int) -> tuple[float, float, dict]:
    from django.db import connection

    from candles.bars import ms_to_datetime
    from candles.models import Instrument, Timeframe
    from candles.storage import candles_upsert

    half = rows_total // 2
    preload = _make_rows(half, version=1)
    # The timed batch: the preloaded half again (newer version, other prices) and a new half.
    batch = [r._replace(version=2, close=r.close + 1) for r in preload]
    batch += _make_rows(rows_total, version=2)[half:]

    with connection.cursor() as cursor:
        _reset(cursor)
    candles_upsert(rows=preload)

    start = time.perf_counter()
    result = candles_upsert(rows=batch)
    upsert_s = time.perf_counter() - start
    if result.rejected or result.inserted != rows_total - half or result.updated != half:
        raise SystemExit(f"benchmark batch did not write as expected: {result}")

    ids = dict(Instrument.objects.filter(inst_id__startswith="BENCH-").values_list("inst_id", "id"))
    tf = Timeframe.objects.get(code=BAR).pk
    # The table stores the source in one byte (candles.fields.CandleSourceField).
    resolved = [
        (ids[r.inst_id], tf, ms_to_datetime(r.open_time_ms), r.open, r.high, r.low, r.close, r.vol, r.vol_ccy,
         r.vol_ccy_quote, r.confirmed, r.source[0], r.version)
        for r in batch
    ]
    columns = ("instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, "
               "confirmed, source, version")
    with connection.cursor() as cursor:
        start = time.perf_counter()
        with cursor.copy(f"COPY bench_raw_copy ({columns}) FROM STDIN") as copy:
            for row in resolved:
                copy.write_row(row)
        copy_s = time.perf_counter() - start
        cursor.execute("DROP TABLE bench_raw_copy")
    return upsert_s, copy_s, {"inserted": result.inserted, "updated": result.updated}


def compare_keys(table_rows: int = 1_000_000, batch_rows: int = 100_000) -> None:
    """Composite primary key vs surrogate id + unique constraint, with the same upsert statement."""
    from django.db import connection

    shapes = {
        "composite PK": "PRIMARY KEY (instrument_id, timeframe_id, open_time)",
        "surrogate id + unique": "id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                                 "UNIQUE (instrument_id, timeframe_id, open_time)",
    }
    body = ("instrument_id int NOT NULL, timeframe_id smallint NOT NULL, open_time timestamptz NOT NULL, "
            "open numeric, high numeric, low numeric, close numeric, vol numeric, vol_ccy numeric, "
            "vol_ccy_quote numeric, confirmed bool, source varchar(4), version bigint, updated_at timestamptz")
    cols = ("instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, "
            "confirmed, source, version, updated_at")
    gen = ("SELECT (g % 50), 2::smallint, timestamptz '2024-01-01' + (g / 50) * interval '1 minute', "
           "43016.1 + g % 7, 43183.8, 42946, 43169.7, 404.74017381, 17447600.212916623, 17447600.212916623, "
           "true, 'ws', {v}::bigint, now() FROM generate_series({lo}, {hi}) g")
    print(f"\nkey shape comparison: {table_rows:,} rows preloaded, upsert of {batch_rows:,} (half new)")
    with connection.cursor() as cursor:
        for label, key in shapes.items():
            cursor.execute("DROP TABLE IF EXISTS bench_keys")
            cursor.execute(f"CREATE TABLE bench_keys ({body}, {key})")
            start = time.perf_counter()
            cursor.execute(f"INSERT INTO bench_keys ({cols}) " + gen.format(v=1, lo=1, hi=table_rows))
            load_s = time.perf_counter() - start
            cursor.execute("VACUUM ANALYZE bench_keys")
            cursor.execute("CHECKPOINT")
            lo = table_rows - batch_rows // 2 + 1
            start = time.perf_counter()
            cursor.execute(
                f"INSERT INTO bench_keys AS c ({cols}) " + gen.format(v=2, lo=lo, hi=lo + batch_rows - 1)
                + " ON CONFLICT (instrument_id, timeframe_id, open_time) DO UPDATE SET open = EXCLUDED.open, "
                  "version = EXCLUDED.version WHERE EXCLUDED.version > c.version"
            )
            upsert_s = time.perf_counter() - start
            cursor.execute("SELECT pg_total_relation_size('bench_keys')")
            size_mb = cursor.fetchone()[0] / 2**20
            reads = []
            for _ in range(20):
                start = time.perf_counter()
                cursor.execute("SELECT * FROM bench_keys WHERE instrument_id = 7 AND timeframe_id = 2 "
                               "AND open_time < '2024-01-10' ORDER BY open_time DESC LIMIT 1000")
                cursor.fetchall()
                reads.append(time.perf_counter() - start)
            print(f"  {label:<22} load {table_rows / load_s:>9,.0f} rows/s   upsert {batch_rows / upsert_s:>9,.0f} "
                  f"rows/s   size {size_mb:6.1f} MB   1000-row range read p50 {statistics.median(reads) * 1000:.2f} ms")
        cursor.execute("DROP TABLE IF EXISTS bench_keys")


def _backend_cpu_s() -> float:
    """CPU seconds of this connection's PostgreSQL backend (it runs on this host)."""
    from django.db import connection

    connection.ensure_connection()
    fields = Path(f"/proc/{connection.connection.info.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare_strategies(sizes: tuple[int, ...] = (1, 5, 100, 300, 500, 1000, 3000)) -> None:
    """CPU per batch of each strategy: the process's own and its PostgreSQL backend's."""
    from candles import storage
    from candles.storage import candles_upsert

    print("\nstrategies of candles_upsert, CPU per batch (process + PostgreSQL backend):")
    version = 10
    chosen = storage.JSON_BATCH_MAX
    try:
        for size in sizes:
            line = [f"  {size:>5} rows:"]
            for name, limit in (("json", 10**9), ("staging", 0)):
                storage.JSON_BATCH_MAX = limit
                batches = max(3, min(200, 20_000 // size))
                candles_upsert(rows=_make_rows(size, version))
                version += 1
                backend, own = _backend_cpu_s(), time.process_time()
                for _ in range(batches):
                    candles_upsert(rows=_make_rows(size, version))
                    version += 1
                own_ms = (time.process_time() - own) * 1000 / batches
                backend_ms = (_backend_cpu_s() - backend) * 1000 / batches
                line.append(f"{name} {own_ms:6.2f} + {backend_ms:6.2f} = {own_ms + backend_ms:6.2f} ms")
            print("   ".join(line) + ("   (json chosen)" if size <= chosen else "   (staging chosen)"))
    finally:
        storage.JSON_BATCH_MAX = chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per timed batch (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default 3)")
    parser.add_argument("--compare-keys", action="store_true", help="also compare primary key shapes")
    parser.add_argument("--strategies", action="store_true",
                        help="also measure the write path's two strategies (json, staging) by batch size")
    args = parser.parse_args()
    if args.rows < 2 or args.rounds < 1:
        parser.error("--rows must be at least 2 and --rounds at least 1")

    name = _use_bench_database()
    _setup_django()
    from candles.models import Instrument

    for i in range(INSTRUMENTS):
        Instrument.objects.get_or_create(inst_id=f"BENCH-{i}-USDT", defaults={"inst_type": "SPOT"})

    print(f"database {name}; {args.rows:,} rows per batch ({args.rows // 2:,} updates, "
          f"{args.rows - args.rows // 2:,} inserts); {args.rounds} rounds")
    upserts, copies = [], []
    for n in range(1, args.rounds + 1):
        upsert_s, copy_s, _ = run_round(args.rows)
        upserts.append(args.rows / upsert_s)
        copies.append(args.rows / copy_s)
        print(f"  round {n}: candles_upsert {upserts[-1]:>9,.0f} rows/s   raw COPY {copies[-1]:>9,.0f} rows/s   "
              f"ratio {upserts[-1] / copies[-1]:.2f}")
    # The machine's speed drifts between rounds; the two figures of one round share its conditions, so the
    # verdict uses the median of the per-round ratios.
    upsert_rate, copy_rate = statistics.median(upserts), statistics.median(copies)
    ratios = sorted(u / c for u, c in zip(upserts, copies, strict=True))
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"candles_upsert {upsert_rate:,.0f} rows/s; raw COPY {copy_rate:,.0f} rows/s (medians); "
          f"ratio {ratio:.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; {verdict} the 0.5x target)")
    if args.strategies:
        compare_strategies()
    if args.compare_keys:
        compare_keys()


if __name__ == "__main__":
    main()
