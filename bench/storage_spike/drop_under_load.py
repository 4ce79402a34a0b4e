"""Retention's drop of a day of 1s while the live flush writes and /data reads, on the partitioned compact table
(okx_wt_f after migrate_prototype.sql, days 2026-11-01..05 loaded). A writer flushes every 200 ms (2,400 rows:
the open 1s candles' newer versions and confirms, INSERT … ON CONFLICT into the root table) and a reader reads
1,000 1s candles every 100 ms. Each operation is timed, with the writer's and the reader's slowest statement
while it ran.

    .venv/bin/python bench/storage_spike/drop_under_load.py
"""

import threading
import time

import psycopg

DSN = "postgresql://postgres@127.0.0.1:5432/okx_wt_f"
FLUSH = """
INSERT INTO candles_candle AS c (open_time, version, instrument_id, timeframe_id, confirmed, source,
                                 open, high, low, close, vol, vol_ccy, vol_ccy_quote)
SELECT open_time, version + %(n)s, instrument_id, timeframe_id, confirmed, 'w', open, high, low, close, vol,
       vol_ccy, vol_ccy_quote
FROM live_src WHERE step BETWEEN %(lo)s AND %(lo)s + 199
ON CONFLICT (instrument_id, timeframe_id, open_time) DO UPDATE SET
  open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, vol = EXCLUDED.vol,
  vol_ccy = EXCLUDED.vol_ccy, vol_ccy_quote = EXCLUDED.vol_ccy_quote, confirmed = EXCLUDED.confirmed,
  source = EXCLUDED.source, version = EXCLUDED.version
WHERE EXCLUDED.version > c.version AND (EXCLUDED.confirmed OR NOT c.confirmed)
"""
READ = """
SELECT open_time, open::text, high::text, low::text, close::text, vol::text FROM candles_candle
WHERE instrument_id = %(inst)s AND timeframe_id = 1 AND open_time >= '2026-12-02' ORDER BY open_time LIMIT 1000
"""
samples: dict[str, list[tuple[float, float]]] = {"writer": [], "reader": []}
stop = threading.Event()


def loop(name: str, period: float, sql: str, params) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            conn.execute(sql, params(n))
            samples[name].append((started, time.monotonic() - started))
            n += 1
            time.sleep(max(0.0, period - (time.monotonic() - started)))


def worst(name: str, since: float, until: float) -> float:
    return max((d for t, d in samples[name] if t + d >= since and t <= until), default=0.0)


def op(label: str, statements: list[str], conn, lock_timeout: str | None = None) -> None:
    if lock_timeout:
        conn.execute(f"SET lock_timeout = '{lock_timeout}'")
    started = time.monotonic()
    parts, outcome = [], "ok"
    for sql in statements:
        t0 = time.monotonic()
        try:
            conn.execute(sql)
        except psycopg.errors.LockNotAvailable:
            outcome = f"gave up after lock_timeout {lock_timeout}"
            parts.append(f"{time.monotonic() - t0:.3f}s")
            break
        parts.append(f"{time.monotonic() - t0:.3f}s")
    ended = time.monotonic()
    conn.execute("RESET lock_timeout")
    time.sleep(0.5)  # let the writer's next flush after the operation land in the window
    print(f"{label:<62} {ended - started:6.3f}s ({' + '.join(parts)}; {outcome}); writer slowest flush "
          f"{worst('writer', started, ended + 0.3):.3f}s, "
          f"reader slowest read {worst('reader', started, ended + 0.3):.3f}s",
          flush=True)


def long_reader(seconds: float) -> threading.Thread:
    def run():
        with psycopg.connect(DSN, autocommit=True) as conn:
            # an analyst's slow query over the 1s bar: holds ACCESS SHARE on the bar's partitions meanwhile
            conn.execute(f"SELECT count(*), pg_sleep({seconds}) FROM candles_candle WHERE timeframe_id = 1 "
                         "AND open_time >= '2026-11-01'")
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    return t


with psycopg.connect(DSN, autocommit=True) as conn:
    conn.execute("DROP TABLE IF EXISTS live_src")
    conn.execute("CREATE UNLOGGED TABLE live_src AS SELECT (row_number() OVER (PARTITION BY instrument_id "
                 "ORDER BY open_time) - 1)::int AS step, * FROM spike_candles('1s', '2026-12-02', 7200)")
    conn.execute("CREATE INDEX ON live_src (step)")
    conn.execute("ANALYZE live_src")
    threads = [threading.Thread(target=loop, args=("writer", 0.2, FLUSH, lambda n: {"n": n, "lo": (n * 100) % 7000})),
               threading.Thread(target=loop, args=("reader", 0.1, READ, lambda n: {"inst": 1 + n % 12}))]
    for t in threads:
        t.start()
    time.sleep(3)
    base = [d for _, d in samples["writer"]]
    print(f"baseline: writer flush median {sorted(base)[len(base) // 2]:.3f}s max {max(base):.3f}s over {len(base)}")
    op("DROP TABLE candles_candle_1s_20261101 (1.04M rows)", ["DROP TABLE candles_candle_1s_20261101"], conn)
    time.sleep(1)
    op("DETACH CONCURRENTLY + DROP candles_candle_1s_20261102 (300k)",
       ["ALTER TABLE candles_candle_1s DETACH PARTITION candles_candle_1s_20261102 CONCURRENTLY",
        "DROP TABLE candles_candle_1s_20261102"], conn)
    time.sleep(1)
    op("DETACH + DROP candles_candle_1s_20261103 (300k)",
       ["ALTER TABLE candles_candle_1s DETACH PARTITION candles_candle_1s_20261103",
        "DROP TABLE candles_candle_1s_20261103"], conn)
    time.sleep(1)
    reader = long_reader(3)
    op("DROP ..._20261104 behind a 3 s reader, no lock_timeout", ["DROP TABLE candles_candle_1s_20261104"], conn)
    reader.join()
    time.sleep(1)
    reader = long_reader(3)
    op("DROP ..._20261105 behind a 3 s reader, lock_timeout 200ms", ["DROP TABLE candles_candle_1s_20261105"], conn,
       lock_timeout="200ms")
    reader.join()
    time.sleep(1)
    op("  retried after the reader ended", ["DROP TABLE candles_candle_1s_20261105"], conn, lock_timeout="200ms")
    time.sleep(1)
    reader = long_reader(3)
    conn.execute("CREATE TABLE spike_day (LIKE candles_candle_1s INCLUDING ALL)")
    conn.execute("INSERT INTO spike_day SELECT * FROM spike_candles_compact('2026-11-06', 25000)") if False else None
    op("DETACH CONCURRENTLY ..._20261106 (empty) behind a 3 s reader",
       ["ALTER TABLE candles_candle_1s DETACH PARTITION candles_candle_1s_20261106 CONCURRENTLY",
        "DROP TABLE candles_candle_1s_20261106"], conn)
    reader.join()
    reader = long_reader(3)
    op("CREATE TABLE … PARTITION OF behind a 3 s reader",
       ["CREATE TABLE candles_candle_1s_20261207 PARTITION OF candles_candle_1s FOR VALUES FROM ('2026-12-07') "
        "TO ('2026-12-08') WITH (fillfactor = 100)"], conn)
    reader.join()
    reader = long_reader(3)
    op("CREATE TABLE (LIKE) + ATTACH PARTITION behind a 3 s reader",
       ["CREATE TABLE candles_candle_1s_20261208 (LIKE candles_candle_1s INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "WITH (fillfactor = 100)",
        "ALTER TABLE candles_candle_1s ATTACH PARTITION candles_candle_1s_20261208 FOR VALUES FROM ('2026-12-08') "
        "TO ('2026-12-09')"], conn)
    reader.join()
    op("CREATE TABLE … PARTITION OF (a new day)",
       ["CREATE TABLE candles_candle_1s_20261205 PARTITION OF candles_candle_1s FOR VALUES FROM ('2026-12-05') "
        "TO ('2026-12-06') WITH (fillfactor = 100)"], conn)
    op("CREATE TABLE (LIKE) + ATTACH PARTITION (a new day)",
       ["CREATE TABLE candles_candle_1s_20261206 (LIKE candles_candle_1s INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "WITH (fillfactor = 100)",
        "ALTER TABLE candles_candle_1s ATTACH PARTITION candles_candle_1s_20261206 FOR VALUES FROM ('2026-12-06') "
        "TO ('2026-12-07')"], conn)
    stop.set()
    for t in threads:
        t.join()
    w = sorted(d for _, d in samples["writer"])
    r = sorted(d for _, d in samples["reader"])
    print(f"whole run: writer {len(w)} flushes p50 {w[len(w) // 2]:.3f}s p99 {w[int(len(w) * 0.99)]:.3f}s "
          f"max {w[-1]:.3f}s; "
          f"reader {len(r)} reads p50 {r[len(r) // 2]:.3f}s p99 {r[int(len(r) * 0.99)]:.3f}s max {r[-1]:.3f}s")
    conn.execute("DROP TABLE live_src")
