"""Who holds each shard's lease slots, and on which host: the hot-standby picture for health, API and admin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from collectors.monitoring.parsing import text
from okxproject.keys import Keys


@dataclass(frozen=True, slots=True)
class ShardHolder:
    slot: int  # 0: the primary (writes the channels' status rows)
    collector: str
    host: str | None


@dataclass(frozen=True, slots=True)
class ShardReplicas:
    """Who holds each shard: `holders[shard]` lists the filled slots, slot 0 first."""

    replicas: int  # COLLECTOR_REPLICAS: slots per shard
    holders: list[list[ShardHolder]]

    @property
    def short(self) -> list[int]:
        """Shards held by fewer collectors than `replicas` (none held included)."""
        return [shard for shard, held in enumerate(self.holders) if len(held) < self.replicas]

    def as_dict(self) -> dict:
        return {"replicas": self.replicas, "shards": len(self.holders), "short": self.short,
                "holders": [[{"slot": h.slot, "collector": h.collector, "host": h.host} for h in held]
                            for held in self.holders]}


def replicas_queue(pipe: Any, keys: Keys, shards: int, replicas: int) -> None:
    """Queue the two reads of `replicas_parse`: every lease slot (one MGET) and the collectors' hosts."""
    pipe.mget([keys.lease(shard, slot) for shard in range(shards) for slot in range(replicas)])
    pipe.hgetall(keys.lease_hosts)


def replicas_parse(replies: Sequence[Any], replicas: int) -> ShardReplicas:
    slots, hosts_raw = replies
    hosts = {text(cid): text(host) for cid, host in (hosts_raw or {}).items()}
    holders: list[list[ShardHolder]] = []
    for start in range(0, len(slots), replicas):
        held = [ShardHolder(slot, text(cid), hosts.get(text(cid)))
                for slot, cid in enumerate(slots[start:start + replicas]) if cid is not None]
        holders.append(held)
    return ShardReplicas(replicas, holders)


def shard_replicas(redis: Any, keys: Keys, shards: int | None = None, replicas: int | None = None) -> ShardReplicas:
    """Who holds each shard's slots, and on which host, in one round trip (shards × replicas keys: a handful)."""
    shards = settings.COLLECTOR_SHARDS if shards is None else shards
    replicas = settings.COLLECTOR_REPLICAS if replicas is None else replicas
    pipe = redis.pipeline(transaction=False)
    replicas_queue(pipe, keys, shards, replicas)
    return replicas_parse(pipe.execute(), replicas)

