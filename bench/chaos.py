"""The whole system under a schedule of faults, judged by the simulator's ground truth.

    .venv/bin/python bench/chaos.py --minutes 10 [--instruments 200] [--bars 1s,1m,5m] [--seed 7]
                                    [--fault-every S] [--heal-timeout 120] [--replicas 2] [--keep]

Starts, all on 127.0.0.1 ports of its own and in a temporary directory: a private PostgreSQL and Redis, the
OKX simulator, and the workers as `make run` does (collectors, flush, backfill/default/webhooks with beat).
Subscribes every simulated instrument in every bar, waits until each channel is live, then applies faults for
about N minutes (see bench/chaos_faults.py; each printed with a timestamp). When the last fault is over it
waits for the system to heal and compares every closed candle of the window with the ground truth.

The last line is the verdict:

    expected N present N exact N missing N wrong N duplicates N heal_s X worst_lag_s Y

and the exit code is 0 only when nothing is missing, wrong or duplicated and the system healed within 60 s.
docs/chaos.md explains the figures.
"""

from __future__ import annotations

import argparse
import atexit
import math
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.chaos_faults import (  # noqa: E402
    BEFORE_MARGIN_S,
    FAULT_KINDS,
    RECOVERY_MARGIN_S,
    AppliedFault,
    FaultRunner,
    Simulator,
    default_every_s,
    fault_schedule,
)
from bench.chaos_system import KEY_PREFIX, ChaosSystem, SystemConfig  # noqa: E402
from bench.chaos_verdict import Verdict, Window, fetch_truth, heal  # noqa: E402

HEAL_TARGET_S = 60.0
SETTLE_TIMEOUT_S = 120.0

_LIVE_CHANNELS = """
SELECT count(*) FROM candles_subscription s JOIN candles_timeframe t ON t.id = s.timeframe_id
WHERE s.is_active AND EXISTS (
    SELECT 1 FROM candles_candle c
    WHERE c.instrument_id = s.instrument_id AND c.timeframe_id = s.timeframe_id
      AND c.open_time > now() - (t.seconds + 2) * interval '1 second'
)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    kinds = "\n".join(f"  {kind:17} {what}" for kind, what in FAULT_KINDS.items())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=f"fault kinds:\n{kinds}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the fault period (default 10)")
    parser.add_argument("--instruments", type=int, default=200, help="simulated instruments, all subscribed")
    parser.add_argument("--bars", default="1s,1m,5m", help="bars subscribed for every instrument")
    parser.add_argument("--seed", type=int, default=7, help="simulator market and fault order (default 7)")
    parser.add_argument("--fault-every", type=float, default=None,
                        help="seconds per fault slot (default: period / kinds, within 10..30 s)")
    parser.add_argument("--heal-timeout", type=float, default=120.0,
                        help="seconds after the last fault to wait for every candle (default 120)")
    parser.add_argument("--replicas", type=int, default=1, choices=(1, 2, 3),
                        help="COLLECTOR_REPLICAS: collectors workers holding every shard (2: hot standby)")
    parser.add_argument("--keep", action="store_true", help="leave the run directory (logs, data) behind")
    args = parser.parse_args(argv)
    args.bars = tuple(bar for bar in args.bars.split(",") if bar)
    if args.fault_every is None:
        args.fault_every = default_every_s(args.minutes * 60)
    return args


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = fault_schedule(seed=args.seed, period_s=args.minutes * 60, every_s=args.fault_every)
    except ValueError as exc:
        say(f"chaos: {exc}")
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix="okx-chaos-"))
    system = ChaosSystem(SystemConfig(run_dir=run_dir, instruments=args.instruments, bars=args.bars, seed=args.seed,
                                      replicas=args.replicas))
    closed = False

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            system.close()
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)

    atexit.register(close)
    # SIGTERM unwinds like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        outcome = run(args, plan, system)
    except Exception:
        traceback.print_exc()
        say(f"chaos: the run failed; logs in {run_dir / 'logs'}" + ("" if args.keep else " (deleted; use --keep)"))
        close()
        return 2
    finally:
        close()
    verdict, heal_s = outcome
    if args.keep:
        say(f"run directory kept: {run_dir}")
    say(f"expected {verdict.expected} present {verdict.present} exact {verdict.exact} missing {verdict.missing} "
        f"wrong {len(verdict.wrong)} duplicates {verdict.duplicates} heal_s {heal_s:.1f} "
        f"worst_lag_s {verdict.worst_lag_s():.2f}")
    ok = verdict.missing == 0 and not verdict.wrong and verdict.duplicates == 0 and heal_s <= HEAL_TARGET_S
    return 0 if ok else 1


def run(args: argparse.Namespace, plan, system: ChaosSystem) -> tuple[Verdict, float]:
    say(f"chaos: {args.instruments} instruments x {','.join(args.bars)} "
        f"({args.instruments * len(args.bars)} channels), seed {args.seed}, {len(plan)} faults, one every "
        f"{args.fault_every:g} s, {args.replicas} collector(s) per shard; run directory {system.run_dir}")
    started = time.time()
    instruments = system.start()
    say(f"system up in {time.time() - started:.0f} s: PostgreSQL :{system.pg.port}, Redis :{system.redis.port}, "
        f"simulator :{system.sim_port}; {len(instruments)} instruments subscribed")
    channels = [(inst_id, bar) for inst_id in instruments for bar in args.bars]
    settle(system, len(channels))
    window_start_ms = math.ceil(time.time()) * 1000
    say(f"all {len(channels)} channels live after {time.time() - started:.0f} s; window and faults start now")

    runner = FaultRunner(system, Simulator(system.sim_url), log=say, slot_s=args.fault_every)
    applied = runner.run(plan, window_start_ms / 1000)
    if runner.kill_rest_requests:
        say(f"REST requests from each collector kill to the next fault: "
            f"{', '.join(map(str, runner.kill_rest_requests))} (target with replicas: 0)")
    faults_over = applied[-1].ended
    window = Window(window_start_ms, int(faults_over * 1000))
    say(f"faults over; window {(window.end_ms - window.start_ms) / 1000:.0f} s; waiting up to "
        f"{args.heal_timeout:g} s for every closed candle")

    truth = fetch_truth(system.sim_url, channels, window)
    say(f"judging from {time.time() - faults_over:.1f} s after the last fault; heal_s is when the last row the "
        f"window needed was committed")
    verdict, heal_s = heal(system.db_url, truth, window, args.bars, since=faults_over, timeout_s=args.heal_timeout)
    report(system, verdict, heal_s, applied, args.bars)
    return verdict, heal_s


def settle(system: ChaosSystem, channels: int) -> None:
    """Wait until every subscribed channel has a candle of the current or the previous period stored."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    live = 0
    while time.monotonic() < deadline:
        with psycopg.connect(system.db_url, autocommit=True) as conn:
            live = conn.execute(_LIVE_CHANNELS).fetchone()[0]
        if live >= channels:
            return
        time.sleep(1)
    raise TimeoutError(f"only {live} of {channels} channels live after {SETTLE_TIMEOUT_S:.0f} s")


def report(system: ChaosSystem, verdict: Verdict, heal_s: float, applied: list[AppliedFault], bars) -> None:
    """What happened, for a person reading the run: per bar, examples, lag, counters, gaps, restarts."""
    state = "healed" if math.isfinite(heal_s) else "NOT healed"
    say(f"{state}: {verdict.exact} of {verdict.expected} candles exact"
        + (f" {heal_s:.1f} s after the last fault" if math.isfinite(heal_s) else ""))
    missing_by_bar = Counter(bar for _, bar, _ in verdict.missing_keys)
    wrong_by_bar = Counter(key[1] for key, _ in verdict.wrong)
    for bar in bars:
        say(f"  {bar:>4}: missing {missing_by_bar[bar]}, wrong {wrong_by_bar[bar]}")
    for key in verdict.missing_keys[:10]:
        say(f"  missing {key[0]} {key[1]} {key[2]} ({time.strftime('%H:%M:%S', time.localtime(key[2] / 1000))})")
    for key, why in verdict.wrong[:10]:
        say(f"  wrong {key[0]} {key[1]} {key[2]}: {why}")
    ended = applied[-1].ended
    for written_at, key, source in verdict.latest_writes(5):
        if written_at > ended:
            say(f"  late write: {key[0]} {key[1]} {key[2]} by {source} {written_at - ended:.1f} s after the last fault")
    calm, calm_count = verdict.calm_lag_s(applied)
    say(f"lag (commit - close) of {len(verdict.lags)} live candles: p50 {verdict.lag_percentile(0.5):.2f} s, "
        f"p99 {verdict.lag_percentile(0.99):.2f} s, worst {verdict.worst_lag_s():.2f} s; "
        f"away from faults ({calm_count} candles): worst {calm:.2f} s; longest from close to exact row, REST "
        f"repairs included: {verdict.worst_time_to_exact_s():.2f} s")
    counts = Counter(f.kind for f in applied)
    say("faults applied: " + ", ".join(f"{kind} x{counts[kind]}" for kind in FAULT_KINDS))
    try:
        stats = Simulator(system.sim_url).stats()
        say("simulator: " + ", ".join(f"{k} {stats[k]}" for k in (
            "connections_total", "drops", "notices_sent", "confirms_omitted", "malformed_sent", "rest_requests",
            "rest_429s", "handshakes_rejected", "errors_sent")))
    except OSError as exc:
        say(f"simulator stats unavailable: {exc}")
    try:
        client = redis.Redis.from_url(system.redis.url, socket_timeout=5)
        counters = {k.decode(): int(v) for k, v in client.hgetall(f"{KEY_PREFIX}counters").items()}
        say("pipeline counters since the last Redis restart: " + ", ".join(
            f"{k} {counters.get(k, 0)}" for k in ("messages", "candles_flushed", "flush_runs", "flush_errors",
                                                 "missed_confirms", "dead_letters")))
        client.close()
    except redis.RedisError as exc:
        say(f"pipeline counters unavailable: {exc}")
    with psycopg.connect(system.db_url, autocommit=True) as conn:
        gaps = conn.execute("SELECT state, count(*), coalesce(sum(missing), 0) FROM candles_gap GROUP BY state "
                            "ORDER BY state").fetchall()
    say("gaps: " + (", ".join(f"{state} {n} ({missing} candles)" for state, n, missing in gaps) or "none"))
    kills = [fault for fault in applied if fault.kind == "kill_collector"]
    if kills:
        opened = [kill_gaps(system, kill) for kill in kills]
        say(f"collector kills: {len(kills)}, gaps {sum(n for n, _ in opened)} candles {sum(m for _, m in opened)} "
            f"(gaps recorded for candles that closed from {BEFORE_MARGIN_S:g} s before each kill to "
            f"{RECOVERY_MARGIN_S:g} s after its restart: the kill's cost, to repair over REST)")
    if system.unexpected_exits:
        say("processes that exited unexpectedly (restarted): "
            + ", ".join(f"{name} (code {code})" for name, code in system.unexpected_exits))


def kill_gaps(system: ChaosSystem, kill: AppliedFault) -> tuple[int, int]:
    """(gaps, candles missing) recorded for candles that closed around a collector kill."""
    with psycopg.connect(system.db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*), coalesce(sum(g.missing), 0) FROM candles_gap g "
            "JOIN candles_subscription s ON s.id = g.subscription_id JOIN candles_timeframe t ON t.id = s.timeframe_id "
            "WHERE g.start <= to_timestamp(%s) AND g.\"end\" + t.seconds * interval '1 second' >= to_timestamp(%s)",
            [kill.ended + RECOVERY_MARGIN_S, kill.started - BEFORE_MARGIN_S],
        ).fetchone()


if __name__ == "__main__":
    sys.exit(main())
