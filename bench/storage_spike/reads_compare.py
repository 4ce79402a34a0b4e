"""Reads on the plain table vs the partitioned one (the two databases upsert_compare.py built): /data pages through
candle_list_text, gap probes through candle_missing_ranges, and detection's watermark count.

    .venv/bin/python bench/storage_spike/reads_compare.py [READS]
"""

import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["DJANGO_SETTINGS_MODULE"] = "okxproject.settings"
os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/okx_wt_f_plain"
os.environ["LOG_LEVEL"] = "WARNING"
import django

django.setup()
import upsert_compare as uc  # noqa: E402
from django.db import connection  # noqa: E402

from candles.models import Instrument, Timeframe  # noqa: E402
from candles.reads import candle_list_text  # noqa: E402
from candles.series import candle_missing_ranges  # noqa: E402
from collectors.repair import detect  # noqa: E402

READS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
D0 = datetime(2026, 11, 30, tzinfo=UTC)
rng = random.Random(7)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def read_cases():
    cases = []
    for _ in range(READS):
        inst = rng.randrange(1, 13)
        if rng.random() < 0.75:
            cases.append(("1s", inst, D0 + timedelta(seconds=rng.randrange(0, 130_000))))
        else:
            cases.append(("1m", inst, datetime(2026, 10, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 80_000))))
    return cases


cases = read_cases()
results: dict[tuple[str, str], list[float]] = {}
# both orders, so neither table always reads second
for kind, db in [*uc.DBS.items(), *reversed(uc.DBS.items())]:
    uc.use(db)
    insts = dict(Instrument.objects.values_list("id", "inst_id"))
    tfs = dict(Timeframe.objects.values_list("code", "id"))
    for how in ("ids", "names", "bar id + inst_id"):
        for bar, inst, start in cases:  # warm-up: the same pages once, untimed (shared cache, cold disks)
            candle_list_text(start=start, limit=1000, instrument_id=inst, timeframe_id=tfs[bar])
        times = []
        for bar, inst, start in cases:
            kwargs = {"ids": {"instrument_id": inst, "timeframe_id": tfs[bar]},
                      "names": {"inst_id": insts[inst], "bar": bar},
                      "bar id + inst_id": {"inst_id": insts[inst], "timeframe_id": tfs[bar]}}[how]
            started = time.perf_counter()
            page = candle_list_text(start=start, limit=1000, **kwargs)
            times.append(time.perf_counter() - started)
            assert len(page.candles) == 1000, (bar, inst, start, len(page.candles))
        results.setdefault((kind, how), []).extend(times)
for (kind, how), times in results.items():
    for bar in ("1s", "1m"):
        sel = [t for t, case in zip(times, cases * 2, strict=True) if case[0] == bar]
        print(f"    {bar}: p50 {1000 * statistics.median(sel):6.2f} ms p90 {1000 * pct(sel, 0.9):6.2f} ms")
    print(f"/data 1000 candles by {how:<16} {kind:<12} p50 {1000 * statistics.median(times):6.2f} ms  "
          f"p90 {1000 * pct(times, 0.9):6.2f} ms  p99 {1000 * pct(times, 0.99):6.2f} ms")

# planning vs execution of one read, partitioned
uc.use(uc.DBS["partitioned"])
with connection.cursor() as cur:
    for label, where in (("ids", "instrument_id = 3 AND timeframe_id = 1"),
                         ("names", "instrument_id = (SELECT id FROM candles_instrument WHERE inst_id = 'SOL-USDT') "
                                   "AND timeframe_id = (SELECT id FROM candles_timeframe WHERE code = '1s')")):
        cur.execute("EXPLAIN (ANALYZE, SUMMARY) SELECT open::text FROM candles_candle WHERE " + where +
                    " AND open_time >= '2026-11-30 10:00Z' ORDER BY open_time LIMIT 1001")
        plan = [r[0] for r in cur.fetchall()]
        summary = [p.strip() for p in plan if p.strip().startswith(("Planning Time", "Execution Time", "Subplans"))]
        print(f"  partitioned plan by {label}: {'; '.join(summary)}")

# gap probes over one day of 1s (86,400 expected open times) and 2 months of 1m
for kind, db in uc.DBS.items():
    uc.use(db)
    tf1s, tf1m = Timeframe.objects.get(code="1s"), Timeframe.objects.get(code="1m")
    out = []
    for tf, start, end in ((tf1s, D0, D0 + timedelta(days=1) - timedelta(seconds=1)),
                           (tf1m, datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 29, tzinfo=UTC))):
        started = time.perf_counter()
        missing = candle_missing_ranges(instrument_id=5, timeframe=tf, start=start, end=end)
        out.append(f"{tf.code} {1000 * (time.perf_counter() - started):7.1f} ms ({len(missing)} missing runs)")
    print(f"candle_missing_ranges {kind:<12} " + "; ".join(out))

# detection's count past the watermarks: 12 series per bar, watermark 12 h back
for kind, db in uc.DBS.items():
    uc.use(db)
    with connection.cursor() as cur:
        cur.execute("DELETE FROM candles_subscription")
        cur.execute("""INSERT INTO candles_subscription (instrument_id, timeframe_id, is_active, status,
                       status_message, webhook_url, webhook_failures, webhook_last_error, detected_through,
                       created_at, updated_at)
                       SELECT i.id, t.id, true, 'live', '', '', 0, '', '2026-11-30 12:00Z', now(), now()
                       FROM candles_instrument i, candles_timeframe t WHERE t.code IN ('1s', '1m')""")
        out = []
        for code, end in (("1s", "2026-12-01 00:00Z"), ("1m", "2026-11-30 23:59Z")):
            tf_id = Timeframe.objects.get(code=code).pk
            ts = []
            for _ in range(5):
                started = time.perf_counter()
                cur.execute(detect._PAST_WATERMARKS, {"timeframe": tf_id, "end": end, "chunk": 50_000})
                rows = cur.fetchall()
                ts.append(time.perf_counter() - started)
            out.append(f"{code} {1000 * statistics.median(ts):7.1f} ms ({sum(r[-1] for r in rows):,} candles counted)")
        print(f"detection count past watermarks {kind:<12} " + "; ".join(out))
        cur.execute("DELETE FROM candles_subscription")
connection.close()
