"""Live-like churn of one bar into a table, one transaction per flush, with VACUUM every N flushes standing in
for autovacuum (the shared test server runs with autovacuum off). Prints bytes per row after a final VACUUM.

    .venv/bin/python bench/storage_spike/churn.py TABLE BAR STEPS VERSIONS VACUUM_EVERY [--instruments-x N]

TABLE must exist with the compact layout (l4_reordered's columns); gen.sql and measure.sql loaded.
"""

import sys
import time

import psycopg

table, bar, steps, versions, vacuum_every = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
dsn = "postgresql://postgres@127.0.0.1:5432/okx_wt_f"
FLUSH = f"""
INSERT INTO {table} AS c (open_time, version, instrument_id, timeframe_id, confirmed, source,
                          open, high, low, close, vol, vol_ccy, vol_ccy_quote)
SELECT open_time, version + CASE WHEN step < %(s)s THEN {versions} + 1 ELSE %(v)s END, instrument_id,
       timeframe_id, step < %(s)s, 'w', open, high, low, close, vol, vol_ccy, vol_ccy_quote
FROM churn_src WHERE step = %(s)s OR (step = %(s)s - 1 AND %(v)s = 1)
ON CONFLICT (instrument_id, timeframe_id, open_time) DO UPDATE SET
  open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
  vol = EXCLUDED.vol, vol_ccy = EXCLUDED.vol_ccy, vol_ccy_quote = EXCLUDED.vol_ccy_quote,
  confirmed = EXCLUDED.confirmed, source = EXCLUDED.source, version = EXCLUDED.version
WHERE EXCLUDED.version > c.version AND (EXCLUDED.confirmed OR NOT c.confirmed)
"""
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("SET synchronous_commit = off")
    conn.execute("DROP TABLE IF EXISTS churn_src")
    conn.execute("CREATE UNLOGGED TABLE churn_src AS SELECT row_number() OVER (PARTITION BY instrument_id "
                 "ORDER BY open_time) - 1 AS step, * FROM spike_candles(%s, '2026-11-01', %s)", (bar, steps))
    conn.execute("CREATE INDEX ON churn_src (step)")
    conn.execute("ANALYZE churn_src")
    conn.execute(f"SELECT pg_stat_reset_single_table_counters('{table}'::regclass)")
    started, flushes = time.monotonic(), 0
    for s in range(steps + 1):
        for v in range(1, versions + 1):
            conn.execute(FLUSH, {"s": s, "v": v})
            flushes += 1
            if vacuum_every and flushes % vacuum_every == 0:
                conn.execute(f"VACUUM {table}")
    took = time.monotonic() - started
    ins, upd, hot = conn.execute("SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                                 "WHERE relid = %s::regclass", (table,)).fetchone()
    conn.execute(f"VACUUM ANALYZE {table}")
    rows, heap, idx, total, _, _ = conn.execute("SELECT * FROM spike_bytes(%s::regclass)", (table,)).fetchone()
    print(f"{table}: {bar} {steps} steps x {versions} versions, vacuum every {vacuum_every} flushes: {flushes} flushes "
          f"in {took:.1f}s; {upd} updates, {100 * hot / max(upd, 1):.1f} % HOT; after VACUUM {rows} rows: "
          f"heap {heap} + index {idx} = {total} B/row")
    conn.execute("DROP TABLE churn_src")
