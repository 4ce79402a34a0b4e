"""The health check: each active subscription's freshness, and the removal of collectors that stopped.

(a) An active subscription's status comes from its channel's status in Redis (written by the collector
runtime): `error` when OKX refused the channel, `live` when a message came within HEALTH_STALE_AFTER_S,
`stale` when the last one is older, `pending` while none has come. A run costs what changed, not how many
subscriptions there are: it re-evaluates only
  * the subscriptions PostgreSQL does not have as `live` (pending, stale, error: normally few);
  * the live ones whose channel is quiet (the range of each bar's `channel_seen` ZSET older than the cutoff)
    or refused (each bar's `channel_refused` SET): a channel whose collector died falls into that range;
  * a slow audit: the next HEALTH_AUDIT_BATCH live subscriptions by id, in turn, so what the change-driven
    reads cannot see (a Redis emptied under a live subscription) is found within subscriptions ÷ batch runs.
Only rows whose status or message changed are written, in one bulk update; paused subscriptions are left as
they are. The collectors delete the status of a channel whose subscription is gone; a second audit walks the
status rows HEALTH_AUDIT_BATCH at a time (HSCAN) and deletes those no active subscription wants and nobody
has updated for HEALTH_STALE_AFTER_S (only if unchanged since they were read), with their ZSET entries, so
rows left by subscriptions that went while no collector ran do not pile up.

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

from candles.models import Subscription, SubscriptionStatus, Timeframe
from collectors.live.leases import release_slots_lua
from collectors.monitoring.parsing import Garbled
from collectors.monitoring.status import (
    ChannelStatus,
    alive_after,
    channel_field,
    channel_statuses,
    parse_channel_row,
    priced_bars,
    split_channel_field,
)
from okxproject.keys import Keys, priced_bar, split_priced_bar

logger = logging.getLogger(__name__)

RECONCILE = "reconcile"
PENDING_MESSAGE = "waiting for the first message"
# Status changes of one run logged one by one; past this, one line sums them up.
TRANSITIONS_LOGGED = 20
SUBSCRIBING_MESSAGE = "subscribing"

# KEYS[1] = collectors ZSET, KEYS[2] = the collector's hash, KEYS[3] = the lease hosts HASH,
# KEYS[4..] = shard lease slots to check.
# ARGV[1] = collector id, ARGV[2] = heartbeat cutoff (epoch seconds).
# Returns -1 when the collector heartbeat since (it is alive: nothing is removed), else the leases released.
REMOVE_DEAD_COLLECTOR_LUA = """
local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if score and tonumber(score) >= tonumber(ARGV[2]) then
  return -1
end
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("DEL", KEYS[2])
redis.call("HDEL", KEYS[3], ARGV[1])
""" + release_slots_lua(4)


# KEYS[1] = channel status hash; ARGV = field, value, ...: delete each field still holding that value.
# Returns the fields deleted.
PRUNE_CHANNEL_STATUS_LUA = """
local pruned = {}
for i = 1, #ARGV, 2 do
  if redis.call("HGET", KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call("HDEL", KEYS[1], ARGV[i])
    table.insert(pruned, ARGV[i])
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
    return keys.collectors_counted(field_name)


@dataclass(slots=True)
class HealthResult:
    # Subscriptions evaluated this run (not live in PostgreSQL, quiet or refused channels, those the audit
    # found unseen), and how they came out: the others are live and stay so.
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
    audited: int = 0  # live subscriptions the audit looked up (their channel's last message)

    def __str__(self) -> str:
        dead = f"{len(self.dead_collectors)} dead collectors removed ({', '.join(self.dead_collectors)}), " \
            if self.dead_collectors else ""
        return (f"{self.checked} subscriptions evaluated ({self.audited} audited): {self.live} live, "
                f"{self.stale} stale, {self.pending} pending, {self.error} error, {self.changed} changed; "
                f"{dead}{self.leases_released} leases released")


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


NOT_LIVE = (SubscriptionStatus.PENDING, SubscriptionStatus.STALE, SubscriptionStatus.ERROR)
SUBSCRIPTION_FIELDS = ("id", "instrument__inst_id", "timeframe__code", "instrument__price", "status",
                       "status_message")
# id, inst_id, priced bar (`keys.priced_bar`: `1m`, `mark:1m`), status, status_message
Candidate = tuple[int, str, str, str, str]

# The live subscriptions among (inst_id, bar, price) series, of instruments not ended (as `_active` below). The
# LATERAL subquery (its LIMIT keeps it from being flattened) looks each up in the unique (instrument, timeframe)
# index: a plain join was planned as a hash join over every subscription once the pairs were a thousand.
_LIVE_OF_PAIRS = """
SELECT s.id, i.inst_id, t.code, i.price, s.status, s.status_message
FROM unnest(%(insts)s::text[], %(bars)s::text[], %(prices)s::text[]) AS p(inst_id, bar, price)
JOIN candles_instrument i ON i.inst_id = p.inst_id AND i.price = p.price
JOIN candles_timeframe t ON t.code = p.bar
CROSS JOIN LATERAL (
  SELECT id, status, status_message FROM candles_subscription
  WHERE instrument_id = i.id AND timeframe_id = t.id AND is_active AND status = %(live)s LIMIT 1
) s
WHERE i.delisted_at IS NULL AND (i.expires_at IS NULL OR i.expires_at > %(now)s)
""".strip()

# Which of the (inst_id, bar, price) series an active subscription wants (looked up as above).
_ACTIVE_PAIRS = """
SELECT i.inst_id, t.code, i.price
FROM unnest(%(insts)s::text[], %(bars)s::text[], %(prices)s::text[]) AS p(inst_id, bar, price)
JOIN candles_instrument i ON i.inst_id = p.inst_id AND i.price = p.price
JOIN candles_timeframe t ON t.code = p.bar
CROSS JOIN LATERAL (
  SELECT 1 FROM candles_subscription WHERE instrument_id = i.id AND timeframe_id = t.id AND is_active LIMIT 1
) s
""".strip()


def _active(now: float) -> Any:
    # Subscriptions of expired or delisted instruments are ended, not unhealthy: until the end reaches them
    # (the sync, or subscriptions_end_finished before each health run), they are left out, raising no alarm.
    return Subscription.objects.filter(is_active=True, instrument__delisted_at__isnull=True).exclude(
        instrument__expires_at__lte=datetime.fromtimestamp(now, UTC),
    ).order_by()


def _pairs_query(sql: str, pairs: list[tuple[str, str]], **params: Any) -> list[tuple]:
    """Runs `sql` on (inst_id, priced bar) pairs, given to it as three arrays (inst_id, bar, price)."""
    insts = [inst_id for inst_id, _ in pairs]
    bars, prices = zip(*(split_priced_bar(bar) for _, bar in pairs), strict=True)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"insts": insts, "bars": list(bars), "prices": list(prices), **params})
        return cursor.fetchall()


def _candidate(row: tuple) -> Candidate:
    """(id, inst_id, bar, price, status, message) → a Candidate, whose bar part names a kind other than trade."""
    sub_id, inst_id, bar, price, status, message = row
    return sub_id, inst_id, priced_bar(bar, price), status, message


def _suspect_pairs(redis: Any, keys: Keys, bars: list[str], cutoff: float) -> list[tuple[str, str]]:
    """Channels quiet since before `cutoff` or refused by OKX: two commands per bar, one round trip."""
    pipe = redis.pipeline(transaction=False)
    for bar in bars:
        pipe.zrangebyscore(keys.channel_seen(bar), "-inf", f"({cutoff!r}")
        pipe.smembers(keys.channel_refused(bar))
    replies = pipe.execute()
    pairs: dict[tuple[str, str], None] = {}
    for bar, quiet, refused in zip(bars, replies[::2], replies[1::2], strict=True):
        for member in (*quiet, *refused):
            pairs[(member.decode() if isinstance(member, bytes) else member, bar)] = None
    return list(pairs)


def _audit_batch(redis: Any, keys: Keys, now: float, size: int) -> list[Candidate]:
    """The next `size` live subscriptions by id after the audit's cursor, going on from the first one when
    the ids run out: one query of two index range scans (the second runs only when the first falls short)."""
    if size <= 0:
        return []
    after = int(redis.hget(keys.health_audit, "subscription") or 0)
    live = _active(now).filter(status=SubscriptionStatus.LIVE).values_list(*SUBSCRIPTION_FIELDS)
    batch = [_candidate(row) for row in live.filter(id__gt=after).order_by("id")[:size]
             .union(live.filter(id__lte=after).order_by("id")[:size], all=True)[:size]]
    wrapped = [row[0] for row in batch if row[0] <= after]
    if batch:
        redis.hset(keys.health_audit, "subscription", max(wrapped) if wrapped else max(row[0] for row in batch))
    return batch


def _unseen(redis: Any, keys: Keys, rows: list[Candidate], cutoff: float) -> list[Candidate]:
    """Of live subscriptions, those whose channel has no message at or after `cutoff` in its bar's seen ZSET
    (one ZMSCORE per bar): the others are live still, unless refused, which the refused SETs tell."""
    by_bar = _by_bar((inst_id, bar) for _, inst_id, bar, _, _ in rows)
    if not by_bar:
        return []
    pipe = redis.pipeline(transaction=False)
    for bar, inst_ids in by_bar.items():
        pipe.zmscore(keys.channel_seen(bar), inst_ids)
    seen = {(inst_id, bar): score for (bar, inst_ids), scores in zip(by_bar.items(), pipe.execute(), strict=True)
            for inst_id, score in zip(inst_ids, scores, strict=True)}
    return [row for row in rows if (score := seen[(row[1], row[2])]) is None or float(score) < cutoff]


def subscriptions_health_update(*, redis: Any, keys: Keys, now: float, result: HealthResult) -> None:
    """Part (a): set the status of the active subscriptions whose channel's status may have changed."""
    stale_after_s = settings.HEALTH_STALE_AFTER_S
    codes = Timeframe.objects.order_by().values_list("code", flat=True)
    suspects = _suspect_pairs(redis, keys, priced_bars(codes), now - stale_after_s)
    candidates: dict[int, Candidate] = {row[0]: _candidate(row) for row in
                                        _active(now).filter(status__in=NOT_LIVE).values_list(*SUBSCRIPTION_FIELDS)}
    if suspects:
        for row in _pairs_query(_LIVE_OF_PAIRS, suspects, live=SubscriptionStatus.LIVE,
                                now=datetime.fromtimestamp(now, UTC)):
            candidates[row[0]] = _candidate(row)
    audit = [row for row in _audit_batch(redis, keys, now, settings.HEALTH_AUDIT_BATCH) if row[0] not in candidates]
    result.audited = len(audit)
    for row in _unseen(redis, keys, audit, now - stale_after_s):
        candidates[row[0]] = row
    channels = channel_statuses(redis, keys, [(inst_id, bar) for _, inst_id, bar, _, _ in candidates.values()])
    changed: list[tuple[int, str, str]] = []
    transitions: Counter[tuple[str, str]] = Counter()
    for sub_id, inst_id, bar, old_status, old_message in sorted(candidates.values(), key=lambda c: (c[1], c[2])):
        status, message = subscription_health(channels.get((inst_id, bar)), now=now, stale_after_s=stale_after_s)
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


def channel_statuses_prune(*, redis: Any, keys: Keys, now: float, result: HealthResult) -> None:
    """The rows audit: the next HEALTH_AUDIT_BATCH status rows (HSCAN), and those of them no active subscription
    wants and nobody updated for HEALTH_STALE_AFTER_S deleted with their ZSET entries (a channel subscribed
    again is written again by its collector when it takes it up)."""
    size = settings.HEALTH_AUDIT_BATCH
    if size <= 0:
        return
    cursor = int(redis.hget(keys.health_audit, "rows") or 0)
    cursor, entries = redis.hscan(keys.channel_status, cursor, count=size)
    redis.hset(keys.health_audit, "rows", cursor)
    read: dict[tuple[str, str], Any] = {}
    for field_name, value in entries.items():
        try:
            read[split_channel_field(field_name)] = value
        except Garbled:
            continue  # left for a human to see: the readers log it
    if not read:
        return
    wanted = {(inst_id, priced_bar(bar, price)) for inst_id, bar, price in _pairs_query(_ACTIVE_PAIRS, list(read))}
    unwanted = _by_bar(pair for pair in read if pair not in wanted and _parses(read[pair]))
    if not unwanted:
        return
    pipe = redis.pipeline(transaction=False)
    for bar, inst_ids in unwanted.items():
        pipe.zmscore(keys.channel_seen(bar), inst_ids)
    stale_after_s = settings.HEALTH_STALE_AFTER_S
    quiet = [(inst_id, bar) for (bar, inst_ids), scores in zip(unwanted.items(), pipe.execute(), strict=True)
             for inst_id, seen in zip(inst_ids, scores, strict=True)
             if seen is None or now - float(seen) > stale_after_s]
    if not quiet:
        return
    prune = redis.register_script(PRUNE_CHANNEL_STATUS_LUA)
    pruned = prune(keys=[keys.channel_status], args=[x for pair in quiet for x in (channel_field(*pair), read[pair])])
    result.channel_statuses_pruned = len(pruned)
    pipe = redis.pipeline(transaction=False)
    for bar, inst_ids in _by_bar(split_channel_field(field_name) for field_name in pruned).items():
        pipe.zrem(keys.channel_seen(bar), *inst_ids)
        pipe.zrem(keys.channel_confirmed(bar), *inst_ids)
        pipe.srem(keys.channel_refused(bar), *inst_ids)
    pipe.execute()


def _parses(value: Any) -> bool:
    """A garbled row is left for a human to see (the readers log it), never pruned."""
    try:
        parse_channel_row(value)
    except Garbled:
        return False
    return True


def _by_bar(pairs: Any) -> dict[str, list[str]]:
    by_bar: dict[str, list[str]] = {}
    for inst_id, bar in pairs:
        by_bar.setdefault(bar, []).append(inst_id)
    return by_bar


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
        lease_keys = [key for n in sorted(shards) for key in keys.lease_slots(n, settings.COLLECTOR_REPLICAS)]
        released = remove(keys=[keys.collectors, keys.collector(collector_id), keys.lease_hosts, *lease_keys],
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
    channel_statuses_prune(redis=redis, keys=keys, now=now, result=result)
    return result
