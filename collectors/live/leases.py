"""Shard leases in Redis: which collector holds which slot of which shard, renewed and balanced in one script.

A shard is a stable slice of the channels (`shard_of`); each has `replicas` slots, slot 0 the primary. The
runtime calls `leases_balance` every third of the lease TTL; `RELEASE_LUA` gives a shard's slots back on stop.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from collectors.okx.protocol import Channel
from okxproject.keys import Keys, channel_parts

# KEYS[1] = the collectors ZSET, KEYS[2] = this collector's status HASH, KEYS[3] = the lease hosts HASH,
# KEYS[4 + shard * R + slot] = the lease of that slot of that shard (R = replicas per shard);
# ARGV[1] = collector id, ARGV[2] = now (s), ARGV[3] = heartbeats older than this (s) are not live,
# ARGV[4] = lease TTL (ms), ARGV[5] = R, ARGV[6] = this collector's host, ARGV[7..] = shards held.
# Returns {owned, lost, released, taken, primary, {colocated}}: lists of shard numbers (primary: the owned shards
# whose slot 0 this collector holds), and the live collectors on this host, itself included. The status's `shards`
# field is written here, with the leases: a reader never sees a shard listed by a collector that no longer holds
# it because it had not republished its status yet.
#
# The rules: a collector holds at most one slot of a shard (two replicas are never one collector); its fair
# share is its part of its host's part of every slot (shards × R ÷ live hosts ÷ the host's live collectors; with
# one replica, shards ÷ live collectors, as before replicas), at most one per shard; it takes free slots of
# shards none of whose holders runs on its host first, and gives up first, beyond its share, slots of shards
# that another of its host's collectors also holds, so replicas spread over hosts as collectors come and go.
# Slot 0 is the primary (it writes the channels' status rows): a replica finding slot 0 free moves there, so a
# shard that has a collector has a primary. A slot still holding this collector's id (a restart under the same
# id) is adopted at once instead of waiting for its TTL.
LEASES_LUA = """
local cid, ttl, replicas, host = ARGV[1], ARGV[4], tonumber(ARGV[5]), ARGV[6]
redis.call("ZADD", KEYS[1], ARGV[2], cid)
redis.call("HSET", KEYS[3], cid, host)
local shards = (#KEYS - 3) / replicas
-- Live collectors per host. Live here: a heartbeat within one TTL (this script beats three times a TTL; a
-- collector silent longer has lost its leases too), so a dead one's slots count as free as soon as they lapse.
local recent = tonumber(ARGV[2]) - tonumber(ttl) / 1000
local per_host, hosts = {}, 0
for _, id in ipairs(redis.call("ZRANGEBYSCORE", KEYS[1], recent, "+inf")) do
  local at = (id == cid) and host or (redis.call("HGET", KEYS[3], id) or id)
  if not per_host[at] then per_host[at] = 0; hosts = hosts + 1 end
  per_host[at] = per_host[at] + 1
end
local fair
if replicas == 1 then
  fair = math.ceil(shards / math.max(1, redis.call("ZCOUNT", KEYS[1], ARGV[3], "+inf")))
else
  -- Each live host's part of the slots, shared by its collectors.
  fair = math.min(shards, math.ceil(shards * replicas / hosts / per_host[host]))
end
local function lease(shard, slot) return KEYS[4 + shard * replicas + slot] end
local function slot_of(shard)
  for slot = 0, replicas - 1 do
    if redis.call("GET", lease(shard, slot)) == cid then return slot end
  end
  return nil
end
local function shares_host(shard)
  for slot = 0, replicas - 1 do
    local holder = redis.call("GET", lease(shard, slot))
    if holder and holder ~= cid and redis.call("HGET", KEYS[3], holder) == host then return true end
  end
  return false
end
local colocated = {}
for shard = 0, shards - 1 do colocated[shard] = shares_host(shard) end
local held, lost, released, taken = {}, {}, {}, {}
local slots = {}
for i = 7, #ARGV do
  local shard = tonumber(ARGV[i])
  local slot = slot_of(shard)
  if slot then
    slots[shard] = slot
    table.insert(held, shard)
  else
    table.insert(lost, shard)
  end
end
for shard = 0, shards - 1 do
  if slots[shard] == nil then
    local slot = slot_of(shard)
    if slot then slots[shard] = slot; table.insert(held, shard) end
  end
end
-- Beyond the fair share: give up co-located shards first, then the highest-numbered.
local owned = {}
for _, shard in ipairs(held) do table.insert(owned, shard) end
table.sort(owned, function(a, b)
  if colocated[a] ~= colocated[b] then return colocated[b] end
  return a < b
end)
while #owned > fair do
  local shard = table.remove(owned)
  redis.call("DEL", lease(shard, slots[shard]))
  slots[shard] = nil
  table.insert(released, shard)
end
for pass = 1, 2 do
  for shard = 0, shards - 1 do
    if #owned >= fair then break end
    if slots[shard] == nil and (pass == 2 or not colocated[shard]) then
      for slot = 0, replicas - 1 do
        if redis.call("SET", lease(shard, slot), cid, "NX", "PX", ttl) then
          slots[shard] = slot
          table.insert(owned, shard)
          table.insert(taken, shard)
          break
        end
      end
    end
  end
end
local primary = {}
for _, shard in ipairs(owned) do
  local slot = slots[shard]
  if slot > 0 and redis.call("SET", lease(shard, 0), cid, "NX", "PX", ttl) then
    redis.call("DEL", lease(shard, slot))
    slot = 0
    slots[shard] = 0
  end
  redis.call("PEXPIRE", lease(shard, slot), ttl)
  if slot == 0 then table.insert(primary, shard) end
end
table.sort(owned)
table.sort(primary)
redis.call("HSET", KEYS[2], "shards", "[" .. table.concat(owned, ",") .. "]")
redis.call("PEXPIRE", KEYS[2], 3 * ttl)
return {owned, lost, released, taken, primary, {per_host[host]}}
"""


def release_slots_lua(first_key: int) -> str:
    """Lua that deletes the lease slots KEYS[first_key..] that ARGV[1] (a collector id) holds and returns how
    many it deleted: a collector's own release, and the health task's removal of a dead collector."""
    return f"""
local released = 0
for i = {first_key}, #KEYS do
  if redis.call("GET", KEYS[i]) == ARGV[1] then
    redis.call("DEL", KEYS[i])
    released = released + 1
  end
end
return released
"""


# KEYS = the slots of one shard; ARGV[1] = collector id: delete the slot this collector holds.
RELEASE_LUA = release_slots_lua(1)


def shard_of(channel: Channel, shards: int) -> int:
    """Stable across processes and restarts (unlike hash())."""
    return zlib.crc32("|".join(channel_parts(channel)).encode()) % shards


@dataclass(frozen=True, slots=True)
class LeaseChange:
    owned: list[int]  # shards held after the call
    lost: list[int]  # held before, no longer ours (expired, or taken over)
    released: list[int]  # given up beyond the fair share
    taken: list[int]  # free slots newly taken (or adopted: still ours from before a restart)
    primary: list[int]  # owned shards whose slot 0 is ours: this collector writes their channels' status rows
    colocated: int = 1  # live collectors on this host, this one included: they share OKX's per-IP limits


async def leases_balance(
    script: Callable, keys: Keys, *, collector_id: str, shards: int, ttl_s: float, held: set[int],
    replicas: int = 1, host: str | None = None,
) -> LeaseChange:
    """Heartbeat, renew the `held` leases and move to the fair share, in one round trip (`LEASES_LUA`).

    `script` is LEASES_LUA registered on an asyncio Redis client. A collector is live while its heartbeat is
    younger than three lease TTLs. With `replicas` > 1 each shard has that many slots, each held by a
    different collector, preferably on different hosts (`host`, by default this machine's name).
    """
    now = time.time()
    slots = [keys.lease(shard, slot) for shard in range(shards) for slot in range(replicas)]
    result = await script(
        keys=[keys.collectors, keys.collector(collector_id), keys.lease_hosts, *slots],
        args=[collector_id, now, now - 3 * ttl_s, int(ttl_s * 1000), replicas, host or socket.gethostname(),
              *sorted(held)],
    )
    *shard_lists, (colocated,) = result
    return LeaseChange(*([int(shard) for shard in part] for part in shard_lists), colocated=int(colocated))
