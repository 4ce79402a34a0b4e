"""Benchmark the status surfaces at the mission's scale: /api/v1/status and the admin's busiest pages.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/okx_candles \\
        .venv/bin/python bench/status.py [--instruments 1000] [--gaps 100000] [--rounds 15]

1. Uses the database of DATABASE_URL (created if missing, then `migrate`d) and Redis under a private key
   prefix (`benchstatus:<database>:`, cleared at the start), so a running system's data is not touched.
2. Builds --instruments instruments × every bar (27) = 27,000 subscriptions (status mix: mostly live, some
   stale, error, pending and paused), --gaps gap rows (a tenth unfinished, across the four priorities) and a
   channel status in Redis per active subscription (last message, last confirmed candle, some lagging or
   refused), a few collectors, counters and a repair-backlog report. Rows already built are reused.
3. Requests each surface through Django's test Client as a superuser (DEBUG off, no throttling), --rounds
   times after two warm-ups, and prints p50/p95 latency, response size and queries per request.
   `--only /api/v1/status` measures the surfaces whose name starts so; `--load 1.5` measures them while
   busy-loop processes burn that many cores (the full firehose keeps about 1.5 of 2 cores busy).

The targets (issue 14): /status p50 ≤ 100 ms and ≤ 100 KB; the admin index (the dashboard), the pipeline
page, the subscription and the gap changelists p50 ≤ 500 ms each.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = "benchstatus:"  # then the database's name: benches of several databases on one Redis stay apart
SYMBOL_FORMAT = "BS{:04d}-USDT"
URLS = {
    "/api/v1/status": "/api/v1/status",
    "/api/v1/status/subscriptions?state=stale": "/api/v1/status/subscriptions?state=stale",
    "/api/v1/status/{symbol}": "/api/v1/status/BS0007-USDT",
    "admin index (dashboard)": "/admin/",
    "admin pipeline page": "/admin/pipeline/",
    "subscription changelist": "/admin/candles/subscription/",
    "subscription changelist ?status=stale": "/admin/candles/subscription/?status__exact=stale",
    "gap changelist": "/admin/candles/gap/",
    "gap changelist ?state=open": "/admin/candles/gap/?state__exact=open",
}


def _environment() -> None:
    # Production-like: DEBUG off (no query log, no debug pages), no throttling of the benchmark's requests.
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/okx_candles")
    database = os.environ["DATABASE_URL"].rsplit("/", 1)[-1]
    os.environ.update({
        "REDIS_KEY_PREFIX": f"{PREFIX}{database}:", "DEBUG": "0", "SECRET_KEY": "bench-status-not-secret",
        "ALLOWED_HOSTS": "localhost", "API_THROTTLE_ANON": "off", "API_THROTTLE_USER": "off", "LOG_LEVEL": "WARNING",
    })
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")


def _create_database() -> None:
    import dj_database_url
    import psycopg
    from psycopg import sql

    config = dj_database_url.parse(os.environ["DATABASE_URL"])
    admin_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))


def build(instruments: int, gaps: int, rng: random.Random) -> None:
    """Subscriptions and gaps in PostgreSQL (reused when present), channel statuses etc. in Redis (rebuilt)."""
    from datetime import UTC, datetime, timedelta

    import orjson
    from django.db import connection

    from candles.models import Gap, GapState, Instrument, RepairPriority, Subscription, SubscriptionStatus, Timeframe
    from collectors.live.status_writer import channel_row
    from collectors.shared.connections import pipeline_keys, redis_client

    timeframes = list(Timeframe.objects.order_by("display_order"))
    symbols = [SYMBOL_FORMAT.format(i) for i in range(instruments)]
    Instrument.objects.bulk_create(
        [Instrument(inst_id=s, inst_type="SPOT", base_ccy=s.split("-")[0], quote_ccy="USDT", tick_size="0.1",
                    lot_size="0.001") for s in symbols], ignore_conflicts=True)
    by_symbol = dict(Instrument.objects.filter(inst_id__in=symbols).values_list("inst_id", "pk"))
    statuses = ([SubscriptionStatus.LIVE] * 92 + [SubscriptionStatus.STALE] * 3 + [SubscriptionStatus.ERROR] * 2
                + [SubscriptionStatus.PENDING] * 2 + ["paused"])
    if Subscription.objects.filter(instrument_id__in=by_symbol.values()).count() < instruments * len(timeframes):
        rows = []
        for s in symbols:
            for tf in timeframes:
                status = rng.choice(statuses)
                rows.append(Subscription(
                    instrument_id=by_symbol[s], timeframe=tf, is_active=status != "paused",
                    status=SubscriptionStatus.LIVE if status == "paused" else status,
                    status_message={"stale": "no message since 2026-01-01T00:00:00Z",
                                    "error": "60018 channel does not exist"}.get(status, "")))
        Subscription.objects.bulk_create(rows, ignore_conflicts=True, batch_size=5000)
    else:
        # Reused: the mix drawn again (a health run of an earlier bench may have moved the statuses).
        ids = list(Subscription.objects.filter(instrument_id__in=by_symbol.values()).order_by("pk")
                   .values_list("pk", flat=True))
        drawn = [rng.choice(statuses) for _ in ids]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE candles_subscription s SET is_active = v.status <> 'paused', "
                "status = CASE WHEN v.status = 'paused' THEN 'live' ELSE v.status END, "
                "status_message = CASE v.status WHEN 'stale' THEN 'no message since 2026-01-01T00:00:00Z' "
                "WHEN 'error' THEN '60018 channel does not exist' ELSE '' END "
                "FROM unnest(%s::bigint[], %s::text[]) AS v(id, status) WHERE s.id = v.id", [ids, drawn])
    subscriptions = list(Subscription.objects.filter(instrument_id__in=by_symbol.values())
                         .values_list("pk", "instrument__inst_id", "timeframe__code", "is_active", "status"))
    have = Gap.objects.filter(subscription__instrument_id__in=by_symbol.values()).count()
    if have < gaps:
        base = datetime(2025, 1, 1, tzinfo=UTC)
        rows = []
        for n in range(have, gaps):
            pk = subscriptions[n % len(subscriptions)][0]
            start = base + timedelta(minutes=10 * (n // len(subscriptions)))
            unfinished = n % 10 == 0
            rows.append(Gap(subscription_id=pk, start=start, end=start + timedelta(minutes=rng.randint(0, 9)),
                            missing=rng.randint(1, 10),
                            state=rng.choice([GapState.OPEN, GapState.FILLING]) if unfinished
                            else rng.choice([GapState.FILLED] * 9 + [GapState.UNFILLABLE]),
                            priority=rng.choice(RepairPriority.values), reason="bench"))
        Gap.objects.bulk_create(rows, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE candles_subscription; ANALYZE candles_gap; ANALYZE candles_instrument")

    redis, keys = redis_client(), pipeline_keys()
    doomed = list(redis.scan_iter(f"{os.environ['REDIS_KEY_PREFIX']}*", count=1000))
    for i in range(0, len(doomed), 1000):
        redis.delete(*doomed[i:i + 1000])
    now = time.time()
    specs = {tf.code: tf.spec for tf in timeframes}
    entries = {}
    # The runtime's per-bar indexes: last message, last confirmed candle, refused channels.
    seen_by_bar: dict[str, dict[str, float]] = {}
    confirmed_by_bar: dict[str, dict[str, int]] = {}
    refused_by_bar: dict[str, list[str]] = {}
    for _pk, symbol, bar, active, status in subscriptions:
        if not active:
            continue
        spec = specs[bar]
        now_ms = int(now * 1000)
        confirmed = spec.floor(spec.floor(now_ms) - 1)  # the newest closed candle: no lag
        if rng.random() < 0.05:  # some lag behind by a few bars
            for _ in range(rng.randint(1, 3)):
                confirmed = spec.floor(confirmed - 1)
        if status not in ("pending", "error"):
            confirmed_by_bar.setdefault(bar, {})[symbol] = confirmed
            last = now - (rng.uniform(60, 600) if status == "stale" else rng.uniform(0, 5))
            seen_by_bar.setdefault(bar, {})[symbol] = last
        if status == "error":
            refused_by_bar.setdefault(bar, []).append(symbol)
        entries[f"{symbol}|{bar}"] = channel_row(
            "invalid" if status == "error" else "pending" if status == "pending" else "subscribed",
            "60018 channel does not exist" if status == "error" else None, f"host-{hash(symbol) % 4}:1234")
    items = list(entries.items())
    for i in range(0, len(items), 5000):
        redis.hset(keys.channel_status, mapping=dict(items[i:i + 5000]))
    for bar, opens in confirmed_by_bar.items():
        redis.zadd(keys.channel_confirmed(bar), opens)
    for bar, seen in seen_by_bar.items():
        redis.zadd(keys.channel_seen(bar), seen)
    for bar, refused in refused_by_bar.items():
        redis.sadd(keys.channel_refused(bar), *refused)
    for c in range(4):
        cid = f"host-{c}:1234"
        redis.zadd(keys.collectors, {cid: now})
        redis.hset(keys.collector(cid), mapping={
            "host": f"host-{c}", "pid": 1234, "started_at": now - 3600, "shards": orjson.dumps(list(range(c, 64, 4))),
            "connections": orjson.dumps([{"shard": s, "state": "open", "channels": 420, "subscribed": 420,
                                          "messages": 10_000, "reconnects": 0, "errors": 0,
                                          "last_message_at": now} for s in range(c, 64, 4)]),
            "messages": 160_000, "reconnects": 2, "errors": 0, "channels": 6750})
    redis.hset(keys.counters, mapping={"messages": 10_000_000, "candles_flushed": 9_000_000, "flush_runs": 100_000})
    redis.hset(keys.last_flush, mapping={"at": now - 0.5, "rows": 800, "written": 790, "rejected": 0,
                                         "duration_ms": 42})
    redis.set(keys.repair_backlog, orjson.dumps({
        "updated_at": now - 3, "eta_s": 5400.0,
        "backlog": {p: {"candles": c, "units": u} for p, c, u in
                    (("confirm", 120, 120), ("outage", 40_000, 400), ("history", 2_000_000, 20_000), ("old", 0, 0))},
        "drained_per_s": {"confirm": 4.0, "outage": 30.0, "history": 250.0, "old": 0.0},
        "requests": {"candles": 1200, "history": 8000}, "budget_per_s": {"candles": 20.0, "history": 10.0}}))


# --- CPU load: the firehose's share of the machine, emulated ------------------------------------------------

# One child: busy for `duty` of every 10 ms slice, asleep for the rest, until its deadline (so a bench that
# dies leaves nothing burning for long).
BUSY_LOOP = """
import sys, time
duty, deadline = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    start = time.monotonic()
    while time.monotonic() - start < 0.01 * duty:
        pass
    time.sleep(0.01 * (1 - duty))
"""


@contextmanager
def cpu_load(cores: float, max_seconds: float) -> Iterator[None]:
    """`cores` cores kept busy by ceil(cores) child processes sharing the load evenly, stopped on exit."""
    if cores <= 0:
        yield
        return
    children = math.ceil(cores)
    duty = cores / children
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(duty), str(max_seconds)])
             for _ in range(children)]
    try:
        time.sleep(0.5)  # let the scheduler see them before the first request
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def measure(rounds: int, urls: dict[str, str] = URLS) -> list[tuple[str, float, float, int, int, int]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = get_user_model().objects.get_or_create(username="bench-status", defaults={
        "is_staff": True, "is_superuser": True})
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    results = []
    for name, url in urls.items():
        times, size, status = [], 0, 0
        for i in range(rounds + 2):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                elapsed = time.perf_counter() - started
            status = response.status_code
            size = len(response.content)
            if i >= 2:
                times.append(elapsed * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        results.append((name, statistics.median(times), p95, size, len(queries), status))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--gaps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", action="append", default=[], metavar="SURFACE",
                        help="measure only the surfaces whose name starts with this (repeatable)")
    parser.add_argument("--load", type=float, default=0.0, metavar="CORES",
                        help="keep this many cores busy with busy-loop processes while measuring")
    args = parser.parse_args()
    _environment()
    _create_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    started = time.perf_counter()
    build(args.instruments, args.gaps, random.Random(14))
    print(f"built {args.instruments} instruments × 27 bars, {args.gaps:,} gaps, channel statuses "
          f"in {time.perf_counter() - started:.1f} s")
    urls = {name: url for name, url in URLS.items() if not args.only or name.startswith(tuple(args.only))}
    if args.load:
        print(f"under a synthetic load of {args.load:g} cores ({os.cpu_count()} on this machine)")
    print(f"{'surface':42} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>10} {'queries':>8} {'HTTP':>5}")
    with cpu_load(args.load, max_seconds=600):
        results = measure(args.rounds, urls)
    for name, p50, p95, size, queries, status in results:
        print(f"{name:42} {p50:8.1f} {p95:8.1f} {size:10,} {queries:8} {status:5}")


if __name__ == "__main__":
    main()
