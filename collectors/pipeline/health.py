"""The health check: each active subscription's freshness, and the removal of collectors that stopped.

(a) Every active subscription gets a status from its channel's status in Redis (written by the collector
runtime): `error` when OKX refused the channel, `live` when a message came within HEALTH_STALE_AFTER_S,
`stale` when the last one is older, `pending` while none has come. Only rows whose status or message
changed are written, in one bulk update; paused subscriptions are left as they are. Channel statuses that
no active subscription wants and that nobody has updated for HEALTH_STALE_AFTER_S are deleted (only if
unchanged since they were read), so the status hash does not grow with every subscription ever made.

(b) A collector whose heartbeat is older than three lease TTLs is dead: its ZSET entry and status hash go,
and so does every shard lease it still holds (compare-and-delete, so a lease a living collector has taken
since is never touched). Then "reconcile" on the control channel tells the living collectors to take the
shards now instead of at lease expiry. A collector that heartbeats between the read and the removal is
left alone: the removal re-checks its heartbeat inside the same Lua script.

(c) Collectors count WebSocket reconnects in their own status hash, since they started. Before removing
anything, the check adds what each collector's count grew since the last run to the shared counter
`reconnects` (remembering the value it added up to per collector), so the total survives collectors that
stop: the metrics endpoint exports it as okx_candles_ws_reconnects_total. Reconnects a collector makes in
the second before it stops, after its last status write, are not seen.

All parts are idempotent: a second run finds nothing to change (and nothing more to count).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import connection

from candles.models import Subscription, SubscriptionStatus
from collectors.pipeline.keys import Keys
from collectors.pipeline.status import ChannelStatus, alive_after, parse_channel_statuses

logger = logging.getLogger(__name__)

RECONCILE = "reconcile"
PENDING_MESSAGE = "waiting for the first message"
# Status changes of one run logged one by one; past this, one line sums them up.
TRANSITIONS_LOGGED = 20
SUBSCRIBING_MESSAGE = "subscribing"

# KEYS[1] = collectors ZSET, KEYS[2] = the collector's hash, KEYS[3..] = shard leases to check.
# ARGV[1] = collector id, ARGV[2] = heartbeat cutoff (epoch seconds).
# Returns -1 when the collector heartbeat since (it is alive: nothing is removed), else the leases released.
REMOVE_DEAD_COLLECTOR_LUA = """
local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if score and tonumber(score) >= tonumber(ARGV[2]) then
  return -1
end
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("DEL", KEYS[2])
local released = 0
for i = 3, #KEYS do
  if redis.call("GET", KEYS[i]) == ARGV[1] then
    redis.call("DEL", KEYS[i])
    released = released + 1
  end
end
return released
"""


# KEYS[1] = channel status hash; ARGV = field, value, ...: delete each field still holding that value.
PRUNE_CHANNEL_STATUS_LUA = """
local pruned = 0
for i = 1, #ARGV, 2 do
  if redis.call("HGET", KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call("HDEL", KEYS[1], ARGV[i])
    pruned = pruned + 1
  end
end
return pruned
"""


# KEYS[1] = counters, KEYS[2] = the roll-up's memory (HASH collector id -> count added up to),
# KEYS[3..] = collector status hashes; ARGV[1] = the status field, ARGV[2] = the counter, ARGV[3..] = the
# collector ids of KEYS[3..]. Adds the growth of each collector's field to the counter; forgets collectors
# that are gone. Returns what was added.
ROLL_UP_COUNTER_LUA = """
local added = 0
local present = {}
for i = 3, #KEYS do
  local id = ARGV[i]
  present[id] = true
  local current = tonumber(redis.call("HGET", KEYS[i], ARGV[1]))
  if current then
    local seen = tonumber(redis.call("HGET", KEYS[2], id)) or 0
    if current < seen then
      seen = 0  -- a new process under the same id (a reused pid): its count started again
    end
    if current > seen then
      added = added + current - seen
    end
    redis.call("HSET", KEYS[2], id, current)
  end
end
for _, id in ipairs(redis.call("HKEYS", KEYS[2])) do
  if not present[id] then
    redis.call("HDEL", KEYS[2], id)
  end
end
if added > 0 then
  redis.call("HINCRBY", KEYS[1], ARGV[2], added)
end
return added
"""
RECONNECTS_FIELD = "reconnects"  # in each collector's hash, and the name of the shared counter


def counted_key(keys: Keys, field_name: str) -> str:
    """HASH collector id -> the value of `field_name` already added to the shared counter."""
    return f"{keys.prefix}collectors:counted:{field_name}"


@dataclass(slots=True)
class HealthResult:
    checked: int = 0
    live: int = 0
    stale: int = 0
    pending: int = 0
    error: int = 0
    changed: int = 0
    dead_collectors: list[str] = field(default_factory=list)
    leases_released: int = 0
    reconcile_published: bool = False
    channel_statuses_pruned: int = 0
    reconnects_counted: int = 0

    def __str__(self) -> str:
        dead = f"{len(self.dead_collectors)} dead collectors removed ({', '.join(self.dead_collectors)}), " \
            if self.dead_collectors else ""
        return (f"{self.checked} subscriptions: {self.live} live, {self.stale} stale, {self.pending} pending, "
                f"{self.error} error, {self.changed} changed; {dead}{self.leases_released} leases released")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def subscription_health(channel: ChannelStatus | None, *, now: float, stale_after_s: float) -> tuple[str, str]:
    """The (status, status_message) of an active subscription whose channel status is `channel`.

    Messages depend only on the channel status, not on `now`, so an unchanged channel writes nothing.
    """
    if channel is None:
        return SubscriptionStatus.PENDING, PENDING_MESSAGE
    if channel.state == "invalid":
        return SubscriptionStatus.ERROR, channel.error or "OKX refused the channel (no reason given)"
    if channel.last_message_at is None:
        return SubscriptionStatus.PENDING, SUBSCRIBING_MESSAGE if channel.state == "pending" else PENDING_MESSAGE
    if now - channel.last_message_at <= stale_after_s:
        return SubscriptionStatus.LIVE, ""
    return SubscriptionStatus.STALE, f"no message since {_iso(channel.last_message_at)}"


def subscriptions_health_update(*, redis: Any, keys: Keys, now: float, result: HealthResult) -> None:
    """Part (a): set the status of every active subscription from its channel's status."""
    parsed = parse_channel_statuses(redis.hgetall(keys.channel_status).items())
    statuses = {(status.inst_id, status.bar): status for status in parsed.values()}
    stale_after_s = settings.HEALTH_STALE_AFTER_S
    # Subscriptions of expired or delisted instruments are ended, not unhealthy: until the end reaches them
    # (the sync, or subscriptions_end_finished before each health run), they are left out, raising no alarm.
    rows = Subscription.objects.filter(is_active=True, instrument__delisted_at__isnull=True).exclude(
        instrument__expires_at__lte=datetime.fromtimestamp(now, UTC),
    ).values_list(
        "id", "instrument__inst_id", "timeframe__code", "status", "status_message"
    )
    changed: list[tuple[int, str, str]] = []
    transitions: Counter[tuple[str, str]] = Counter()
    active: set[tuple[str, str]] = set()
    for sub_id, inst_id, bar, old_status, old_message in rows.iterator(chunk_size=2000):
        active.add((inst_id, bar))
        status, message = subscription_health(statuses.get((inst_id, bar)), now=now, stale_after_s=stale_after_s)
        result.checked += 1
        setattr(result, status, getattr(result, status) + 1)
        if (status, message) != (old_status, old_message):
            changed.append((sub_id, status, message))
            transitions[old_status, status] += 1
            if len(changed) <= TRANSITIONS_LOGGED:
                logger.info("subscription %s %s: %s -> %s %s", inst_id, bar, old_status, status, message)
    if len(changed) > TRANSITIONS_LOGGED:
        # Thousands of lines at once (every channel going live after a start) would drown what matters.
        logger.info("%d subscriptions changed status (the first %d logged above): %s", len(changed),
                    TRANSITIONS_LOGGED, ", ".join(f"{a} -> {b}: {n}" for (a, b), n in transitions.most_common()))
    if changed:
        result.changed = _statuses_write(changed)
    # Statuses of channels no active subscription wants, once nobody updates them: the hash stays bounded.
    leftovers = [
        (field_name, value) for (field_name, value), status in parsed.items()
        if (status.inst_id, status.bar) not in active
        and (status.last_message_at is None or now - status.last_message_at > stale_after_s)
    ]
    if leftovers:
        prune = redis.register_script(PRUNE_CHANNEL_STATUS_LUA)
        result.channel_statuses_pruned = int(prune(keys=[keys.channel_status],
                                                   args=[x for entry in leftovers for x in entry]))
        # Their entries in the worst-lag index go too (a channel subscribed again is re-added by its
        # collector's next status write, within seconds).
        by_bar: dict[str, list[str]] = {}
        for field_name, value in leftovers:
            status = parsed[(field_name, value)]
            by_bar.setdefault(status.bar, []).append(status.inst_id)
        pipe = redis.pipeline(transaction=False)
        for bar, inst_ids in by_bar.items():
            pipe.zrem(keys.channel_confirmed(bar), *inst_ids)
        pipe.execute()


def dead_collectors_remove(
    *, redis: Any, keys: Keys, now: float, result: HealthResult, lease_ttl_s: float | None = None
) -> None:
    """Part (b): remove collectors with an old heartbeat, release their leases, nudge the living ones."""
    cutoff = alive_after(now, lease_ttl_s)
    dead = [m.decode() if isinstance(m, bytes) else m
            for m in redis.zrangebyscore(keys.collectors, "-inf", f"({cutoff}")]
    if not dead:
        return
    remove = redis.register_script(REMOVE_DEAD_COLLECTOR_LUA)
    for collector_id in dead:
        shards = set(range(settings.COLLECTOR_SHARDS)) | _shards_of(redis, keys, collector_id)
        lease_keys = [keys.lease(n) for n in sorted(shards)]
        released = remove(keys=[keys.collectors, keys.collector(collector_id), *lease_keys],
                          args=[collector_id, repr(cutoff)])
        if released < 0:
            logger.info("collector %s heartbeat again; left alone", collector_id)
            continue
        result.dead_collectors.append(collector_id)
        result.leases_released += released
        logger.warning("collector %s stopped heartbeating; removed it and released %d shard leases",
                       collector_id, released)
    if result.dead_collectors:
        redis.hincrby(keys.counters, "collectors_removed", len(result.dead_collectors))
        redis.publish(keys.control, RECONCILE)
        result.reconcile_published = True


def _shards_of(redis: Any, keys: Keys, collector_id: str) -> set[int]:
    """Shards named in a collector's hash (covers shards beyond COLLECTOR_SHARDS after a resize)."""
    raw = redis.hget(keys.collector(collector_id), "shards")
    if raw is None:
        return set()
    try:
        shards = orjson.loads(raw)
    except orjson.JSONDecodeError:
        logger.warning("collector %s: shards is not JSON: %r", collector_id, raw)
        return set()
    if not isinstance(shards, list):
        return set()
    return {s for s in shards if isinstance(s, int) and not isinstance(s, bool) and s >= 0}


def collector_counters_roll_up(*, redis: Any, keys: Keys, result: HealthResult) -> None:
    """Part (c): add the growth of every registered collector's reconnect count to the shared counter."""
    members = [m.decode() if isinstance(m, bytes) else m for m in redis.zrange(keys.collectors, 0, -1)]
    roll_up = redis.register_script(ROLL_UP_COUNTER_LUA)
    # Run also with no collector left, so the memory of the ones that are gone is cleared.
    result.reconnects_counted = int(roll_up(
        keys=[keys.counters, counted_key(keys, RECONNECTS_FIELD), *(keys.collector(m) for m in members)],
        args=[RECONNECTS_FIELD, RECONNECTS_FIELD, *members],
    ))


# One statement for every changed row: Django's bulk_update writes CASE expressions of 500 rows a batch, and
# 27,000 subscriptions going live after a start took over a minute that way. Filtered on is_active: a
# subscription paused since the read keeps its status.
_WRITE_STATUSES = """
UPDATE candles_subscription s SET status = v.status, status_message = v.message, updated_at = now()
FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(messages)s::text[]) AS v(id, status, message)
WHERE s.id = v.id AND s.is_active
""".strip()


def _statuses_write(changed: list[tuple[int, str, str]]) -> int:
    ids, statuses, messages = zip(*changed, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(_WRITE_STATUSES, {"ids": list(ids), "statuses": list(statuses), "messages": list(messages)})
        return cursor.rowcount


def health_check(*, redis: Any, keys: Keys, now: float | None = None) -> HealthResult:
    """Mark active subscriptions live / stale / pending / error, count reconnects and remove dead collectors."""
    now = time.time() if now is None else now
    result = HealthResult()
    # Before any removal: a dead collector's last reported reconnects are still in its hash.
    collector_counters_roll_up(redis=redis, keys=keys, result=result)
    # Collectors first: taking over a dead collector's shards needs only Redis, and must not wait on PostgreSQL.
    dead_collectors_remove(redis=redis, keys=keys, now=now, result=result)
    subscriptions_health_update(redis=redis, keys=keys, now=now, result=result)
    return result
