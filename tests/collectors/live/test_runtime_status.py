"""The collector's status tick: rows when a channel's state changes, the last message of the channels that had
one, deletions when a subscription is gone, and nothing when nothing changed. Real Redis; `keys` comes from
tests/collectors/conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine

import pytest
import redis.asyncio as aredis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from candles.bars import BarSpec
from candles.models import Timeframe
from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
from collectors.monitoring.status import channel_statuses
from collectors.okx.candle_rows import CandleText
from collectors.okx.messages import ErrorEvent
from collectors.okx.protocol import Channel

MINUTE_MS = 60_000
T0_MS = 1_705_431_600_000  # on a minute boundary
CHANNELS = [Channel(f"I{i}-USDT", "1m") for i in range(6)]
REFUSED = Channel("NOPE-USDT", "1m")


def candle(channel: Channel, open_ms: int, confirmed: bool) -> CandleText:
    return CandleText(channel.inst_id, channel.bar, open_ms, "100", "110", "90", "105", "1.5", "157.5", "157.5",
                      confirmed)


@pytest.fixture
def specs(db) -> dict[str, BarSpec]:
    return {tf.code: tf.spec for tf in Timeframe.objects.filter(code__in=["1m", "1H"])}


def run(keys, specs, steps: Callable[[CollectorRuntime], Coroutine]) -> None:
    """A runtime that is not running (no connection opens) whose status ticks `steps` drives by hand."""

    async def main() -> None:
        config = RuntimeConfig(ws_url="ws://127.0.0.1:9/unused", keys=keys, collector_id="status-test", shards=1)
        runtime = CollectorRuntime(config, redis_factory=lambda: None,
                                   load_snapshot=lambda: SubscriptionSnapshot(frozenset(), {}))
        runtime.ingest.specs = specs
        runtime.ingest.clock_us = lambda: (T0_MS + 2 * MINUTE_MS + 500) * 1000
        runtime.redis = aredis.Redis.from_url(settings.REDIS_URL)
        try:
            await steps(runtime)
        finally:
            await runtime.redis.aclose()

    asyncio.run(main())


def subscribe(runtime: CollectorRuntime, channels: list[Channel]) -> None:
    """Subscriptions loaded and the one shard owned, as reconcile and the leases leave them."""
    runtime.snapshot = SubscriptionSnapshot(frozenset(channels), {})
    runtime.owned = {0}
    runtime._collect_owned()


def test_the_first_tick_writes_each_channel_and_the_indexes(keys, redis, specs):
    async def steps(runtime: CollectorRuntime) -> None:
        subscribe(runtime, [*CHANNELS, REFUSED])
        runtime.client.handler.on_subscribed(CHANNELS[0])
        runtime.client.handler.on_subscribed(CHANNELS[1])
        runtime.client._mark_invalid(REFUSED, ErrorEvent("60018", "doesn't exist"))
        runtime.ingest.accept(candle(CHANNELS[0], T0_MS + MINUTE_MS, True), "")
        runtime.ingest.accept(candle(CHANNELS[0], T0_MS + 2 * MINUTE_MS, False), "")
        await runtime._publish_status()

    run(keys, specs, steps)

    statuses = channel_statuses(redis, keys)
    assert {pair: s.state for pair, s in statuses.items()} == {
        ("I0-USDT", "1m"): "subscribed", ("I1-USDT", "1m"): "subscribed", ("I2-USDT", "1m"): "pending",
        ("I3-USDT", "1m"): "pending", ("I4-USDT", "1m"): "pending", ("I5-USDT", "1m"): "pending",
        ("NOPE-USDT", "1m"): "invalid"}
    first = statuses[("I0-USDT", "1m")]
    assert (first.last_message_at, first.last_confirmed_open, first.collector) == (
        (T0_MS + 2 * MINUTE_MS + 500) / 1000, T0_MS + MINUTE_MS, "status-test")
    assert statuses[("I1-USDT", "1m")].last_message_at is None
    assert statuses[("NOPE-USDT", "1m")].error == "60018 doesn't exist"
    assert redis.smembers(keys.channel_refused("1m")) == {b"NOPE-USDT"}
    assert redis.zcard(keys.channel_seen("1m")) == 1
    assert redis.hget(keys.collector("status-test"), "channels") == b"6"  # the refused one is not collected


def test_an_unchanged_channel_is_not_written_again_and_only_seen_channels_move(keys, redis, specs):
    async def steps(runtime: CollectorRuntime) -> None:
        subscribe(runtime, CHANNELS)
        for channel in CHANNELS:
            runtime.client.handler.on_subscribed(channel)
            runtime.ingest.accept(candle(channel, T0_MS, False), "")
        await runtime._publish_status()
        # Marked by hand: a row written again would lose the mark; the seen index is cleared to show what moves.
        redis.hset(keys.channel_status, "I3-USDT|1m", '{"state":"subscribed","collector":"marked"}')
        redis.delete(keys.channel_seen("1m"))

        for channel in CHANNELS:
            runtime.client.handler.on_subscribed(channel)  # acks again after a reconnect: no change
        runtime.ingest.accept(candle(CHANNELS[4], T0_MS, False), "")
        await runtime._publish_status()

        assert redis.hget(keys.channel_status, "I3-USDT|1m") == b'{"state":"subscribed","collector":"marked"}'
        assert redis.zrange(keys.channel_seen("1m"), 0, -1) == [b"I4-USDT"]
        await runtime._publish_status()  # nothing at all since
        assert redis.zrange(keys.channel_seen("1m"), 0, -1) == [b"I4-USDT"]

    run(keys, specs, steps)


def test_a_channel_whose_subscription_ended_is_deleted_and_a_handed_over_one_is_kept(keys, redis, specs):
    async def steps(runtime: CollectorRuntime) -> None:
        subscribe(runtime, CHANNELS[:3])
        for channel in CHANNELS[:3]:
            runtime.client.handler.on_subscribed(channel)
            runtime.ingest.accept(candle(channel, T0_MS, True), "")
        await runtime._publish_status()

        # I0 is unsubscribed; I1's shard goes to another collector (still subscribed); I2 stays.
        runtime.status_writer.carry(frozenset(CHANNELS[2:3]), frozenset(CHANNELS[1:3]))
        await runtime._publish_status()

        assert sorted(redis.hkeys(keys.channel_status)) == [b"I1-USDT|1m", b"I2-USDT|1m"]
        assert sorted(redis.zrange(keys.channel_seen("1m"), 0, -1)) == [b"I1-USDT", b"I2-USDT"]
        assert sorted(redis.zrange(keys.channel_confirmed("1m"), 0, -1)) == [b"I1-USDT", b"I2-USDT"]

        # Subscribed again: written again, its last figures with it.
        runtime.status_writer.carry(frozenset(CHANNELS[:3]), frozenset(CHANNELS[:3]))
        await runtime._publish_status()
        again = channel_statuses(redis, keys, [("I0-USDT", "1m")])[("I0-USDT", "1m")]
        assert (again.state, again.last_confirmed_open) == ("subscribed", T0_MS)

    run(keys, specs, steps)


def test_what_a_failed_tick_carried_goes_with_the_next_one(keys, redis, specs):
    async def steps(runtime: CollectorRuntime) -> None:
        subscribe(runtime, CHANNELS[:2])
        runtime.client.handler.on_subscribed(CHANNELS[0])
        runtime.ingest.accept(candle(CHANNELS[0], T0_MS, True), "")
        working, runtime.redis = runtime.redis, aredis.Redis.from_url("redis://127.0.0.1:9/0")  # nothing there
        with pytest.raises(RedisConnectionError):
            await runtime._publish_status()
        await runtime.redis.aclose()
        runtime.redis = working

        await runtime._publish_status()

        statuses = channel_statuses(redis, keys)
        assert {pair: s.state for pair, s in statuses.items()} == {
            ("I0-USDT", "1m"): "subscribed", ("I1-USDT", "1m"): "pending"}
        assert statuses[("I0-USDT", "1m")].last_confirmed_open == T0_MS
        assert redis.zcard(keys.channel_seen("1m")) == 1

    run(keys, specs, steps)


def test_a_reload_with_the_same_subscriptions_keeps_the_channel_objects_held(keys):
    loads = iter([frozenset({Channel("A-USDT", "1m"), Channel("B-USDT", "1m")})] * 2
                 + [frozenset({Channel("A-USDT", "1m")})])

    async def main() -> None:
        config = RuntimeConfig(ws_url="ws://127.0.0.1:9/unused", keys=keys, collector_id="reload-test")
        runtime = CollectorRuntime(config, redis_factory=lambda: None,
                                   load_snapshot=lambda: SubscriptionSnapshot(frozenset(set(next(loads))), {}))
        await runtime.reconcile()
        first = runtime.snapshot.channels
        await runtime.reconcile()  # equal: the copy is dropped
        assert runtime.snapshot.channels is first
        await runtime.reconcile()  # changed: taken as loaded
        assert runtime.snapshot.channels == {Channel("A-USDT", "1m")}

    asyncio.run(main())


def test_the_channels_follow_the_subscriptions_and_the_shards_owned(keys):
    async def main() -> None:
        config = RuntimeConfig(ws_url="ws://127.0.0.1:9/unused", keys=keys, collector_id="own-test", shards=1)
        runtime = CollectorRuntime(config, redis_factory=lambda: None,
                                   load_snapshot=lambda: SubscriptionSnapshot(frozenset(CHANNELS[:2]), {}))
        await runtime.reconcile()
        assert runtime.client.channels == set() == runtime.status_writer.carried  # no shard yet
        runtime.owned = {0}
        runtime._collect_owned()
        assert runtime.client.channels == set(CHANNELS[:2]) == runtime.status_writer.carried
        runtime.owned = set()
        runtime._collect_owned()
        assert runtime.client.channels == set() == runtime.status_writer.carried
        assert runtime.status_writer.ended == set()  # handed over, not ended: their rows stay

    asyncio.run(main())


def test_odd_instrument_ids_reach_the_indexes_intact(keys, redis, specs):
    odd = [Channel('Q"UOTE\\BACK\nSLASH', "1m"), Channel("ÄÖ:12-USDT", "1m"), Channel("7:x", "1m")]

    async def steps(runtime: CollectorRuntime) -> None:
        subscribe(runtime, odd)
        for channel in odd:
            runtime.ingest.accept(candle(channel, T0_MS, True), "")
        await runtime._publish_status()

    run(keys, specs, steps)

    at = (T0_MS + 2 * MINUTE_MS + 500) / 1000
    assert {m.decode(): s for m, s in redis.zrange(keys.channel_seen("1m"), 0, -1, withscores=True)} == {
        channel.inst_id: at for channel in odd}
    assert {m.decode(): s for m, s in redis.zrange(keys.channel_confirmed("1m"), 0, -1, withscores=True)} == {
        channel.inst_id: T0_MS for channel in odd}


def test_thousands_of_channels_of_one_bar_are_written_in_chunks(keys, redis, specs):
    many = [Channel(f"M{i}-USDT", "1m") for i in range(4_500)]  # the script's ZADDs take 2,000 at a time

    async def steps(runtime: CollectorRuntime) -> None:
        subscribe(runtime, many)
        for channel in many:
            runtime.ingest.accept(candle(channel, T0_MS, False), "")
        await runtime._publish_status()

    run(keys, specs, steps)

    assert redis.zcard(keys.channel_seen("1m")) == 4_500
    assert redis.hlen(keys.channel_status) == 4_500


def test_a_push_in_flight_after_a_channel_was_dropped_does_not_bring_it_back(keys, redis, specs):
    async def steps(runtime: CollectorRuntime) -> None:
        subscribe(runtime, CHANNELS[:2])
        await runtime._publish_status()
        subscribe(runtime, CHANNELS[1:2])  # I0's subscription ended
        runtime.ingest.accept(candle(CHANNELS[0], T0_MS, True), "")  # its last push, already on the wire
        runtime.ingest.accept(candle(CHANNELS[1], T0_MS, True), "")
        await runtime._publish_status()

    run(keys, specs, steps)

    assert redis.zrange(keys.channel_seen("1m"), 0, -1) == [b"I1-USDT"]
    assert redis.zrange(keys.channel_confirmed("1m"), 0, -1) == [b"I1-USDT"]
    assert redis.hkeys(keys.channel_status) == [b"I1-USDT|1m"]
