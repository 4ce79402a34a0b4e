"""Benchmark the repair plane at the mission's breadth: 1,000 instruments × 27 bars = 27,000 series.

    .venv/bin/python bench/repair.py [--instruments 1000] [--minutes 10] [--runs 5]
    .venv/bin/python bench/repair.py --throughput 20 [--instruments 1000] [--profile]

Runs in its own database (the configured one's name + `_bench`, as bench/upsert.py). It stores `--minutes`
of every series' candles (1s included: 600,000 rows for ten minutes of 1,000 instruments), 5 % of the closed
1s and 1m candles unconfirmed (their confirm push "never came"), and measures:

1. a steady detection run: every 1s series has 5 candles closed since its watermark (a run every 5 s) and
   every 1m/3m/5m/15m series one (the worst boundary, when they all close together);
2. the detection run after a collector outage of 60 s: every series has a hole, recorded as gaps;
3. reading the missed-confirm queue (the partial index) and building its REST units: whole, and as deep as one
   repair run reads it;
4. the same steady run at a tenth of the series, to show the cost follows the candles, not the series.

`--throughput SECONDS` measures instead the repair runs themselves against the simulator (requests a second,
CPU per unit by phase): see bench/repair_throughput.py.

Target (issue 14): a run's work follows what changed; at 27,000 series a steady run takes well under its
5 s period. The baseline it replaces looped over subscriptions at 30–100 ms each (13–45 min a pass).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upsert import _setup_django, _use_bench_database

BARS_WITH_NEWS = {"1s": 5, "1m": 1, "3m": 1, "5m": 1, "15m": 1}


def _reset(instruments: int, minutes: int, now_ms: int) -> None:
    """Fresh instruments, subscriptions and `minutes` of candles of every bar, watermarks at the last close."""
    from django.db import connection

    from candles.bars import ms_to_datetime
    from candles.models import Timeframe
    from candles.partitions import partitions_ensure

    with connection.cursor() as cur:
        cur.execute("TRUNCATE candles_gap, candles_subscription, candles_candle, candles_instrument CASCADE")
        cur.execute("""
            INSERT INTO candles_instrument (inst_id, inst_type, base_ccy, quote_ccy, settle_ccy, inst_family, state,
                                            created_at, updated_at)
            SELECT 'B' || k || '-USDT', 'SPOT', 'B' || k, 'USDT', '', '', 'live', now(), now()
            FROM generate_series(1, %s) k
        """, [instruments])
        cur.execute("""
            INSERT INTO candles_subscription (instrument_id, timeframe_id, is_active, status, status_message,
                webhook_url, webhook_failures, webhook_last_error, created_at, updated_at)
            SELECT i.id, t.id, true, 'live', '', '', 0, '', now() - interval '1 day', now()
            FROM candles_instrument i CROSS JOIN candles_timeframe t
        """)
        for tf in Timeframe.objects.all():
            spec = tf.spec
            last = spec.last_closed(now_ms)
            count = max(1, min(minutes * 60 // max(tf.seconds, 1), 600)) if not tf.months else 1
            first = spec.advance(last, -(count - 1))
            times = [ms_to_datetime(last)] if tf.months else None
            # A plain INSERT bypasses candles_upsert, which makes the partitions a write needs.
            partitions_ensure(bar=tf.code, start=ms_to_datetime(first), end=ms_to_datetime(last + 1))
            cur.execute("""
                INSERT INTO candles_candle (instrument_id, timeframe_id, open_time, open, high, low, close, vol,
                    vol_ccy, vol_ccy_quote, confirmed, source, version)
                SELECT i.id, %(tf)s, t, 100.1, 100.2, 100.0, 100.1, 1.5, 150.15, 150.15,
                       (%(code)s NOT IN ('1s', '1m') OR random() > 0.05 OR t = %(last)s), 'w', 1
                FROM candles_instrument i
                CROSS JOIN (SELECT unnest(%(times)s::timestamptz[]) AS t WHERE %(times)s IS NOT NULL
                            UNION ALL
                            SELECT generate_series(%(first)s::timestamptz, %(last)s::timestamptz,
                                                   %(step)s * interval '1 second')
                            WHERE %(times)s IS NULL) ts
            """, {"tf": tf.pk, "code": tf.code, "times": times, "first": ms_to_datetime(first),
                  "last": ms_to_datetime(last), "step": tf.seconds or 1})
        cur.execute("ANALYZE candles_candle")
        cur.execute("ANALYZE candles_subscription")


def _set_watermarks(now_ms: int, behind: dict[str, int]) -> None:
    """Every series' watermark at its last close, less `behind[bar]` candles."""
    from django.db import connection

    from candles.bars import ms_to_datetime
    from candles.models import Timeframe

    with connection.cursor() as cur:
        for tf in Timeframe.objects.all():
            spec = tf.spec
            mark = spec.advance(spec.last_closed(now_ms), -behind.get(tf.code, 0))
            cur.execute("UPDATE candles_subscription SET detected_through = %s WHERE timeframe_id = %s",
                        [ms_to_datetime(mark), tf.pk])


def _timed(action) -> tuple[float, object]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = action()
        elapsed = time.perf_counter() - started
    return elapsed, (result, len(queries))


def _steady(now, now_ms: int, runs: int) -> tuple[list[float], object]:
    from django.db import transaction

    from collectors.repair.detect import detection_advance

    times, last = [], None
    for _ in range(runs):
        _set_watermarks(now_ms, BARS_WITH_NEWS)
        with transaction.atomic():
            elapsed, last = _timed(lambda: detection_advance(now=now, settle=timedelta(0)))
            transaction.set_rollback(True)  # the next run finds the same news
        times.append(elapsed)
    return times, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--throughput", type=float, default=0, metavar="SECONDS",
                        help="measure only repair throughput against the simulator, this long per kind of work")
    parser.add_argument("--profile", action="store_true", help="with --throughput: where the workers' CPU went")
    args = parser.parse_args()
    name = _use_bench_database()
    _setup_django()
    if args.throughput:
        from repair_throughput import throughput

        print(f"database {name}")
        throughput(args.instruments, args.throughput, args.profile)
        return
    from django.db import connection, transaction
    from django.utils import timezone

    from candles.bars import datetime_to_ms
    from candles.models import Subscription
    from collectors.repair.confirms import confirm_backlog
    from collectors.repair.detect import detection_advance
    from collectors.repair.report import BUDGET_PER_S
    from collectors.repair.schedule import SPARE_UNITS
    from okxproject.keys import Keys

    print(f"database {name}; {args.instruments} instruments × 27 bars; {args.minutes} min of candles")
    now = timezone.now()
    now_ms = datetime_to_ms(now)
    started = time.perf_counter()
    _reset(args.instruments, args.minutes, now_ms)
    series = Subscription.objects.count()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE NOT confirmed) FROM candles_candle")
        rows, unconfirmed = cur.fetchone()
    print(f"setup: {series:,} series, {rows:,} candles ({unconfirmed:,} unconfirmed) in "
          f"{time.perf_counter() - started:.1f} s")

    times, (result, queries) = _steady(now, now_ms, args.runs)
    print(f"1. steady detection run ({', '.join(f'{b} +{n}' for b, n in BARS_WITH_NEWS.items())} per series): "
          f"p50 {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms, {queries} queries; "
          f"{result.examined:,} series examined, {result.advanced:,} advanced, {result.gaps} gaps")

    _set_watermarks(now_ms, {tf: 60 // max(1, s) for tf, s in (("1s", 1),)} | {"1m": 1})
    with transaction.atomic():
        with connection.cursor() as cur:  # a 60 s outage: the last minute of 1s and the last 1m candle are gone
            cur.execute("""
                DELETE FROM candles_candle c USING candles_timeframe t
                WHERE t.id = c.timeframe_id AND ((t.code = '1s' AND c.open_time > now() - interval '60 s')
                                                 OR (t.code = '1m' AND c.open_time > now() - interval '2 min'))
            """)
        elapsed, (result, queries) = _timed(lambda: detection_advance(now=now, settle=timedelta(0)))
        transaction.set_rollback(True)
    print(f"2. detection after a 60 s outage: {elapsed * 1000:.0f} ms, {queries} queries; "
          f"{result.incomplete:,} series with holes, {result.gaps:,} gaps ({result.missing:,} candles)")

    class _NoRedis:  # the retry set is empty in a fresh run
        def pipeline(self, transaction=False):
            return self

        def zremrangebyscore(self, *a):
            return self

        def zrange(self, *a):
            return self

        def execute(self):
            return [0, []]

    confirm_times, run_times = [], []
    # What one repair run of 4.5 s can carry over both lanes (schedule._run asks for as much).
    run_units = sum(int(rate * 4.5) + SPARE_UNITS for rate in BUDGET_PER_S.values())
    for _ in range(args.runs):
        started = time.perf_counter()
        backlog = confirm_backlog(now=now, redis=_NoRedis(), keys=Keys("bench:"))
        confirm_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        run_backlog = confirm_backlog(now=now, redis=_NoRedis(), keys=Keys("bench:"), units_wanted=run_units)
        run_times.append(time.perf_counter() - started)
    print(f"3. missed-confirm queue: {backlog.candles:,} candles in {len(backlog.units):,} REST units, read whole in "
          f"p50 {statistics.median(confirm_times) * 1000:.0f} ms; as deep as a run needs ({run_units} units): "
          f"{len(run_backlog.units):,} units in p50 {statistics.median(run_times) * 1000:.0f} ms")

    tenth = Subscription.objects.filter(pk__in=Subscription.objects.order_by("pk").values("pk")[:series // 10])
    Subscription.objects.exclude(pk__in=tenth.values("pk")).update(is_active=False)
    times_small, (result, queries) = _steady(now, now_ms, args.runs)
    print(f"4. steady run at {series // 10:,} series: p50 {statistics.median(times_small) * 1000:.0f} ms, "
          f"{queries} queries; ratio to {series:,} series "
          f"{statistics.median(times) / statistics.median(times_small):.1f}× for 10× the series (and 10× the news)")
    Subscription.objects.update(is_active=True)


if __name__ == "__main__":
    main()
