"""Replica leases (COLLECTOR_REPLICAS=2), against the real Redis: each shard is held by two different collectors,
on different hosts where there are several, with one primary, and a lost replica is replaced within the TTL."""

from __future__ import annotations

import asyncio
import time

import redis as redis_lib
import redis.asyncio as aredis
from django.conf import settings

from collectors.live.leases import LEASES_LUA, LeaseChange, leases_balance
from okxproject.keys import Keys

URL = settings.REDIS_URL
SHARDS = 8
REPLICAS = 2


def balance(keys: Keys, cid: str, held: set[int], *, host: str = "h1", ttl_s: float = 15.0) -> LeaseChange:
    async def call() -> LeaseChange:
        client = aredis.Redis.from_url(URL)
        try:
            return await leases_balance(client.register_script(LEASES_LUA), keys, collector_id=cid, shards=SHARDS,
                                        ttl_s=ttl_s, held=held, replicas=REPLICAS, host=host)
        finally:
            await client.aclose()

    return asyncio.run(call())


def holders(keys: Keys) -> list[list[str | None]]:
    """Per shard, the collector in each slot."""
    client = redis_lib.Redis.from_url(URL, decode_responses=True)
    try:
        return [[client.get(keys.lease(shard, slot)) for slot in range(REPLICAS)] for shard in range(SHARDS)]
    finally:
        client.close()


class Fleet:
    """Collectors (id → host) that balance in turns, as their lease loops do, each with what it holds."""

    def __init__(self, keys: Keys, hosts: dict[str, str], ttl_s: float = 15.0):
        self.keys, self.hosts, self.ttl_s = keys, hosts, ttl_s
        self.held: dict[str, set[int]] = {cid: set() for cid in hosts}
        self.last: dict[str, LeaseChange] = {}

    def rounds(self, count: int = 4, only: list[str] | None = None) -> None:
        for _ in range(count):
            for cid in only or list(self.hosts):
                change = balance(self.keys, cid, self.held[cid], host=self.hosts[cid], ttl_s=self.ttl_s)
                self.held[cid] = set(change.owned)
                self.last[cid] = change


def assert_sound(table: list[list[str | None]]) -> None:
    for shard, slots in enumerate(table):
        named = [cid for cid in slots if cid]
        assert len(named) == len(set(named)), f"shard {shard} held twice by one collector: {slots}"


def test_two_collectors_each_hold_every_shard_once_and_every_shard_has_a_primary(keys):
    fleet = Fleet(keys, {"a": "h1", "b": "h2"})
    fleet.rounds()

    table = holders(keys)
    assert_sound(table)
    assert all(sorted(slots) == ["a", "b"] for slots in table)
    assert fleet.held == {"a": set(range(SHARDS)), "b": set(range(SHARDS))}
    primaries = set(fleet.last["a"].primary) | set(fleet.last["b"].primary)
    assert primaries == set(range(SHARDS))
    assert not set(fleet.last["a"].primary) & set(fleet.last["b"].primary)


def test_a_lone_collector_never_takes_a_second_slot_of_a_shard(keys):
    fleet = Fleet(keys, {"a": "h1"})
    fleet.rounds()

    assert [slots for slots in holders(keys)] == [["a", None]] * SHARDS
    assert fleet.last["a"].primary == list(range(SHARDS))


def test_replicas_spread_over_hosts_as_collectors_come(keys):
    # Two collectors on h1 first: each shard is held by both (no other host exists yet).
    fleet = Fleet(keys, {"a": "h1", "b": "h1"})
    fleet.rounds()
    assert all(sorted(slots) == ["a", "b"] for slots in holders(keys))

    # A collector on h2 joins: the h1 collectors give up co-located slots first, and h2 takes them.
    fleet.hosts["c"] = "h2"
    fleet.held["c"] = set()
    fleet.rounds(6)

    table = holders(keys)
    assert_sound(table)
    assert all(None not in slots for slots in table), table
    # Collectors of one host share OKX's per-IP connection limit: each learns how many they are.
    assert {cid: change.colocated for cid, change in fleet.last.items()} == {"a": 2, "b": 2, "c": 1}
    hosts = [{fleet.hosts[cid] for cid in slots} for slots in table]
    assert all(found == {"h1", "h2"} for found in hosts), table
    assert fleet.held["c"] == set(range(SHARDS))


def test_a_dead_replica_s_slots_go_to_the_survivor_s_primary_and_a_newcomer_within_the_ttl(keys):
    ttl_s = 0.5
    fleet = Fleet(keys, {"a": "h1", "b": "h2"}, ttl_s=ttl_s)
    fleet.rounds()
    a_primary = set(fleet.last["a"].primary)
    assert a_primary

    # a dies (no more heartbeats): its slots lapse after the TTL; b, still renewing, becomes primary of all.
    time.sleep(ttl_s * 1.2)
    fleet.rounds(1, only=["b"])
    assert fleet.last["b"].primary == list(range(SHARDS))

    # A new collector on h3 takes a's freed slots at its first balance.
    fleet.hosts["c"] = "h3"
    fleet.held["c"] = set()
    started = time.monotonic()
    fleet.rounds(1, only=["c"])
    assert time.monotonic() - started < ttl_s
    assert fleet.held["c"] == set(range(SHARDS))
    table = holders(keys)
    assert_sound(table)
    assert all(sorted(slots) == ["b", "c"] for slots in table)


def test_a_collector_restarted_under_its_id_adopts_its_slots_at_once(keys):
    fleet = Fleet(keys, {"a": "h1", "b": "h2"})
    fleet.rounds()
    before = holders(keys)

    # The worker restarts with the same id (a Celery worker's name): it held nothing in memory.
    change = balance(keys, "a", set(), host="h1")

    assert sorted(change.owned) == list(range(SHARDS))
    assert holders(keys) == before


def test_one_replica_keeps_the_lease_names_of_a_single_collector(keys):
    # COLLECTOR_REPLICAS=1 deployments read exactly what they read before replicas existed.
    assert keys.lease(3) == keys.lease(3, 0) == f"{keys.prefix}lease:shard:3"
    assert keys.lease(3, 1) == f"{keys.prefix}lease:shard:3:1"
