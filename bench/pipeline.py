"""Drive the running pipeline from the simulator and measure it, step by step.

    .venv/bin/python bench/pipeline.py [--instruments 3000] [--bars 1s,1m] [--intervals 1,0.5,0.2]
                                       [--step-seconds 60]

Starts, all on 127.0.0.1 and stopped at the end: a private PostgreSQL configured as a deployment runs it
(autovacuum, fsync, synchronous commit on: this machine's shared server has autovacuum off, for CI, and a
sustained write load there measures a table nobody vacuums; `--database machine` uses it anyway, in a
database `<name>_bench`), a private Redis, the OKX simulator (its own process), the collectors worker
(`celery worker --collector`), a flush worker, and a backfill/default worker with embedded beat. Every
instrument is subscribed in every bar. For each push interval (one step; the simulator restarts with it and
the collector reconnects by itself) it prints:

* candle updates/s accepted by the collector, and rows/s committed by the flushes;
* loss: closed `1s` candles of the step window, for a sample of instruments, missing or not equal to
  the simulator's ground truth once the pipeline had time to settle;
* lag from a candle's close (its confirm push) to its row being committed: p50 and p99, the commit time
  being the one PostgreSQL records (`track_commit_timestamp`, on in the private server; with `--database
  machine`, whose server does not track it, there is no commit time and the lag reads NaN), split at the
  collector's receipt (the row's version);
* the collector process's memory (RSS) and the buffer depth (entries waiting for a flush), max and mean;
* CPU seconds per unit of work of each process, from /proc/<pid>/stat (utime + stime, children included):
  collector µs/update, flush worker µs/row, simulator µs/push, and Redis, PostgreSQL (the whole server when
  the benchmark may read its data directory: backends, WAL writer, checkpointer, autovacuum; else the
  benchmark database's backends) and the backfill worker per accepted update. Unlike rates, these move
  less when other work shares the cores, so they are the figures to compare between runs; every process is
  read each second, so one that ends during a step (a database connection replaced) still counts;
* every `--report-every` seconds: accepted updates/s, buffer depth and collector RSS in that window.

Subscriptions collect from 30 s after they are created (`backfill_from`), with no recent window to fetch from
REST; before the first step the benchmark still waits (up to `--backfill-wait` s) for any gap the start
left: the steps measure the steady state.

The simulator runs at `--simulator-nice` (-5 by default, when the benchmark runs as root): the load
generator comes first on the shared cores, so the offered load is what was asked, and the system under test
works with what is left.

A sustained run is one step held for five minutes: `--intervals 0.2 --step-seconds 300`.

Target (issue 4): ≥ 30,000 updates/s sustained with nothing lost, p99 lag ≤ 2 s, collector ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.upsert import _use_bench_database  # noqa: E402
from tests.support.private_services import private_postgres, private_redis  # noqa: E402

PREFIX = "bench:"


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, utime + stime + cutime + cstime in seconds), read from /proc in one pass."""
    table: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # After the ")": state is field 3, so ppid (4) is at 1, utime (14) .. cstime (17) at 11..14.
        table[int(stat.parent.name)] = int(fields[1]), sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    return table


def cpu_seconds(pid: int, table: dict[int, tuple[int, float]]) -> float:
    """CPU seconds of a process and of its children (waited-for and still running)."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in table:
            total += table[current][1]
        todo.extend(children.get(current, []))
    return total


def postgres_backends(connection, db_name: str) -> list[int]:
    """Backends of the benchmark database, except the benchmark's own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [db_name])
        return [pid for (pid,) in cursor.fetchall()]


def postgres_server(connection) -> int | None:
    """The postmaster's pid when this user may read the data directory (a superuser): its children are every
    backend, ended ones included, and the WAL writer, checkpointer and autovacuum the writes cause."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
            (data_directory,) = cursor.fetchone()
        return int(Path(data_directory, "postmaster.pid").read_text().split()[0])
    except Exception:
        return None


class CpuMeter:
    """CPU seconds of named process groups between `start()` and `stop()`.

    `poll()` (every second of the step) keeps the last reading of each process, so a process that ends during
    the step (a PostgreSQL backend replaced after CONN_MAX_AGE) still counts up to its last reading.
    """

    def __init__(self, groups):
        self.groups = groups  # name -> callable returning the pids of the group now
        self.before: dict[str, dict[int, float]] = {}
        self.last: dict[str, dict[int, float]] = {}

    def sample(self) -> dict[str, dict[int, float]]:
        table = process_table()
        return {name: {pid: cpu_seconds(pid, table) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self.before = self.sample()
        self.last = {name: dict(readings) for name, readings in self.before.items()}

    def poll(self) -> None:
        for name, readings in self.sample().items():
            seen = self.last.setdefault(name, {})
            for pid, cpu in readings.items():
                seen[pid] = max(cpu, seen.get(pid, 0.0))

    def stop(self) -> dict[str, float]:
        self.poll()
        # A process that appeared during the window counts from zero.
        return {name: sum(cpu - self.before.get(name, {}).get(pid, 0.0) for pid, cpu in seen.items())
                for name, seen in self.last.items()}


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class Processes:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(f"/tmp/okx-bench-{name}.log", "w")  # noqa: SIM115 (lives as long as the process)
        # A session of its own: the process leads its group, so stopping the group also stops its children
        # (a worker's pool and embedded beat), which would outlive a killed parent.
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Leftover children of ours (the group id is the pid of our process): never a stranger's group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def start_simulator(procs: Processes, port: int, args: argparse.Namespace, interval: float) -> None:
    procs.start("simulator", [sys.executable, "-m", "collectors.simulator", "--host", "127.0.0.1",
                              "--port", str(port), "--instruments", str(args.instruments), "--bars", args.bars,
                              "--push-interval", str(interval), "--idle-timeout", "120", "--history-days", "2",
                              "--requests-per-hour", "100000", "--new-connections-per-second", "50"])
    # The load generator shares the two cores with the system it loads. Ahead in the queue, it offers the
    # load asked of it instead of what the system leaves it; the system gets only what remains.
    try:
        os.setpriority(os.PRIO_PROCESS, procs.procs["simulator"].pid, args.simulator_nice)
    except PermissionError:
        print(f"note: cannot renice the simulator to {args.simulator_nice} (needs root); it competes as equal")
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/stats", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("simulator did not start")


def truth(port: int, inst_id: str, bar: str, start_ms: int, end_ms: int) -> list[list[str]]:
    url = f"http://127.0.0.1:{port}/sim/truth?instId={inst_id}&bar={bar}&start={start_ms}&end={end_ms}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=3000)
    parser.add_argument("--bars", default="1s,1m")
    parser.add_argument("--intervals", default="1,0.5,0.2", help="push intervals (s) of the steps")
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument("--sample", type=int, default=20, help="instruments checked against ground truth")
    parser.add_argument("--port", type=int, default=18899)
    parser.add_argument("--backfill-wait", type=float, default=600.0,
                        help="longest wait (s) for the new subscriptions' start-up backfill before measuring")
    parser.add_argument("--simulator-nice", type=int, default=-5,
                        help="scheduling priority of the simulator (the load generator); 0 to compete as equal")
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--database", choices=("private", "machine"), default="private",
                        help="private: a PostgreSQL of the benchmark's own configured as deployed (default); machine: "
                             "a database on the configured server, whose CI settings may differ (autovacuum off here)")
    parser.add_argument("--warmup-seconds", type=float, default=45.0,
                        help="seconds from the workers' start before the first step is measured")
    parser.add_argument("--settle-seconds", type=float, default=90.0,
                        help="longest wait after a step for REST repairs of candles never pushed")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    # Commit times make the lag end where a reader can first see the row, not where its transaction began.
    postgres = (private_postgres(durable=True, settings={"track_commit_timestamp": "on"})
                if args.database == "private" else contextlib.nullcontext())
    with postgres as private_pg, private_redis() as redis_server:
        if private_pg is None:
            db_name = _use_bench_database()
        else:
            db_name = "okx_candles_bench"
            with psycopg.connect(private_pg.url, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {db_name}")
            os.environ["DATABASE_URL"] = private_pg.url_for(db_name)
            print(f"PostgreSQL: a private server on port {private_pg.port} (autovacuum, fsync and synchronous "
                  "commit on, shared_buffers 128MB; commit times tracked)", flush=True)
        os.environ.update({"REDIS_URL": redis_server.url, "CELERY_BROKER_URL": redis_server.url,
                           "REDIS_KEY_PREFIX": PREFIX, "OKX_WS_URL": f"ws://127.0.0.1:{args.port}/ws/v5/business",
                           "OKX_REST_URL": f"http://127.0.0.1:{args.port}",
                           "BACKFILL_RECENT_HOURS": "0.01", "COLLECTOR_CHANNELS_PER_CONNECTION": "500",
                           # Production mode: DEBUG keeps and formats every query, which no deployment does.
                           "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1"})
        import django

        django.setup()
        import redis
        from django.core.management import call_command
        from django.db import connection

        from candles.models import Instrument, Subscription, Timeframe

        procs = Processes(dict(os.environ))
        try:
            run(args, procs, redis.Redis.from_url(redis_server.url), call_command, connection,
                Instrument, Subscription, Timeframe, db_name, redis_server.pid)
        finally:
            procs.stop_all()


def run(args, procs, r, call_command, connection, Instrument, Subscription, Timeframe, db_name,
        redis_pid: int | None) -> None:
    call_command("migrate", verbosity=0)
    lag_clock = ("p50/p99 above: the rows' commit times (track_commit_timestamp)" if commit_timestamps(connection)
                 else "not tracked by this server (the candle row keeps no write time): no commit lag")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE candles_candle, candles_gap, candles_subscription CASCADE")
    bars = args.bars.split(",")
    intervals = [float(x) for x in args.intervals.split(",")]
    start_simulator(procs, args.port, args, intervals[0])
    call_command("sync_instruments", "--type", "SPOT", verbosity=0)
    call_command("setup_periodic_tasks", verbosity=0)
    listed = Instrument.objects.filter(state="live", delisted_at__isnull=True).order_by("id")
    instruments = list(listed[: args.instruments])
    timeframes = list(Timeframe.objects.filter(code__in=bars))
    # Live data only, from shortly after the collector has subscribed: a recent window before that would be a
    # REST backfill of thousands of gaps at OKX's 20 requests per 2 s, not the live pipeline this measures.
    from django.utils import timezone

    live_from = timezone.now() + timedelta(seconds=30)
    Subscription.objects.bulk_create(
        [Subscription(instrument=i, timeframe=t, backfill_from=live_from) for i in instruments for t in timeframes],
        ignore_conflicts=True)
    channels = len(instruments) * len(timeframes)
    print(f"database {db_name}; {channels:,} channels ({len(instruments)} instruments x {bars}); "
          f"{args.step_seconds:.0f} s per step")

    celery = [sys.executable, "-m", "celery", "-A", "okxproject", "worker", "--loglevel", "WARNING"]
    collector = procs.start("collectors", [*celery, "--collector", "-Q", "collectors", "-n", "bench-collectors@%h",
                                           "--pool", "solo"])
    flush = procs.start("flush", [*celery, "-Q", "flush", "-n", "bench-flush@%h", "--pool", "solo"])
    worker = procs.start("worker", [*celery, "-Q", "backfill,default,webhooks", "-n", "bench-worker@%h",
                           "--concurrency", "2", "-B", "--pidfile="])
    workers_started = time.time()
    time.sleep(15)  # subscribe and settle
    wait_for_startup_backfill(args.backfill_wait)
    # A cold start is not the steady state: 6,000 subscriptions, their gap rechecks and a candles table that
    # grows from empty (autovacuum, autoanalyze) load the machine for its first seconds. The warm-up's lag is
    # printed after the first step, apart from the step's.
    time.sleep(max(0.0, args.warmup_seconds - (time.time() - workers_started)))

    sample = [i.inst_id for i in instruments[: args.sample]]
    postmaster = postgres_server(connection)
    for step, interval in enumerate(intervals):
        if step:
            procs.stop("simulator")
            start_simulator(procs, args.port, args, interval)
            time.sleep(10)  # reconnect, resubscribe, settle
        meter = CpuMeter({
            "collector": lambda: [collector.pid], "flush": lambda: [flush.pid], "worker": lambda: [worker.pid],
            "simulator": lambda: [procs.procs["simulator"].pid], "redis": lambda: [redis_pid] if redis_pid else [],
            "postgres": (lambda: [postmaster]) if postmaster else (lambda: postgres_backends(connection, db_name)),
        })
        counters0 = read_counters(r)
        sim0 = sim_stats(args.port)
        meter.start()
        t0 = time.time()
        depths, rss = [], []
        window_start, window_messages = t0, counters0.get("messages", 0)
        window_depths: list[int] = []
        while time.time() - t0 < args.step_seconds:
            depth = int(r.hlen(f"{PREFIX}buffer:live")) + int(r.hlen(f"{PREFIX}buffer:taken"))
            depths.append(depth)
            window_depths.append(depth)
            rss.append(rss_mb(collector.pid))
            meter.poll()
            time.sleep(1)
            now = time.time()
            if now - window_start >= args.report_every:
                messages = read_counters(r).get("messages", 0)
                print(f"  t+{now - t0:4.0f}s: accepted {(messages - window_messages) / (now - window_start):,.0f}/s, "
                      f"buffer depth max {max(window_depths):,} last {depth:,}, collector RSS {rss[-1]:.0f} MB",
                      flush=True)
                window_start, window_messages, window_depths = now, messages, []
        t1 = time.time()
        cpu = meter.stop()
        sim1 = sim_stats(args.port)
        counters1 = read_counters(r)
        span = t1 - t0
        updates = counters1.get("messages", 0) - counters0.get("messages", 0)
        rows = counters1.get("candles_flushed", 0) - counters0.get("candles_flushed", 0)
        pushes = sim1["pushes_sent"] - sim0["pushes_sent"]
        # Ticks the simulator let pass while starved of CPU: candles of those moments were never pushed.
        ticks = sim1.get("ticks", 0) - sim0.get("ticks", 0)
        skipped = sim1.get("ticks_skipped", 0) - sim0.get("ticks_skipped", 0)
        tick_busy_ms = sim1.get("tick_busy_ms", 0) - sim0.get("tick_busy_ms", 0)
        tick_cpu_ms = sim1.get("tick_cpu_ms", 0) - sim0.get("tick_cpu_ms", 0)
        accepted = updates / span
        flushed = rows / span
        time.sleep(8)  # let the last flushes land
        window = (int(t0) + 2) * 1000, (int(t1) - 2) * 1000
        expected, missing, wrong, lags = check_sample(args.port, connection, sample, window)
        missing_first, settled_at = missing, time.time()
        # A candle the simulator never pushed (a tick it missed while starved of CPU) is a gap the backfill
        # repairs from REST: wait for that, and report both counts, so "late" and "lost" read apart.
        while missing and time.time() - t1 < args.settle_seconds:
            time.sleep(5)
            expected, missing, wrong, lags = check_sample(args.port, connection, sample, window)
            settled_at = time.time()
        p50, p99 = quantiles([lag.committed for lag in lags])
        received_p50, received_p99 = quantiles([lag.received for lag in lags if lag.received == lag.received])
        print(f"step {step + 1}: push every {interval}s (offered {channels / interval:,.0f}/s): "
              f"accepted {accepted:,.0f} updates/s, committed {flushed:,.0f} rows/s; "
              f"1s candles checked {expected}, missing {missing} (after 8 s: {missing_first}; checked "
              f"{settled_at - t1:.0f} s after the step), wrong {wrong}; "
              f"lag p50 {p50:.2f}s p99 {p99:.2f}s; collector RSS max {max(rss):.0f} MB; "
              f"buffer depth max {max(depths):,} mean {statistics.mean(depths):,.0f}", flush=True)
        runs = counters1.get("flush_runs", 0) - counters0.get("flush_runs", 0)
        took_ms = counters1.get("flush_duration_ms", 0) - counters0.get("flush_duration_ms", 0)
        print(f"  lag split: close to collector receipt p50 {received_p50:.2f}s p99 {received_p99:.2f}s; "
              f"to commit {lag_clock}", flush=True)
        if step == 0:
            # From when the subscriptions collect (`backfill_from`): every channel is subscribed by then.
            warmup = (int(live_from.timestamp()) + 1) * 1000, (int(t0) + 1) * 1000
            _, warm_missing, warm_wrong, warm_lags = check_sample(args.port, connection, sample, warmup)
            warm_p50, warm_p99 = quantiles([lag.committed for lag in warm_lags])
            print(f"  warm-up before the step (its last {(warmup[1] - warmup[0]) / 1000:.0f} s, "
                  f"{(warmup[0] / 1000 - workers_started):.0f} s after the workers started): lag p50 {warm_p50:.2f}s "
                  f"p99 {warm_p99:.2f}s, missing {warm_missing}, wrong {warm_wrong}", flush=True)
        requests = counters1.get("flush_requests", 0) - counters0.get("flush_requests", 0)
        sent = counters1.get("flush_requests_sent", 0) - counters0.get("flush_requests_sent", 0)
        request_wait_ms = counters1.get("flush_request_wait_ms", 0) - counters0.get("flush_request_wait_ms", 0)
        print(f"  flushes: {runs / span:.2f}/s, {rows / runs if runs else 0:,.0f} rows and "
              f"{took_ms / runs if runs else 0:,.0f} ms each on average; requested by the collector "
              f"{sent / span:.2f}/s, run {requests / span:.2f}/s (the rest expired), waiting "
              f"{request_wait_ms / requests if requests else 0:,.0f} ms for the flush worker on average", flush=True)
        print(f"  CPU: collector {per(cpu['collector'], updates)} µs/update, flush {per(cpu['flush'], rows)} µs/row, "
              f"simulator {per(cpu['simulator'], pushes)} µs/push ({pushes / span:,.0f} pushes/s, ticks "
              f"skipped {skipped} of {ticks + skipped}, a tick {tick_busy_ms / ticks if ticks else 0:.0f} ms "
              f"({tick_cpu_ms / ticks if ticks else 0:.0f} ms CPU), "
              f"longest {sim1.get('tick_busy_ms_max', 0)} ms); "
              f"per accepted update: redis {per(cpu['redis'], updates)} µs, "
              f"postgres {per(cpu['postgres'], updates)} µs, "
              f"backfill worker {per(cpu['worker'], updates)} µs; cores busy: "
              + ", ".join(f"{name} {seconds / span:.2f}" for name, seconds in cpu.items()), flush=True)


def wait_for_startup_backfill(limit_s: float) -> None:
    """Let gaps left by the start (candles before a channel's first push) be filled before measuring."""
    from candles.models import Gap, GapState

    started = time.time()
    unfinished = Gap.objects.filter(state__in=[GapState.OPEN, GapState.FILLING])
    while (left := unfinished.count()) and time.time() - started < limit_s:
        print(f"  start-up backfill: {left:,} gaps to fill ({Gap.objects.count():,} found), "
              f"{time.time() - started:.0f} s", flush=True)
        time.sleep(10)
    state = "done" if not left else f"{left:,} gaps still open, measuring anyway"
    print(f"start-up backfill {state} after {time.time() - started:.0f} s "
          f"({Gap.objects.filter(state=GapState.FILLED).count():,} gaps filled)", flush=True)


def check_sample(port: int, connection, sample: list[str], window: tuple[int, int]):
    """Closed 1s candles of the window against ground truth.

    Returns (expected, missing, wrong, lags), each lag a Lag in seconds from the candle's close.
    """
    lags, missing, wrong, expected = [], 0, 0, 0
    commit_time = "pg_xact_commit_timestamp(c.xmin)" if commit_timestamps(connection) else "NULL"
    for inst_id in sample:
        with connection.cursor() as cursor:
            # The row's xmin is the transaction that last wrote it: for a closed candle, the one that wrote
            # its confirmed version (an unconfirmed one never replaces it).
            cursor.execute(
                "SELECT (extract(epoch FROM c.open_time) * 1000)::bigint, c.open::text, c.high::text, c.low::text,"
                " c.close::text, c.vol::text, CASE c.source WHEN 'r' THEN 'rest' ELSE 'ws' END, c.version,"
                f" extract(epoch FROM {commit_time})"
                " FROM candles_candle c JOIN candles_instrument i ON i.id = c.instrument_id"
                " JOIN candles_timeframe t ON t.id = c.timeframe_id"
                " WHERE i.inst_id = %s AND t.code = '1s' AND c.confirmed"
                " AND c.open_time BETWEEN %s AND %s",
                [inst_id, _dt(window[0]), _dt(window[1])])
            stored = {row[0]: row[1:] for row in cursor.fetchall()}
        for row in truth(port, inst_id, "1s", *window):
            expected += 1
            candle = stored.get(int(row[0]))
            if candle is None:
                missing += 1
                continue
            *values, source, version, committed = candle
            if [str(Decimal(value)) for value in values] != row[1:6]:
                wrong += 1
            closed = int(row[0]) / 1000 + 1
            # The version is the collector's receipt time (µs): it splits the lag into "reaching the collector"
            # (the simulator's tick, the socket, the collector's loop) and "reaching PostgreSQL" (buffer, flush).
            received = version / 1e6 if source == "ws" else math.nan
            committed = float(committed) if committed is not None else math.nan
            lags.append(Lag(committed - closed, received - closed))
    return expected, missing, wrong, lags


class Lag(NamedTuple):
    committed: float  # the row's commit (NaN where the server does not track commit times)
    received: float  # the collector's receipt of the confirm push (NaN for a row written from REST)


def commit_timestamps(connection) -> bool:
    """Whether PostgreSQL records commit times (`track_commit_timestamp`; the private server does)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW track_commit_timestamp")
        return cursor.fetchone()[0] == "on"


def quantiles(values: list[float]) -> tuple[float, float]:
    """(p50, p99), NaN when there is nothing to rank."""
    values = sorted(values)
    if not values:
        return float("nan"), float("nan")
    return values[len(values) // 2], values[int(len(values) * 0.99)]


def read_counters(r) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(f"{PREFIX}counters").items()}


def sim_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/stats", timeout=10) as response:
        return json.load(response)


def per(seconds: float, count: int) -> str:
    return f"{seconds / count * 1e6:.1f}" if count else "n/a"


def _dt(ms: int):
    from candles.bars import ms_to_datetime

    return ms_to_datetime(ms)


if __name__ == "__main__":
    main()
