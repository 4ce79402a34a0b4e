"""Repair throughput against the simulator: requests a second and the worker's CPU per unit, at OKX's budgets.

    .venv/bin/python bench/repair.py --throughput 20 [--instruments 100] [--profile]

The simulator runs in a process of its own (its CPU is not the repair's), with OKX's REST limits (/candles 40
per 2 s, /history-candles 20 per 2 s). The bench database gets `1m` and `1s` series of `--instruments`
instruments and two kinds of work, each measured apart for `--throughput` seconds of back-to-back
`repair_run`s of 4.5 s (as beat runs them):

* missed confirms: closed candles stored unconfirmed with wrong numbers, one per REST page (`1m`: four within
  /candles' reach; `1s`: on /history-candles), so every unit is one request writing one row;
* gaps: `1m` holes of 5 candles and `1s` holes of a whole page (100 candles), one per REST page.

Reported per kind: units, REST requests a second (the simulator's count) against the 30 of the budgets, the
repair process's CPU per unit (the run's own thread apart from its lane workers), and the share of the
process's CPU in one core. `--profile` adds where the workers' CPU went (cProfile, every worker thread).
Every repaired candle is then checked against the simulator's truth.
"""

from __future__ import annotations

import cProfile
import functools
import inspect
import os
import pstats
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECOND, MINUTE = 1000, 60_000
RUN_BUDGET_S = 4.5
BUDGET_PER_S = 30  # OKX's 20 /candles + 10 /history-candles requests a second
CONFIRMS_1M, CONFIRMS_1S = 4, 20  # per instrument: 1m within /candles' 1,440, 1s one per 100 s
GAPS_1M, GAPS_1S = 4, 20


@contextmanager
def simulator(instruments: int):
    """The simulator in a process of its own; yields its REST URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "collectors.simulator", "--port", "0", "--instruments", str(instruments),
         "--bars", "1s,1m", "--history-days", "2", "--push-interval", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if "rest " not in line:
            raise SystemExit(f"simulator did not start: {line!r}")
        yield line.rsplit("rest ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


def _setup(rest_url: str, instruments: int, kind: str) -> list[tuple[str, str, int]]:
    """Fresh instruments and 1s/1m subscriptions, and the work of `kind`; returns the (inst_id, bar, open
    time) it should repair."""
    from django.db import connection
    from django.utils import timezone

    from candles.bars import datetime_to_ms, ms_to_datetime
    from candles.models import Gap, Instrument, RepairPriority, Subscription, Timeframe
    from candles.partitions import partitions_ensure
    from collectors.simulator.instruments import spot_names

    now = timezone.now()
    listed = ms_to_datetime((datetime_to_ms(now - timedelta(days=2)) // 86_400_000) * 86_400_000)
    with connection.cursor() as cur:
        cur.execute("TRUNCATE candles_gap, candles_subscription, candles_candle, candles_instrument CASCADE")
    names = [f"{base}-USDT" for base in spot_names(instruments)]
    Instrument.objects.bulk_create(Instrument(inst_id=n, inst_type="SPOT", listed_at=listed) for n in names)
    timeframes = {tf.code: tf for tf in Timeframe.objects.filter(code__in=("1s", "1m"))}
    Subscription.objects.bulk_create(
        Subscription(instrument=i, timeframe=tf, is_active=True) for i in Instrument.objects.all()
        for tf in timeframes.values())
    Subscription.objects.update(created_at=now - timedelta(days=1))
    now_ms = datetime_to_ms(now)
    newest = {"1m": (now_ms - 10 * SECOND) // MINUTE * MINUTE - MINUTE,
              "1s": (now_ms - 10 * SECOND) // SECOND * SECOND - 5 * SECOND}
    page = {"1m": 300 * MINUTE, "1s": 100 * SECOND}
    expected: list[tuple[str, str, int]] = []
    if kind == "confirms":
        rows = []
        for inst in Instrument.objects.all():
            for bar, count in (("1m", CONFIRMS_1M), ("1s", CONFIRMS_1S)):
                for k in range(count):
                    open_ms = newest[bar] - k * page[bar]
                    rows.append((inst.pk, timeframes[bar].pk, ms_to_datetime(open_ms)))
                    expected.append((inst.inst_id, bar, open_ms))
        # A plain INSERT bypasses candles_upsert, which makes the partitions a write needs.
        for bar in ("1m", "1s"):
            times = [t for _, tf_id, t in rows if tf_id == timeframes[bar].pk]
            if times:
                partitions_ensure(bar=bar, start=min(times), end=max(times) + timedelta(milliseconds=1))
        with connection.cursor() as cur:
            cur.executemany("""
                INSERT INTO candles_candle (instrument_id, timeframe_id, open_time, open, high, low, close, vol,
                    vol_ccy, vol_ccy_quote, confirmed, source, version)
                VALUES (%s, %s, %s, 1, 2, 1, 1, 0, 0, 0, false, 'w', 1)
            """, rows)
    else:
        gaps = []
        for sub in Subscription.objects.select_related("instrument", "timeframe"):
            bar = sub.timeframe.code
            length, count = (5, GAPS_1M) if bar == "1m" else (100, GAPS_1S)
            step = MINUTE if bar == "1m" else SECOND
            for k in range(count):
                end = newest[bar] - k * page[bar] - (5 * MINUTE if bar == "1m" else 0)
                start = end - (length - 1) * step
                gaps.append(Gap(subscription=sub, start=ms_to_datetime(start), end=ms_to_datetime(end),
                                missing=length, priority=RepairPriority.OUTAGE))
                expected.extend((sub.instrument.inst_id, bar, t) for t in range(start, end + 1, step))
        Gap.objects.bulk_create(gaps)
    with connection.cursor() as cur:
        cur.execute("ANALYZE candles_candle")
        cur.execute("ANALYZE candles_gap")
    return expected


def _sim_requests(rest_url: str) -> tuple[int, int]:
    stats = httpx.get(rest_url + "/sim/stats").json()
    return stats["rest_requests"], stats["rest_429s"]


class _Phases:
    """CPU time (this thread's) spent inside chosen functions, each net of the chosen functions it calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._undo: list[tuple[object, str, object]] = []

    def _enter(self) -> None:
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append([time.thread_time(), 0.0])

    def _exit(self, label: str) -> None:
        stack = self._local.stack
        started, inner = stack.pop()
        spent = time.thread_time() - started
        if stack:
            stack[-1][1] += spent
        with self._lock:
            self.seconds[label] = self.seconds.get(label, 0.0) + spent - inner
            self.calls[label] = self.calls.get(label, 0) + 1

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)
        if inspect.iscoroutinefunction(original):
            @functools.wraps(original)
            async def timed(*args, **kwargs):
                self._enter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self._exit(label)
        else:
            @functools.wraps(original)
            def timed(*args, **kwargs):
                self._enter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self._exit(label)
        self._undo.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


class _PostgresCpu:
    """CPU of the PostgreSQL backends that the repair's threads opened, read from /proc when they close."""

    def __init__(self) -> None:
        from django.db.backends.postgresql.base import DatabaseWrapper

        self.seconds = 0.0
        self._lock = threading.Lock()
        self._wrapper = DatabaseWrapper
        self._close = DatabaseWrapper.close
        meter = self

        def close(wrapper):
            if wrapper.connection is not None and not wrapper.connection.closed:
                meter.add(wrapper.connection.info.backend_pid)
            return meter._close(wrapper)
        DatabaseWrapper.close = close

    def add(self, pid: int) -> None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        with self._lock:
            self.seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def restore(self) -> None:
        self._wrapper.close = self._close


def _phases() -> _Phases:
    from collectors.okx.ratelimit import RedisRateLimiter
    from collectors.okx.rest import OkxRestClient
    from collectors.repair import fill, schedule

    phases = _Phases()
    phases.wrap(OkxRestClient, "candle_range", "fetch: HTTP, parse")
    phases.wrap(RedisRateLimiter, "acquire", "fetch: rate limiter")
    phases.wrap(RedisRateLimiter, "done", "fetch: rate limiter")
    for module in (schedule, fill):
        phases.wrap(module, "candles_upsert", "candles_upsert")
    phases.wrap(schedule, "widened", "widened: the page's other work")
    phases.wrap(schedule, "gap_fill", "gap_fill: claim, re-check, settle")
    phases.wrap(schedule, "confirms_retry_later", "retry set")
    return phases


def _measure(rest_url: str, seconds: float, profile: bool, redis, keys) -> dict:
    from django.db import connection

    from collectors.repair import schedule

    profiles: list[cProfile.Profile] = []
    original = schedule._lane_worker
    if profile:
        def profiled(*args, **kwargs):
            profiler = cProfile.Profile(time.thread_time)  # CPU, not the waits
            profiles.append(profiler)
            profiler.runcall(original, *args, **kwargs)
        schedule._lane_worker = profiled
    phases = None if profile else _phases()
    postgres = _PostgresCpu()
    requests0, rejected0 = _sim_requests(rest_url)
    cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    units = 0
    try:
        while time.perf_counter() - wall0 < seconds:
            result = schedule.repair_run(budget_s=RUN_BUDGET_S, rest_url=rest_url, redis=redis, keys=keys)
            units += result.units
            if not result.units:
                break
        connection.close()  # the run thread's own backend
    finally:
        schedule._lane_worker = original
        postgres.restore()
        if phases is not None:
            phases.restore()
    wall = time.perf_counter() - wall0
    cpu, main = time.process_time() - cpu0, time.thread_time() - main0
    requests1, rejected1 = _sim_requests(rest_url)
    out = {"units": units, "wall": wall, "cpu": cpu, "main": main, "requests": requests1 - requests0,
           "429s": rejected1 - rejected0, "postgres": postgres.seconds,
           "phases": phases.seconds if phases else {}, "calls": phases.calls if phases else {}}
    if profile and profiles:
        stats = pstats.Stats(profiles[0])
        for extra in profiles[1:]:
            stats.add(extra)
        out["profile"] = stats
    return out


def _check(rest_url: str, expected: list[tuple[str, str, int]]) -> tuple[int, int, int]:
    """(exact, sampled, written): of the candles to repair, those written confirmed, and how many of a sample
    equal the simulator's truth."""
    from candles.bars import datetime_to_ms
    from candles.models import Candle

    stored = {(c.instrument.inst_id, c.timeframe.code, datetime_to_ms(c.open_time)): c
              for c in Candle.objects.filter(confirmed=True).select_related("instrument", "timeframe")}
    written = [key for key in expected if key in stored]
    exact = 0
    with httpx.Client(base_url=rest_url) as client:
        for inst_id, bar, open_ms in written[:200]:  # a sample: the truth is one request per candle
            truth = client.get("/sim/truth", params={"instId": inst_id, "bar": bar, "start": open_ms,
                                                      "end": open_ms}).json()["data"][0]
            c = stored[(inst_id, bar, open_ms)]
            exact += [str(v) for v in (c.open, c.high, c.low, c.close, c.vol)] == truth[1:6]
    return exact, min(len(written), 200), len(written)


def _top(stats: pstats.Stats) -> None:
    print("      the workers' CPU by function (own time; cProfile inflates it):")
    stats.sort_stats("tottime").print_stats(15)


def throughput(instruments: int, seconds: float, profile: bool) -> None:
    import redis as redis_lib
    from django.conf import settings

    from okxproject.keys import Keys

    # One prefix for both kinds: the REST budget's window must carry over from one to the next, as the
    # simulator's does.
    redis = redis_lib.Redis.from_url(settings.REDIS_URL)
    keys = Keys(prefix=f"bench-repair:{time.time_ns()}:")
    print(f"\n5. repair throughput against the simulator: {instruments} instruments × (1m, 1s), runs of "
          f"{RUN_BUDGET_S} s for {seconds:.0f} s per kind, budgets 20 + 10 requests/s")
    try:
        with simulator(instruments) as rest_url:
            for kind in ("confirms", "gaps"):
                _kind(rest_url, instruments, kind, seconds, profile, redis, keys)
    finally:
        for key in redis.scan_iter(keys.prefix + "*"):
            redis.delete(key)


def _kind(rest_url: str, instruments: int, kind: str, seconds: float, profile: bool, redis, keys) -> None:
    from django.db import connection

    expected = _setup(rest_url, instruments, kind)
    connection.close()  # what the setup's connection cached must not count
    m = _measure(rest_url, seconds, profile, redis, keys)
    units = max(m["units"], 1)
    exact, sampled, written = _check(rest_url, expected)
    workers = m["cpu"] - m["main"]
    print(f"   {kind}: {m['units']} units, {m['requests']} requests in {m['wall']:.1f} s = "
          f"{m['requests'] / m['wall']:.1f} requests/s of {BUDGET_PER_S}; REST 429s {m['429s']}; "
          f"{written} candles repaired, exact {exact}/{sampled} sampled")
    print(f"      CPU per unit: repair process {m['cpu'] * 1000 / units:.2f} ms (run thread "
          f"{m['main'] * 1000 / units:.2f}, lane workers {workers * 1000 / units:.2f}), PostgreSQL backends "
          f"{m['postgres'] * 1000 / units:.2f} ms; {m['cpu'] / m['wall']:.2f} + {m['postgres'] / m['wall']:.2f} "
          f"of a core")
    if m["phases"]:
        for label, spent in sorted(m["phases"].items(), key=lambda item: -item[1]):
            print(f"        {label:<38} {spent * 1000 / units:6.2f} ms  ({m['calls'][label] / units:.1f} calls)")
        rest = workers - sum(m["phases"].values())
        print(f"        {'the rest (loop, logging, bookkeeping)':<38} {rest * 1000 / units:6.2f} ms")
    if "profile" in m:
        _top(m["profile"])
        m["profile"].dump_stats(f"/tmp/repair-{kind}.prof")
        print(f"      (whole profile: /tmp/repair-{kind}.prof)")
