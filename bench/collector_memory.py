"""Memory of the collector runtime at full breadth: RSS and the biggest allocations at N channels.

    .venv/bin/python bench/collector_memory.py [--instruments 1000] [--bars all] [--settle 20] [--histogram]
        [--tracemalloc] [--hosting thread|main] [--malloc-arena-max N]

Starts the OKX simulator (its own process, 127.0.0.1, a free port) with `--instruments` spot instruments,
then the collector runtime in a child process: the same `CollectorRuntime` the collectors worker hosts, with
Django set up as there, owning every shard, subscribed to every instrument in every bar (1,000 × 27 = 27,000
channels). The subscriptions are handed to the runtime as the snapshot its loader would build from the
database (the bar specs are the seeded ones), so no database is needed; Redis is the one in `REDIS_URL`,
under a private key prefix deleted at the end (nothing flushes the live buffer meanwhile).

The runtime runs on an event loop in a thread of its own, as `CollectorThread` hosts it in the collectors
worker (`--hosting main` runs it on the main thread): glibc gives a thread's allocations an arena of their
own, so where the loop runs changes the RSS. `--malloc-arena-max N` sets `MALLOC_ARENA_MAX` for the child.

Once every connection is open and subscribed, the child waits `--settle` seconds of pushes (reporting every
10 s, so a stall shows) and prints its RSS (VmRSS and VmHWM from /proc) beside the target. `--histogram`
adds the object types holding the most memory (`gc.get_objects()` and `sys.getsizeof`, taken once at the
end, so it costs nothing during the run); `--tracemalloc` the top allocations by line, but tracing every
allocation slows the collector several-fold: use `--push-interval 5` with it (at 1 s the loop falls behind,
handshakes time out and leases lapse), and compare RSS between runs without it.

Target (issue 14): ≤ 250 MB at 27,000 channels.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import gc
import importlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 250.0  # issue 14: the collector at 27,000 channels
sys.path.insert(0, str(ROOT))


def rss_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


# --- the child: the collector runtime --------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    import django

    django.setup()
    import redis.asyncio
    import redis.utils

    if args.tracemalloc:
        # redis-py reads its version from the package metadata for every new connection; traced, that scan of
        # site-packages takes seconds and stalls the loop past the lease TTL. Not what is being measured.
        redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)

    from candles.bars import BarSpec
    from candles.bars import datetime_to_ms as to_ms
    from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
    from collectors.okx.protocol import Channel
    from okxproject.keys import Keys

    seed = importlib.import_module("candles.migrations.0002_seed_timeframes")
    specs = {code: BarSpec(code, seconds, months, offset, to_ms(seed.anchor_for(seconds, offset)))
             for code, seconds, months, offset, _, _ in seed.BARS}
    bars = list(specs) if args.bars == "all" else args.bars.split(",")
    instruments = args.inst_ids.split(",")
    channels = frozenset(Channel(inst, bar) for inst in instruments for bar in bars)
    snapshot = SubscriptionSnapshot(channels=channels, specs=specs)
    baseline = rss_mb()
    if args.tracemalloc:
        tracemalloc.start(1)  # after the imports: what the runtime allocates, not Django's modules

    config = RuntimeConfig(ws_url=args.ws_url, keys=Keys(args.prefix), shards=8, collector_id="bench-memory",
                           channels_per_connection=args.channels_per_connection)
    runtime = CollectorRuntime(config, redis_factory=lambda: redis.asyncio.Redis.from_url(args.redis_url),
                               load_snapshot=lambda: snapshot)

    async def main() -> dict:
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        started = last_report = time.monotonic()
        deadline = started + args.open_timeout
        while True:
            statuses = runtime.client.statuses()
            subscribed = sum(s.subscribed for s in statuses)
            if subscribed >= len(channels) and all(s.state == "open" for s in statuses):
                break
            if time.monotonic() > deadline:
                break
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                states = collections.Counter(s.state for s in statuses)
                print(f"  {time.monotonic() - started:.0f} s: {dict(states)} connections, "
                      f"{subscribed}/{len(channels)} subscribed, RSS {rss_mb()['VmRSS']} MB", file=sys.stderr)
            await asyncio.sleep(0.5)
        opened_s = time.monotonic() - started
        settle_end = time.monotonic() + args.settle
        while (left := settle_end - time.monotonic()) > 0:
            await asyncio.sleep(min(10.0, left))
            statuses = runtime.client.statuses()
            states = collections.Counter(s.state for s in statuses)
            print(f"  {time.monotonic() - started:.0f} s (settling): {dict(states)} connections, "
                  f"{sum(s.subscribed for s in statuses)}/{len(channels)} subscribed, "
                  f"{sum(s.messages for s in statuses)} frames, RSS {rss_mb()['VmRSS']} MB", file=sys.stderr)
        gc.collect()
        statuses = runtime.client.statuses()
        result = {
            "channels": len(channels), "connections": len(statuses),
            "subscribed": sum(s.subscribed for s in statuses), "open_s": round(opened_s, 1),
            "messages": sum(s.messages for s in statuses), "baseline_mb": baseline, "rss_mb": rss_mb(),
        }
        if args.histogram:
            result["histogram"] = type_histogram(args.top)
        if args.tracemalloc:
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            top = snap.statistics("lineno")
            result["traced_mb"] = round(sum(s.size for s in top) / 2**20, 1)
            result["top"] = [
                {"kb": round(s.size / 1024), "count": s.count,
                 "where": f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}"}
                for s in top[:args.top]
            ]
        # The figures first: the shutdown that follows is not what is measured.
        print(json.dumps(result), flush=True)
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 20)

    if args.hosting == "main":
        asyncio.run(main())
        return
    thread = threading.Thread(target=asyncio.run, args=(main(),), name="okx-collector")
    thread.start()
    thread.join()


def type_histogram(top: int) -> list[dict]:
    """The object types holding the most memory, by the shallow size of their instances.

    Shallow: a dict counts its table, not its keys and values (they count under their own types), so the
    rows add up without counting anything twice. Objects the gc does not track (str, bytes, int, float)
    are counted when a tracked container holds them directly.
    """
    sizes: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    for obj in gc.get_objects():
        for item in (obj, *_untracked_members(obj)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            name = type(item).__qualname__
            sizes[name] += sys.getsizeof(item)
            counts[name] += 1
    return [{"type": name, "kb": round(size / 1024), "count": counts[name]}
            for name, size in sizes.most_common(top)]


def _untracked_members(obj: object) -> list:
    if isinstance(obj, dict):
        members = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        members = list(obj)
    else:
        return []
    return [m for m in members if not gc.is_tracked(m)]


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --- the parent: simulator, child, report ------------------------------------------------------------------


def parent(args: argparse.Namespace) -> None:
    python = sys.executable
    sim = subprocess.Popen(
        [python, "-m", "collectors.simulator", "--port", "0", "--instruments", str(args.instruments),
         "--push-interval", str(args.push_interval), "--new-connections-per-second", "3",
         *(["--bars", args.bars] if args.bars != "all" else [])],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    prefix = f"bench-mem-{secrets.token_hex(4)}:"
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        line = sim.stdout.readline()  # "okx-simulator listening ws://… rest http://…"
        ws_url = line.split()[2]
        rest_url = line.split()[4]
        import httpx

        rows = httpx.get(f"{rest_url}/api/v5/public/instruments", params={"instType": "SPOT"}, timeout=30).json()
        inst_ids = [row["instId"] for row in rows["data"] if row["instId"] and row["state"] == "live"]
        inst_ids = inst_ids[:args.instruments]
        command = [python, __file__, "--child", "--ws-url", ws_url, "--redis-url", redis_url, "--prefix", prefix,
                   "--inst-ids", ",".join(inst_ids), "--bars", args.bars, "--settle", str(args.settle),
                   "--open-timeout", str(args.open_timeout), "--top", str(args.top),
                   "--channels-per-connection", str(args.channels_per_connection)]
        if args.tracemalloc:
            command.append("--tracemalloc")
        if args.histogram:
            command.append("--histogram")
        env = dict(os.environ)
        if args.malloc_arena_max:
            env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
        out = subprocess.run([*command, "--hosting", args.hosting], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env=env, timeout=args.open_timeout + args.settle + 300)
        result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))
        stats = httpx.get(f"{rest_url}/sim/stats", timeout=10).json()
    finally:
        sim.terminate()
        sim.wait(10)
        _delete_prefix(redis_url, prefix)
    print(f"channels {result['channels']} on {result['connections']} connections, {result['subscribed']} "
          f"subscribed in {result['open_s']} s, {result['messages']} frames")
    print(f"simulator: {stats['handshakes']} upgrade requests, {stats['handshakes_rejected']} refused (429), "
          f"busiest second {stats['handshakes_max_per_second']}; longest push tick {stats['tick_busy_ms_max']} ms")
    print(f"collector RSS before the runtime started: {result['baseline_mb']['VmRSS']} MB")
    rss = result["rss_mb"]["VmRSS"]
    verdict = "met" if rss <= TARGET_MB else "MISSED"
    print(f"collector RSS after {args.settle} s of pushes: {rss} MB (peak {result['rss_mb']['VmHWM']} MB), "
          f"target <= {TARGET_MB:.0f} MB at 27,000 channels: {verdict} "
          f"(runtime on {'a thread of its own' if args.hosting == 'thread' else 'the main thread'}"
          f"{f', MALLOC_ARENA_MAX={args.malloc_arena_max}' if args.malloc_arena_max else ''})")
    if "histogram" in result:
        print("largest object types (shallow sizes):")
        for row in result["histogram"]:
            print(f"  {row['kb']:>8} KiB {row['count']:>8} objects  {row['type']}")
    if "top" in result:
        print(f"traced by tracemalloc: {result['traced_mb']} MB; top allocations by line:")
        for row in result["top"]:
            print(f"  {row['kb']:>8} KiB {row['count']:>8} blocks  {row['where']}")


def _delete_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--bars", default="all", help="comma-separated, or all (27)")
    parser.add_argument("--push-interval", type=float, default=1.0)
    # The default of COLLECTOR_CHANNELS_PER_CONNECTION: 90 connections at 27,000 channels.
    parser.add_argument("--channels-per-connection", type=int, default=300)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of pushes before measuring")
    parser.add_argument("--open-timeout", type=float, default=180.0)
    parser.add_argument("--tracemalloc", action="store_true", help="slow: use --push-interval 5 with it")
    parser.add_argument("--histogram", action="store_true", help="object types by memory, taken at the end")
    parser.add_argument("--hosting", choices=("thread", "main"), default="thread",
                        help="the runtime's loop in a thread of its own (as in the worker) or on the main thread")
    parser.add_argument("--malloc-arena-max", type=int, default=0, help="MALLOC_ARENA_MAX for the collector")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ws-url", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--inst-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
