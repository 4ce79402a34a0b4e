"""Benchmark the live stream: commit → client latency with 1, 100 and 500 clients while 30k candle versions/s are
written.

    .venv/bin/python bench/stream.py [--rate 30000] [--clients 1,100,500] [--series-per-client 10]
                                     [--seconds 30] [--instruments 1112]

1. Works in its own database, okx_candles_bench_stream (created and migrated here), with --instruments instruments
   × the 27 stored bars (1,112 × 27 = 30,024 series) and Redis keys under a prefix of its own.
2. A writer process commits the current candle of every series once a second through `candles_upsert` (the function
   the flush calls; chunks of 20,000 rows as the flush writes them): --rate versions a second. Each version carries
   its batch number in `volume`, and the moment each batch committed (an on_commit hook registered before the
   stream's own) is kept in Redis.
3. One uvicorn process serves the ASGI app (as `make run` does). For each N of --clients, N WebSocket clients in
   this process each subscribe to --series-per-client random series, wait until every one is live, and then for
   --seconds record, for every candle of every live frame, receipt time − its batch's commit time.
4. Prints per N: latency p50/p99/max, candles and frames delivered a second, the web process's CPU (cores) and
   RSS, and the writer's achieved rate; the target is p99 ≤ 250 ms at 30k versions/s.

All servers listen on 127.0.0.1; everything started here is stopped here, by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import _free_port, _use_bench_database  # noqa: E402
from bench.pipeline import process_table, rss_mb  # noqa: E402

BENCH_DATABASE = "okx_candles_bench_stream"
CHUNK_ROWS = 20_000  # the flush's chunk size (collectors/live/flush.py)


def _setup(prefix: str) -> None:
    import bench.api as api

    api.BENCH_DATABASE = BENCH_DATABASE
    _use_bench_database()
    os.environ["REDIS_KEY_PREFIX"] = prefix
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def ensure_instruments(count: int) -> list[str]:
    from django.core.management import call_command

    from candles.models import Instrument

    call_command("migrate", verbosity=0)
    names = [f"S{k:04d}-USDT" for k in range(count)]
    existing = set(Instrument.objects.filter(inst_id__in=names).values_list("inst_id", flat=True))
    Instrument.objects.bulk_create([Instrument(inst_id=n, inst_type="SPOT") for n in names if n not in existing])
    return names


# --- the writer (a process of its own) ----------------------------------------------------------------------


def run_writer(args: argparse.Namespace) -> None:
    import redis
    from django.conf import settings
    from django.db import transaction

    from candles.models import Timeframe
    from candles.storage import CandleRow, candles_upsert

    names = [f"S{k:04d}-USDT" for k in range(args.instruments)]
    bars = [(tf.code, tf.spec) for tf in Timeframe.objects.order_by("pk")]  # the order main() lists them in
    series = [(name, code, spec) for name in names for code, spec in bars][:args.rate]
    client = redis.Redis.from_url(settings.REDIS_URL)
    commits_key = settings.REDIS_KEY_PREFIX + "bench:commits"
    batch = 0
    stop = False

    def halt(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, halt)
    next_at = time.monotonic()
    while not stop:
        now_ms = int(time.time() * 1000)
        version = int(time.time() * 1_000_000)
        for start in range(0, len(series), CHUNK_ROWS):
            mark = str(batch)
            rows = [CandleRow(name, code, spec.floor(now_ms), "100", "101", "99", "100.5", mark, "1", None, False,
                              "ws", version) for name, code, spec in series[start:start + CHUNK_ROWS]]
            with transaction.atomic():
                # Registered before candles_upsert registers the stream's publish: it runs first, at commit.
                transaction.on_commit(lambda m=mark: client.hset(commits_key, m, repr(time.time())))
                candles_upsert(rows=rows)
            batch += 1
            client.hincrby(commits_key, "rows", len(rows))
        next_at = max(next_at + 1.0, time.monotonic() - 1.0)
        time.sleep(max(0.0, next_at - time.monotonic()))


# --- the clients (this process) ------------------------------------------------------------------------------


async def run_clients(url: str, n: int, per_client: int, series: list[tuple[str, str]], seconds: float,
                      redis_client, commits_key: str) -> dict:
    import orjson
    import websockets

    receipts: list[tuple[int, float]] = []  # (batch, receipt time), live candles only
    frames = 0
    measuring = False
    live = 0
    closed: list[str] = []

    async def one(k: int, ready: asyncio.Event, done: asyncio.Event) -> None:
        nonlocal frames, live
        try:
            rng = random.Random(k)
            picked = [{"symbol": symbol, "timeframe": bar} for symbol, bar in rng.sample(series, per_client)]
            unique = {(a["symbol"], a["timeframe"]): a for a in picked}
            waiting = set(unique)
            async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "args": list(unique.values())}).decode())
                while not done.is_set():
                    try:
                        message = await asyncio.wait_for(ws.recv(), 1.0)
                    except TimeoutError:
                        continue
                    now = time.time()
                    frame = orjson.loads(message)
                    data = frame.get("data")
                    if not data:
                        continue
                    key = (frame["arg"]["symbol"], frame["arg"]["timeframe"])
                    if key in waiting:
                        waiting.discard(key)  # the replay (its newest candle) arrived: live from here
                        if not waiting:
                            live += 1
                            if live == n:
                                ready.set()
                        continue
                    if measuring:
                        frames += 1
                        receipts.extend((int(c["volume"]), now) for c in data)
        except Exception as exc:  # a client that fails is reported, never hidden
            closed.append(repr(exc))

    ready, done = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(one(k, ready, done)) for k in range(n)]
    try:
        await asyncio.wait_for(ready.wait(), 120)
    except TimeoutError:
        print(f"  only {live}/{n} clients live after 120 s", flush=True)
    await asyncio.sleep(2.0)
    measuring = True
    started = time.time()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.time() - started
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.0)
    commit_at = {int(k): float(v) for k, v in redis_client.hgetall(commits_key).items() if k != b"rows"}
    latencies = [(at - commit_at[b]) * 1000 for b, at in receipts if b in commit_at]
    return {"latencies": latencies, "frames": frames, "candles": len(receipts), "elapsed": elapsed,
            "errors": closed, "unmatched": len(receipts) - len(latencies)}


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=30_000, help="candle versions written a second")
    parser.add_argument("--clients", default="1,100,500")
    parser.add_argument("--series-per-client", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--instruments", type=int, default=1112)
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "writer":
        _setup(args.prefix)
        run_writer(args)
        return

    prefix = f"bench:stream:{uuid.uuid4().hex[:8]}:"
    _setup(prefix)
    import redis
    from django.conf import settings

    from candles.models import Timeframe

    names = ensure_instruments(args.instruments)
    bars = list(Timeframe.objects.order_by("pk").values_list("code", flat=True))
    # The series the writer writes, in its order (clients subscribe to these only).
    written = [(name, code) for name in names for code in bars][:args.rate]
    redis_client = redis.Redis.from_url(settings.REDIS_URL)
    commits_key = prefix + "bench:commits"
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "bench-" + "x" * 50, "ALLOWED_HOSTS": "127.0.0.1",
           "LOG_LEVEL": "WARNING", "REDIS_KEY_PREFIX": prefix}
    port = _free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/uvicorn"), "okxproject.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--ws", "websockets-sansio", "--lifespan", "off", "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True)
    writer = subprocess.Popen(
        [sys.executable, __file__, "--role", "writer", "--prefix", prefix, "--rate", str(args.rate),
         "--instruments", str(args.instruments)], cwd=ROOT, env=env, start_new_session=True)
    url = f"ws://127.0.0.1:{port}/api/v1/stream"
    print(f"{args.rate:,} versions/s over {min(args.rate, args.instruments * len(bars)):,} series; uvicorn pid "
          f"{server.pid} on {url}; {args.series_per_client} series a client, {args.seconds:.0f} s a step", flush=True)
    try:
        time.sleep(8)  # the writer's first batches make the leaves; uvicorn starts
        rows_before = int(redis_client.hget(commits_key, "rows") or 0)
        print(f"{'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'candles/s':>10} {'frames/s':>9} "
              f"{'web cores':>9} {'web RSS MB':>10} {'written/s':>10}  errors", flush=True)
        for n in [int(x) for x in args.clients.split(",")]:
            table = process_table()
            cpu_before = table.get(server.pid, (0, 0.0))[1]
            rows_at, t0 = int(redis_client.hget(commits_key, "rows") or 0), time.time()
            result = asyncio.run(run_clients(url, n, args.series_per_client, written, args.seconds,
                                             redis_client, commits_key))
            wall = time.time() - t0
            cpu = process_table().get(server.pid, (0, 0.0))[1] - cpu_before
            write_rate = (int(redis_client.hget(commits_key, "rows") or 0) - rows_at) / wall
            lat = result["latencies"]
            worst = max(lat, default=float("nan"))
            print(f"{n:>7} {quantile(lat, 0.5):>8.1f} {quantile(lat, 0.99):>8.1f} {worst:>8.1f}"
                  f" {result['candles'] / result['elapsed']:>10,.0f} {result['frames'] / result['elapsed']:>9,.0f}"
                  f" {cpu / wall:>9.2f} {rss_mb(server.pid):>10.0f} {write_rate:>10,.0f}  "
                  f"{len(result['errors'])}{' ' + result['errors'][0][:80] if result['errors'] else ''}"
                  f"{f' ({unmatched} candles of no known commit)' if (unmatched := result['unmatched']) else ''}",
                  flush=True)
        print(f"writer: {int(redis_client.hget(commits_key, 'rows') or 0) - rows_before:,} rows since warm-up; "
              f"target: p99 ≤ 250 ms at 30,000 versions/s", flush=True)
    finally:
        for proc in (writer, server):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (writer, server):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        stale = list(redis_client.scan_iter(match=f"{prefix}*"))
        if stale:
            redis_client.delete(*stale)


if __name__ == "__main__":
    main()
