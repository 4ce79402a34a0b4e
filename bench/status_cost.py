"""What the status plane costs per run at the mission's scale: the health task, the collector's status tick
and a /metrics scrape, each when nothing changed and when some channels changed.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/okx_candles \\
        .venv/bin/python bench/status_cost.py [--instruments 1000] [--changed 1000] [--rounds 5]

Builds the same system as `bench/status.py` (--instruments × 27 bars of subscriptions, a channel status per
active one in Redis under the private prefix `benchstatus:`) and prints, for each figure, the median of
--rounds runs:

* health: `health_check` wall time, SQL queries, Redis commands and the items of their replies (the entries
  read), once everything is settled (nothing changed) and after --changed channels went quiet (they turn
  stale: the run that writes them);
* collector status tick: CPU time of `CollectorRuntime._publish_status` with every channel carried, when no
  message came since the last tick, when --changed channels had one, and when every channel had one;
* /metrics: `metrics_text` wall time, size and series.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.status import PREFIX, _create_database, _environment, build  # noqa: E402


def counting_redis() -> Any:
    """A Redis client of the bench's settings that counts the commands it sends and the items of their replies
    (entries of a list, hash or set; 1 for a scalar), pipelines' included: `client.counts` = [commands, items]."""
    import redis as redis_lib
    from django.conf import settings

    def items(reply: Any) -> int:
        return len(reply) if isinstance(reply, list | dict | set | tuple) else 1

    class CountingPipeline(redis_lib.client.Pipeline):
        def execute(self, raise_on_error: bool = True) -> list:
            self.counts[0] += len(self.command_stack)
            return super().execute(raise_on_error)

        def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
            reply = super().parse_response(connection, command_name, **options)
            self.counts[1] += items(reply)
            return reply

    class CountingRedis(redis_lib.Redis):
        counts = [0, 0]

        def execute_command(self, *args: Any, **options: Any) -> Any:
            self.counts[0] += 1
            return super().execute_command(*args, **options)

        def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
            reply = super().parse_response(connection, command_name, **options)
            self.counts[1] += items(reply)
            return reply

        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
            pipe = CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
            pipe.counts = self.counts
            return pipe

    return CountingRedis.from_url(settings.REDIS_URL)


def median_of(rounds: int, run: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    results = [run() for _ in range(rounds)]
    return tuple(statistics.median(column) for column in zip(*results, strict=True))


# --- health ------------------------------------------------------------------------------------------------


def measure_health(rounds: int, changed: int) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from collectors.monitoring.health import health_check
    from collectors.shared.connections import pipeline_keys

    redis, keys = counting_redis(), pipeline_keys()

    def run_once(now: float) -> tuple[float, ...]:
        redis.counts[:] = [0, 0]
        with CaptureQueriesContext(connection) as queries:
            started, cpu = time.perf_counter(), time.process_time()
            result = health_check(redis=redis, keys=keys, now=now)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        return elapsed * 1000, cpu * 1000, len(queries), *redis.counts, result.checked, result.changed

    def show(label: str, figures: tuple[float, ...]) -> None:
        ms, cpu_ms, queries, commands, items, checked, written = figures
        print(f"health, {label:22} {ms:7.1f} ms ({cpu_ms:5.1f} ms CPU) {queries:2.0f} queries {commands:4.0f} Redis "
              f"commands {items:6,.0f} reply items; {checked:5,.0f} evaluated, {written:5,.0f} written")

    now = time.time()
    for scenario in ("the status bench's mix", "every channel fresh"):
        if scenario == "every channel fresh":
            channels_all_fresh(redis, keys, now)
        print(f"health, {scenario}:")
        run_once(now)  # settles every subscription to what Redis says
        show("nothing changed:", median_of(rounds, lambda: run_once(now)))
        quiet = channels_go_quiet(redis, keys, changed, now)
        show(f"{quiet:,} went quiet:", run_once(now))
        show("settled again:", median_of(rounds, lambda: run_once(now)))


def channels_all_fresh(redis: Any, keys: Any, now: float) -> None:
    """Every active subscription's channel subscribed with a message a second ago: a healthy system."""
    from candles.models import Subscription
    from collectors.live.status_writer import channel_row

    by_bar: dict[str, dict[str, float]] = {}
    rows = {}
    for inst_id, bar in Subscription.objects.filter(is_active=True).values_list("instrument__inst_id",
                                                                                "timeframe__code"):
        by_bar.setdefault(bar, {})[inst_id] = now - 1
        rows[f"{inst_id}|{bar}"] = channel_row("subscribed", None, "host-0:1234")
    redis.hset(keys.channel_status, mapping=rows)
    for bar, scores in by_bar.items():
        redis.zadd(keys.channel_seen(bar), scores)
        redis.delete(keys.channel_refused(bar))


def channels_go_quiet(redis: Any, keys: Any, count: int, now: float) -> int:
    """`count` live channels whose last message is now older than HEALTH_STALE_AFTER_S (written without GT:
    what the index holds when their collector stopped long enough ago)."""
    from django.conf import settings

    from candles.models import Subscription

    old = now - settings.HEALTH_STALE_AFTER_S - 60
    live = Subscription.objects.filter(is_active=True, status="live").order_by("?")
    chosen = list(live.values_list("instrument__inst_id", "timeframe__code")[:count])
    by_bar: dict[str, dict[str, float]] = {}
    for inst_id, bar in chosen:
        by_bar.setdefault(bar, {})[inst_id] = old
    for bar, scores in by_bar.items():
        redis.zadd(keys.channel_seen(bar), scores)
    return len(chosen)


# --- the collector's status tick --------------------------------------------------------------------------


def measure_tick(rounds: int, changed: int, instruments: int) -> None:
    import redis.asyncio as aredis
    from django.conf import settings

    from candles.models import Timeframe
    from collectors.live.ingest import ChannelTrack
    from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
    from collectors.okx.protocol import Channel
    from collectors.shared.connections import pipeline_keys

    bars = list(Timeframe.objects.order_by("display_order").values_list("code", flat=True))
    channels = [Channel(f"BT{i:04d}-USDT", bar) for i in range(instruments) for bar in bars]

    async def main() -> None:
        config = RuntimeConfig(ws_url="ws://127.0.0.1:9/unused", keys=pipeline_keys(), collector_id="bench-tick",
                               channels_per_connection=settings.COLLECTOR_CHANNELS_PER_CONNECTION)
        runtime = CollectorRuntime(config, redis_factory=lambda: None,
                                   load_snapshot=lambda: SubscriptionSnapshot(frozenset(), {}))
        runtime.client.add(channels)  # not running: shards are assigned, no connection opens
        runtime.status_writer.carry(frozenset(channels), frozenset(channels))
        now = time.time()
        for channel in channels:
            runtime.subscribed_since[channel] = now
            runtime.ingest.channels[(channel.inst_id, channel.bar)] = ChannelTrack(
                open_ms=0, confirmed=True, last_message_at=now, last_confirmed_open=0)
        runtime.redis = aredis.Redis.from_url(settings.REDIS_URL)
        try:
            await runtime._publish_status()  # the first tick writes everything

            async def tick(seen: int) -> float:
                mark_seen(runtime, channels[:seen], time.time())
                started = time.process_time()
                await runtime._publish_status()
                return time.process_time() - started

            for label, seen in (("nothing changed", 0), (f"{changed:,} channels seen", changed),
                                (f"all {len(channels):,} seen", len(channels))):
                cpu = statistics.median([await tick(seen) for _ in range(rounds)])
                print(f"collector status tick, {len(channels):,} channels, {label:22} {cpu * 1000:8.1f} ms CPU")
        finally:
            await runtime.redis.aclose()

    asyncio.run(main())


def mark_seen(runtime: Any, channels: list, at: float) -> None:
    """What ingest notes when a message of each channel arrives (`Ingest.accept`)."""
    ingest = runtime.ingest
    for channel in channels:
        key = (channel.inst_id, channel.bar)
        track = ingest.channels[key]
        track.last_message_at = at
        ingest.seen[key] = track


# --- /metrics ---------------------------------------------------------------------------------------------


def measure_metrics(rounds: int) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from collectors.api.metrics import metrics_text

    def scrape() -> tuple[float, float, float, float, float]:
        with CaptureQueriesContext(connection) as queries:
            started, cpu = time.perf_counter(), time.process_time()
            text = metrics_text()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        return elapsed * 1000, cpu * 1000, len(text), series, len(queries)

    scrape()
    ms, cpu_ms, size, series, queries = median_of(rounds, scrape)
    print(f"/metrics scrape: {ms:8.1f} ms ({cpu_ms:.1f} ms CPU)  {size:,.0f} bytes  {series:,.0f} series  "
          f"{queries:.0f} queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    _environment()
    _create_database()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.DEBUG = False
    call_command("migrate", verbosity=0, interactive=False)
    started = time.perf_counter()
    build(args.instruments, 0, random.Random(14))
    print(f"built {args.instruments} instruments × 27 bars under {PREFIX} in {time.perf_counter() - started:.1f} s")
    measure_metrics(args.rounds)
    measure_health(args.rounds, args.changed)
    measure_tick(args.rounds, args.changed, args.instruments)


if __name__ == "__main__":
    main()
