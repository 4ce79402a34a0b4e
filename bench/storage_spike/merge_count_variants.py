"""How candles_upsert can count inserts on a partitioned table (PostgreSQL 15 refuses `RETURNING xmax` there).

Times the merge of one batch (half new keys, half newer versions of stored ones) inside a transaction that is
rolled back, so every variant meets the same table. Variants:
  xmax     today's SQL (plain table only)
  none     RETURNING 1: written rows counted, inserts and updates not told apart
  probe    inserts counted by probing, in the statement's snapshot, whether each written key existed;
           `enable_seqscan = off` for the statement, or the planner scans a fresh (empty-by-statistics)
           partition once per row
  probe-naive   the same probe with the planner free (shown once, on a 20k batch)

    .venv/bin/python bench/storage_spike/merge_count_variants.py ROWS REPS
"""

import os
import statistics
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["DJANGO_SETTINGS_MODULE"] = "okxproject.settings"
os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/okx_wt_f_plain"
os.environ["LOG_LEVEL"] = "WARNING"
import django

django.setup()
import upsert_compare as uc  # noqa: E402
from django.db import connection, transaction  # noqa: E402

import candles.storage as storage  # noqa: E402
from candles.storage import CandleRow  # noqa: E402

RET = "RETURNING (xmax = 0) AS inserted"
SEL = "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged"
PROBE = """
SELECT count(*) FILTER (WHERE NOT existed), count(*) FILTER (WHERE existed)
FROM (SELECT EXISTS (SELECT 1 FROM candles_candle o WHERE o.instrument_id = m.instrument_id
                     AND o.timeframe_id = m.timeframe_id AND o.open_time = m.open_time) AS existed
      FROM merged m OFFSET 0) w"""
VARIANTS = {
    "xmax": storage._MERGE_UNIQUE,
    "none": storage._MERGE_UNIQUE.replace(RET, "RETURNING 1 AS one").replace(SEL, "SELECT count(*), 0 FROM merged"),
    "probe": storage._MERGE_UNIQUE.replace(RET, "RETURNING c.instrument_id, c.timeframe_id, c.open_time")
                                  .replace(SEL, PROBE),
}


def timed(db: str, variant: str, rows, seqscan: bool = False) -> float:
    uc.use(db)
    with transaction.atomic(), connection.cursor() as cur:
        if variant == "probe" and not seqscan:
            cur.execute("SET LOCAL enable_seqscan = off")
        started = time.perf_counter()
        cur.execute(storage._CREATE_STAGING)
        with cur.copy(storage._COPY_STAGING) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(VARIANTS[variant])
        cur.fetchone()
        took = time.perf_counter() - started
        transaction.set_rollback(True)
    return took


n, reps = int(sys.argv[1]), int(sys.argv[2])
uc.use(uc.DBS["plain"])
# a window ending past what upsert_compare wrote: half its keys are stored, half are new
with connection.cursor() as cur:
    cur.execute("SELECT max(open_time) FROM candles_candle WHERE timeframe_id = 1")
    newest = cur.fetchone()[0]
half = n // 2 // 12
with connection.cursor() as cur:
    cur.execute(
        "SELECT i.inst_id, (extract(epoch FROM c.open_time) * 1000)::bigint, c.open::text, c.high::text, "
        "c.low::text, c.close::text, c.vol::text, c.vol_ccy::text, c.vol_ccy_quote::text, c.version "
        "FROM spike_candles('1s', %s, %s) c JOIN candles_instrument i ON i.id = c.instrument_id",
        [newest - timedelta(seconds=half - 1), 2 * half])
    rows = [CandleRow(inst, "1s", ms, o, h, lo, c, v, vc, vq, True, "ws", ver + 10**9)
            for inst, ms, o, h, lo, c, v, vc, vq, ver in cur.fetchall()]
print(f"batch of {len(rows):,} rows: half stored keys, half new (rolled back after each timing)")
print(f"probe-naive, partitioned, 20k rows: {timed(uc.DBS['partitioned'], 'probe', rows[:20_000], True):.2f}s; "
      f"probe (enable_seqscan off): {timed(uc.DBS['partitioned'], 'probe', rows[:20_000]):.2f}s")
times: dict[tuple[str, str], list[float]] = {}
for _ in range(reps):
    for kind, db in uc.DBS.items():
        for variant in VARIANTS:
            if variant == "xmax" and kind == "partitioned":
                continue
            times.setdefault((kind, variant), []).append(timed(db, variant, rows))
for (kind, variant), ts in times.items():
    med = statistics.median(ts)
    print(f"{kind:<12} {variant:<6} median {len(rows) / med:>9,.0f} rows/s  ({', '.join(f'{t:.2f}' for t in ts)} s)")
connection.close()
