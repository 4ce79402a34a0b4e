"""Benchmark the REST API under gunicorn: latency and throughput of the candle endpoint against a trivial view.

    .venv/bin/python bench/api.py [--candles 1000000] [--seconds 10] [--connections N] [--rounds 3]

1. Works in its own database, okx_candles_bench_api (created and migrated here), holding at least
   --candles one-minute candles of BENCH-USDT, loaded with one COPY the first time and reused afterwards.
2. Serves the project with gunicorn on 127.0.0.1 (one sync worker per core, its own port), with
   throttling off (a load generator from one address would be throttled at once) and logs at WARNING.
3. Loads it from a second process: an async httpx client keeping --connections requests in flight
   (default: one per worker, so latency is the server's and not a queue's) for --seconds per scenario
   (after a short warm-up), recording each request's latency. Scenarios, in one run on the same server:
   a trivial JSON view (GET /api/v1/health/live), /data/BENCH-USDT/1m?limit=100 and ?limit=1000 (the
   newest candles, each response checked for its count), and the same 1000 candles as Parquet
   (&format=parquet, each file's footer checked for its row count). Before measuring, the Parquet URL is read
   once with pandas.read_parquet(url), and with polars from its bytes, as docs/api.md shows; and
   /data/BENCH-USDT/7m?limit=1000 (a derived bar).
4. Prints p50/p99 latency and requests/s per scenario (median over --rounds), and the targets:
   p50 ≤ 20 ms for 1000 candles, ≤ 30 ms for 1000 candles of the derived 7m bar; the 100-candle page at
   ≥ 0.5× the trivial view's requests/s.

The client shares the machine's cores with the server, as it would on one host; figures on a machine shared
with other work are noisy, which is why the rounds alternate the scenarios and the medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DATABASE = "okx_candles_bench_api"
SYMBOL = "BENCH-USDT"
BASE_MS = 1_600_000_000_000 - 1_600_000_000_000 % 60_000  # 2020-09-13, on a minute boundary
SCENARIOS = {
    "trivial JSON (health/live)": ("/api/v1/health/live", None),
    "data limit=100": (f"/api/v1/data/{SYMBOL}/1m?limit=100", 100),
    "data limit=1000": (f"/api/v1/data/{SYMBOL}/1m?limit=1000", 1000),
    "data limit=1000 parquet": (f"/api/v1/data/{SYMBOL}/1m?limit=1000&format=parquet", 1000),
    # A bar OKX does not offer, aggregated from 7,000 stored 1m candles a page (candles/derived.py).
    "derived 7m limit=1000": (f"/api/v1/data/{SYMBOL}/7m?limit=1000", 1000),
}


# --- database ---------------------------------------------------------------------------------------


def _use_bench_database() -> str:
    """Point DATABASE_URL at the dedicated benchmark database and create it if needed (as bench/upsert.py)."""
    from dotenv import load_dotenv

    load_dotenv(ROOT / ".env", override=False)
    import dj_database_url
    import psycopg
    from psycopg import sql

    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/okx_candles")
    cfg = dj_database_url.parse(url)
    conninfo = {k: v for k, v in {
        "host": cfg.get("HOST"), "port": cfg.get("PORT") or None, "user": cfg.get("USER"),
        "password": cfg.get("PASSWORD") or None, "dbname": "postgres",
    }.items() if v}
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DATABASE)))
    os.environ["DATABASE_URL"] = url.rsplit("/", 1)[0] + "/" + BENCH_DATABASE
    return os.environ["DATABASE_URL"]


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _rows(count: int):
    """OKX-shaped exact decimal strings that vary from candle to candle."""
    for i in range(count):
        base = 43_000 + (i * 7919) % 5_000
        cents = i % 100
        yield (
            BASE_MS + i * 60_000, f"{base}.{cents:02d}", f"{base + 12}.5", f"{base - 7}.25", f"{base + 3}.{cents:02d}",
            f"{(i % 997) + 1}.{i % 10**8:08d}", f"{(i % 997 + 1) * base}.123456789", f"{(i % 997 + 1) * base}.5",
        )


def ensure_candles(count: int) -> int:
    """At least `count` candles of BENCH-USDT 1m; loaded once with COPY, reused while enough are there."""
    from django.db import connection, transaction

    from candles.bars import ms_to_datetime
    from candles.models import Instrument, Timeframe
    from candles.partitions import partitions_ensure

    instrument, _ = Instrument.objects.get_or_create(inst_id=SYMBOL, defaults={"inst_type": "SPOT"})
    minute = Timeframe.objects.get(code="1m")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM candles_candle WHERE instrument_id = %s AND timeframe_id = %s",
                       [instrument.pk, minute.pk])
        (stored,) = cursor.fetchone()
    if stored >= count:
        return stored
    print(f"loading {count:,} candles into {BENCH_DATABASE} with COPY ...", flush=True)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM candles_candle WHERE instrument_id = %s AND timeframe_id = %s",
                       [instrument.pk, minute.pk])
        # COPY bypasses candles_upsert, which makes the partitions a write needs: made here first.
        partitions_ensure(bar="1m", start=ms_to_datetime(BASE_MS), end=ms_to_datetime(BASE_MS + count * 60_000))
        copy_sql = ("COPY candles_candle (instrument_id, timeframe_id, open_time, open, high, low, close, vol, "
                    "vol_ccy, vol_ccy_quote, confirmed, source, version) FROM STDIN")
        with cursor.copy(copy_sql) as copy:
            for ms, o, h, lo, c, vol, vol_ccy, quote in _rows(count):
                copy.write_row((instrument.pk, minute.pk, _iso(ms), o, h, lo, c, vol, vol_ccy, quote, True, "r", 1))
        cursor.execute("ANALYZE candles_candle")
    print(f"loaded in {time.perf_counter() - started:.1f} s", flush=True)
    return count


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ms // 1000))


# --- server -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, workers: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DEBUG": "false", "SECRET_KEY": "bench-" + "x" * 50, "ALLOWED_HOSTS": "127.0.0.1",
        "API_THROTTLE_ANON": "off", "API_THROTTLE_USER": "off", "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "okxproject.wsgi:application", "--workers", str(workers),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--backlog", "256"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    import httpx

    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health/live", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise SystemExit("gunicorn did not answer within 30 s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)  # our own process group, started above
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


# --- client (second process) ----------------------------------------------------------------------------


async def _load(url: str, expected: int | None, connections: int, seconds: float, warmup: float) -> dict:
    import httpx

    # The count is near the start of the body; finding it there keeps the client's CPU off the measurement.
    # A Parquet file's row count is in its footer, read without decoding any column.
    parquet = "format=parquet" in url
    marker = None if expected is None or parquet else f'"count":{expected},'.encode()
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds

        async def worker() -> None:
            nonlocal errors
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                response = await client.get(url)
                done = time.perf_counter()
                ok = response.status_code == 200
                if ok and marker is not None:
                    ok = marker in response.content[:100]
                if ok and parquet:
                    ok = _parquet_rows(response.content) == expected
                if sent >= measure_from:
                    if ok:
                        latencies.append(done - sent)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    latencies.sort()
    return {
        "requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


def _parquet_rows(data: bytes) -> int | None:
    import io

    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(io.BytesIO(data)).num_rows
    except (OSError, ValueError):
        return None


def check_parquet_readers(url: str, expected: int) -> None:
    """docs/api.md's way of reading format=parquet, on the real server: pandas straight from the URL; polars from
    the bytes (its reader of URLs asks for byte ranges, which a file written while it is sent cannot serve)."""
    import io

    import httpx
    import pandas as pd
    import polars as pl

    frame = pd.read_parquet(url)
    polars_frame = pl.read_parquet(io.BytesIO(httpx.get(url, timeout=30).content))
    if len(frame) != expected or polars_frame.height != expected or frame["open"].tolist() != \
            polars_frame["open"].to_list():
        raise SystemExit(f"reading {url} with pandas/polars gave {len(frame)}/{polars_frame.height} rows")
    print(f"pandas.read_parquet(url) and polars.read_parquet(bytes) read {expected} candles from {url}", flush=True)


def run_client(url: str, expected: int | None, connections: int, seconds: float) -> dict:
    """One scenario, measured from a separate process so the client's CPU is not the server's."""
    result = subprocess.run(
        [sys.executable, __file__, "--client", url, "--expected", str(expected or 0), "--connections",
         str(connections), "--seconds", str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds + 120,
    )
    return json.loads(result.stdout)


# --- report ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per scenario and round")
    parser.add_argument("--connections", type=int, default=None,
                        help="requests kept in flight by the client (default: one per gunicorn worker, so "
                             "latency is the server's, not a queue's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gunicorn workers")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.client:
        print(json.dumps(asyncio.run(_load(args.client, args.expected or None, args.connections, args.seconds,
                                           warmup=1.0))))
        return

    args.connections = args.connections or args.workers
    _use_bench_database()
    _setup_django()
    stored = ensure_candles(args.candles)
    from django.db import connections

    connections.close_all()
    port = _free_port()
    server = start_server(port, args.workers)
    results: dict[str, list[dict]] = {name: [] for name in SCENARIOS}
    try:
        parquet_path, parquet_rows = SCENARIOS["data limit=1000 parquet"]
        check_parquet_readers(f"http://127.0.0.1:{port}{parquet_path}", parquet_rows)
        for round_no in range(args.rounds):
            for name, (path, expected) in SCENARIOS.items():
                result = run_client(f"http://127.0.0.1:{port}{path}", expected, args.connections, args.seconds)
                results[name].append(result)
                print(f"round {round_no + 1} {name:30} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms"
                      f"  p99 {result['p99_ms']:6.2f} ms  errors {result['errors']}", flush=True)
    finally:
        stop_server(server)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print()
    print(f"{stored:,} candles of {SYMBOL} 1m in {BENCH_DATABASE}; gunicorn {args.workers} sync workers; "
          f"{args.connections} connections; {args.rounds} rounds × {args.seconds:g} s; medians")
    print(f"| {'scenario':30} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"| {'-' * 30} | {'-' * 8}: | {'-' * 7}: | {'-' * 7}: | {'-' * 6}: |")
    for name in SCENARIOS:
        errors = sum(r["errors"] for r in results[name])
        print(f"| {name:30} | {median(name, 'rps'):8.0f} | {median(name, 'p50_ms'):7.2f} | "
              f"{median(name, 'p99_ms'):7.2f} | {errors:6d} |")
    p50_1000 = median("data limit=1000", "p50_ms")
    p50_7m = median("derived 7m limit=1000", "p50_ms")
    ratio = statistics.median(
        hundred["rps"] / trivial["rps"]
        for hundred, trivial in zip(results["data limit=100"], results["trivial JSON (health/live)"], strict=True)
    )
    print()
    print(f"target p50 ≤ 20 ms for 1000 candles: {p50_1000:.2f} ms — {'met' if p50_1000 <= 20 else 'MISSED'}")
    print(f"target p50 ≤ 30 ms for 1000 derived 7m candles: {p50_7m:.2f} ms — {'met' if p50_7m <= 30 else 'MISSED'}")
    print(f"target 100 candles ≥ 0.5× trivial req/s: {ratio:.2f}× (median of per-round ratios) — "
          f"{'met' if ratio >= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
