"""The collector's status publisher: every channel's row, sent in chunks, as readers parse it. Real Redis;
`keys` comes from tests/collectors/conftest.py."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis
from django.conf import settings

from collectors.okx.messages import Channel, ErrorEvent
from collectors.pipeline import runtime as runtime_module
from collectors.pipeline.ingest import ChannelTrack
from collectors.pipeline.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
from collectors.pipeline.status import channel_statuses


def test_every_channel_row_is_published_across_chunks(keys, redis, monkeypatch):
    monkeypatch.setattr(runtime_module, "STATUS_CHUNK_ROWS", 7)  # 50 channels: 8 chunks, the last one short
    channels = [Channel(f"I{i}-USDT", "1m") for i in range(50)]
    refused = Channel("NOPE-USDT", "1m")

    async def main() -> None:
        config = RuntimeConfig(ws_url="ws://127.0.0.1:9/unused", keys=keys, collector_id="status-test")
        runtime = CollectorRuntime(config, redis_factory=lambda: None,
                                   load_snapshot=lambda: SubscriptionSnapshot(frozenset(), {}))
        runtime.client.add(channels)  # not running: shards are assigned, no connection opens
        for channel in channels[:30]:
            runtime.subscribed_since[channel] = 1.0
        for channel in channels[:10]:
            runtime.ingest.channels[(channel.inst_id, channel.bar)] = ChannelTrack(
                open_ms=120_000, confirmed=True, last_message_at=2.5, last_confirmed_open=60_000)
        runtime.invalid[refused] = "60018 doesn't exist"
        runtime.client.invalid[refused] = ErrorEvent("60018", "doesn't exist")
        runtime.redis = aredis.Redis.from_url(settings.REDIS_URL)
        try:
            await runtime._publish_status()
        finally:
            await runtime.redis.aclose()

    asyncio.run(main())
    statuses = channel_statuses(redis, keys)
    assert len(statuses) == 51
    assert {s.state for key, s in statuses.items() if key in {(c.inst_id, c.bar) for c in channels[:30]}} == {
        "subscribed"}
    assert {statuses[(c.inst_id, c.bar)].state for c in channels[30:]} == {"pending"}
    invalid = statuses[("NOPE-USDT", "1m")]
    assert (invalid.state, invalid.error) == ("invalid", "60018 doesn't exist")
    tracked = statuses[("I0-USDT", "1m")]
    assert (tracked.last_message_at, tracked.last_confirmed_open, tracked.collector) == (2.5, 60_000, "status-test")
    assert statuses[("I40-USDT", "1m")].last_message_at is None
    # The per-bar index of confirmed opens covers every tracked channel, whichever chunk it was in.
    assert redis.zcard(keys.channel_confirmed("1m")) == 10
    assert redis.hget(keys.collector("status-test"), "channels") == b"50"


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
