"""Shard leases of the collector runtime, against the real Redis: one owner per shard, fair shares, and leases
that survive a slow subscription load. `keys` (a prefix of the test's own) comes from tests/collectors/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis as redis_lib
import redis.asyncio as aredis
from django.conf import settings

from collectors.live.leases import LEASES_LUA, LeaseChange, leases_balance
from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
from okxproject.keys import Keys
from tests.support.private_services import free_port

URL = settings.REDIS_URL  # the Redis the shared `keys` fixture cleans
SHARDS = 8


def balance(keys: Keys, collector_id: str, held: set[int], ttl_s: float = 15.0) -> LeaseChange:
    async def call() -> LeaseChange:
        client = aredis.Redis.from_url(URL)
        try:
            return await leases_balance(client.register_script(LEASES_LUA), keys, collector_id=collector_id,
                                        shards=SHARDS, ttl_s=ttl_s, held=held)
        finally:
            await client.aclose()

    return asyncio.run(call())


def owners(keys: Keys) -> list[str | None]:
    client = redis_lib.Redis.from_url(URL, decode_responses=True)
    try:
        return [client.get(keys.lease(shard)) for shard in range(SHARDS)]
    finally:
        client.close()


def test_a_lone_collector_takes_every_shard_and_keeps_them(keys):
    first = balance(keys, "a", set())
    assert (first.owned, first.taken, first.lost, first.released) == (list(range(SHARDS)), list(range(SHARDS)), [], [])

    again = balance(keys, "a", set(first.owned))
    assert (again.owned, again.taken, again.lost, again.released) == (list(range(SHARDS)), [], [], [])
    assert owners(keys) == ["a"] * SHARDS


def test_a_second_collector_gets_half_and_no_shard_ever_has_two_owners(keys):
    a = balance(keys, "a", set())
    b = balance(keys, "b", set())  # its heartbeat is counted, but every shard is still a's
    assert b.owned == []

    a = balance(keys, "a", set(a.owned))
    assert sorted(a.released) == [4, 5, 6, 7]
    assert a.owned == [0, 1, 2, 3]
    b = balance(keys, "b", set(b.owned))
    assert b.taken == [4, 5, 6, 7]
    assert owners(keys) == ["a"] * 4 + ["b"] * 4
    assert not set(a.owned) & set(b.owned)


def listed_shards(keys: Keys, collector_id: str) -> list[int] | None:
    client = redis_lib.Redis.from_url(URL)
    try:
        raw = client.hget(keys.collector(collector_id), "shards")
    finally:
        client.close()
    return None if raw is None else json.loads(raw)


def test_each_collectors_status_lists_its_shards_with_the_leases_so_no_reader_sees_one_twice(keys):
    # The status's list is written by the lease script itself: when b takes a shard, a's list had already
    # dropped it, in the same script run that released it.
    a = balance(keys, "a", set())
    b = balance(keys, "b", set())
    assert (listed_shards(keys, "a"), listed_shards(keys, "b")) == (a.owned, [])

    a = balance(keys, "a", set(a.owned))
    assert (listed_shards(keys, "a"), listed_shards(keys, "b")) == ([0, 1, 2, 3], [])
    b = balance(keys, "b", set(b.owned))
    assert (listed_shards(keys, "a"), listed_shards(keys, "b")) == ([0, 1, 2, 3], [4, 5, 6, 7])


def test_a_lease_that_expired_or_was_taken_over_is_dropped_at_once(keys):
    a = balance(keys, "a", set(), ttl_s=0.3)
    time.sleep(0.4)  # every lease lapsed: another collector took shard 0
    redis_lib.Redis.from_url(URL).set(keys.lease(0), "b", px=60_000)

    again = balance(keys, "a", set(a.owned), ttl_s=0.3)

    assert 0 in again.lost
    assert 0 not in again.owned
    assert owners(keys)[0] == "b"


def test_leases_stay_held_while_loading_the_subscriptions_takes_longer_than_their_ttl(keys, caplog):
    ttl_s = 0.6

    def slow_load() -> SubscriptionSnapshot:
        time.sleep(3 * ttl_s)  # a database slow to answer
        return SubscriptionSnapshot(channels=frozenset(), specs={})

    config = RuntimeConfig(ws_url=f"ws://127.0.0.1:{free_port()}/ws/v5/business", keys=keys, shards=SHARDS,
                           lease_ttl_s=ttl_s, reconcile_s=0.1, collector_id="slow-db")
    runtime = CollectorRuntime(config, redis_factory=lambda: aredis.Redis.from_url(URL), load_snapshot=slow_load)
    seen: list[list[str | None]] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        for _ in range(12):
            await asyncio.sleep(ttl_s / 2)
            seen.append(await asyncio.to_thread(owners, keys))
        stop.set()
        await asyncio.wait_for(task, 20)

    with caplog.at_level(logging.WARNING, logger="collectors.live.runtime"):
        asyncio.run(scenario())

    assert seen[1:] == [["slow-db"] * SHARDS] * (len(seen) - 1)
    assert "lost the lease" not in caplog.text
