"""candles_upsert (unchanged) into a plain candles table vs the same table partitioned (LIST bar → RANGE open time,
today's columns), alternating rounds on the same rows. Each batch: half newer versions of stored 1s candles, half
new ones. Creates okx_wt_f_plain and okx_wt_f_part (dropped with --drop).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/okx_wt_f_plain \
    .venv/bin/python bench/storage_spike/upsert_compare.py [--setup] [--rows 200000] [--rounds 6] [--drop]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
DBS = {"plain": "okx_wt_f_plain", "partitioned": "okx_wt_f_part"}
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
D0 = "2026-11-30"  # the preloaded day of 1s candles
PRELOAD = f"""
INSERT INTO candles_candle (instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy,
                            vol_ccy_quote, confirmed, source, version, updated_at)
SELECT * FROM spike_candles('1s', '{D0}', 86400);
INSERT INTO candles_candle (instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy,
                            vol_ccy_quote, confirmed, source, version, updated_at)
SELECT * FROM spike_candles('1m', '2026-10-01', 86400);
"""


def setup() -> None:
    for kind, db in DBS.items():
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db], check=True)
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
        env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}"}
        subprocess.run([str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*PSQL, db, "-f", str(HERE / "gen.sql"), "-f", str(HERE / "measure.sql"), "-c", PRELOAD],
                       check=True)
        if kind == "partitioned":
            subprocess.run([*PSQL, db, "-f", str(HERE / "partition_legacy_layout.sql")], check=True,
                           stdout=subprocess.DEVNULL)
        subprocess.run([*PSQL, db, "-c", "VACUUM ANALYZE"], check=True)
        print(f"{kind}: {db} loaded", flush=True)


def use(db: str) -> None:
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = db


def batch(rows: int, r: int):
    """Round r's rows: [86400 + (r-1)H, 86400 + (r+1)H) seconds after D0, H = rows / 2 / 12."""
    from django.db import connection

    from candles.storage import CandleRow

    half = rows // 2 // 12
    with connection.cursor() as cur:
        cur.execute(
            "SELECT i.inst_id, (extract(epoch FROM c.open_time) * 1000)::bigint, c.open::text, c.high::text, "
            "c.low::text, c.close::text, c.vol::text, c.vol_ccy::text, c.vol_ccy_quote::text, c.version "
            "FROM spike_candles('1s', %s::timestamptz + (86400 + (%s - 1) * %s) * interval '1 second', 2 * %s) c "
            "JOIN candles_instrument i ON i.id = c.instrument_id",
            [D0, r, half, half],
        )
        return [CandleRow(inst, "1s", ms, o, h, lo, c, v, vc, vq, True, "ws", ver + (r + 1) * 1_000_000)
                for inst, ms, o, h, lo, c, v, vc, vq, ver in cur.fetchall()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--drop", action="store_true")
    parser.add_argument("--original-on-plain", action="store_true",
                        help="also time today's merge (RETURNING xmax) on the plain table")
    args = parser.parse_args()
    if args.setup:
        setup()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DBS['plain']}"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.db import connection

    import candles.storage as storage
    from candles.storage import candles_upsert

    # PostgreSQL 15 refuses `RETURNING xmax` on a partitioned table ("cannot retrieve a system column in this
    # context"). The merge counts inserts instead by probing, in the statement's snapshot (before the insert),
    # whether each written key existed. Used for both tables, so the comparison is the same SQL.
    original = storage._MERGE_UNIQUE, storage._MERGE_DEDUPLICATED

    def partition_safe(sql: str) -> str:
        old_ret = "RETURNING (xmax = 0) AS inserted"
        old_sel = "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged"
        assert old_ret in sql
        assert old_sel in sql
        return sql.replace(old_ret, "RETURNING c.instrument_id, c.timeframe_id, c.open_time").replace(old_sel, """
SELECT count(*) FILTER (WHERE NOT existed), count(*) FILTER (WHERE existed)
FROM (SELECT EXISTS (SELECT 1 FROM candles_candle o WHERE o.instrument_id = m.instrument_id
                     AND o.timeframe_id = m.timeframe_id AND o.open_time = m.open_time) AS existed
      FROM merged m) w""")

    patched = tuple(map(partition_safe, original))
    storage._MERGE_UNIQUE, storage._MERGE_DEDUPLICATED = patched

    rates: dict[str, list[float]] = {k: [] for k in DBS}
    for r in range(args.rounds):
        use(DBS["plain"])
        rows = batch(args.rows, r)
        order = list(DBS) if r % 2 == 0 else list(reversed(DBS))
        line = []
        for kind in order:
            use(DBS[kind])
            with connection.cursor() as cur:
                cur.execute("SELECT count(*) FROM candles_candle")
                before = cur.fetchone()[0]
            started = time.perf_counter()
            result = candles_upsert(rows=rows)
            took = time.perf_counter() - started
            if kind == "plain" and args.original_on_plain:
                # the same rows again with a newer version: all updates, through today's SQL
                storage._MERGE_UNIQUE, storage._MERGE_DEDUPLICATED = original
                again = [row._replace(version=row.version + 500_000) for row in rows]
                t0 = time.perf_counter()
                candles_upsert(rows=again)
                t_orig = time.perf_counter() - t0
                storage._MERGE_UNIQUE, storage._MERGE_DEDUPLICATED = patched
                again = [row._replace(version=row.version + 600_000) for row in rows]
                t0 = time.perf_counter()
                candles_upsert(rows=again)
                t_patch = time.perf_counter() - t0
                line.append(f"[plain, all-update batch: xmax {len(rows) / t_orig:,.0f} vs probe "
                            f"{len(rows) / t_patch:,.0f} rows/s]")
            rates[kind].append(len(rows) / took)
            line.append(f"{kind} {len(rows) / took:>9,.0f} rows/s (ins {result.inserted:,} upd {result.updated:,} "
                        f"into {before:,})")
        print(f"round {r + 1}: " + "; ".join(line), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = [p / q for p, q in zip(rates["partitioned"], rates["plain"], strict=True)]
    print(f"median: plain {med['plain']:,.0f} rows/s, partitioned {med['partitioned']:,.0f} rows/s; "
          f"ratio partitioned/plain {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    connection.close()
    if args.drop:
        for db in DBS.values():
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db], check=True)


if __name__ == "__main__":
    main()
