"""A channel's status written to Redis the way the collector runtime writes it (`ChannelStatusWriter`): the row,
the per-bar seen and confirmed ZSETs (GT) and the refused SET. Imports Django through the pipeline: not for
subprocesses that set Django up later."""

from __future__ import annotations

from redis import Redis

from collectors.live.status_writer import channel_row
from okxproject.keys import Keys


def put_channel(redis: Redis, keys: Keys, inst_id: str, bar: str, *, state: str = "subscribed",
                last_message_at: float | None = None, last_confirmed_open: int | None = None,
                error: str | None = None, collector: str = "c1") -> None:
    redis.hset(keys.channel_status, f"{inst_id}|{bar}", channel_row(state, error, collector))
    if state == "invalid":
        redis.sadd(keys.channel_refused(bar), inst_id)
    else:
        redis.srem(keys.channel_refused(bar), inst_id)
    if last_message_at is not None:
        redis.zadd(keys.channel_seen(bar), {inst_id: last_message_at}, gt=True)
    if last_confirmed_open is not None:
        redis.zadd(keys.channel_confirmed(bar), {inst_id: last_confirmed_open}, gt=True)
