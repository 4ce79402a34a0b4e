"""Helpers for tests of the Redis pipeline, against the real Redis (no mocks).

    with isolated_keys(redis) as keys:          # Keys(prefix="test:<uuid>:"), every key deleted at the end
        buffer = LiveBuffer(redis, keys)
        buffer.put(candle_update(open_time_ms=..., close="101"), version=5)

`candle_update` builds a valid `CandleUpdate` (Decimals from strings); `LiveBuffer.put` writes it the way a
collector does, through `PUT_NEWEST_LUA`, so the buffer keeps the newest version. Private servers that a
test may stop and start are in `tests.support.private_services`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal

from redis import Redis

from collectors.okx.messages import CandleUpdate
from collectors.pipeline.buffer import PUT_NEWEST_LUA, encode_entry, flatten
from collectors.pipeline.keys import Keys

# 2024-01-16 19:00 UTC: on a minute and an hour boundary.
T0_MS = 1_705_431_600_000
MINUTE_MS = 60_000


def candle_update(
    open_time_ms: int = T0_MS,
    *,
    inst_id: str = "BTC-USDT",
    bar: str = "1m",
    open: str = "100",
    high: str = "110",
    low: str = "90",
    close: str = "105",
    vol: str = "1.5",
    vol_ccy: str = "157.5",
    vol_ccy_quote: str | None = "157.5",
    confirmed: bool = True,
) -> CandleUpdate:
    """A candle update as the OKX parser produces it; valid unless told otherwise."""
    return CandleUpdate(
        inst_id, bar, open_time_ms, Decimal(open), Decimal(high), Decimal(low), Decimal(close), Decimal(vol),
        Decimal(vol_ccy), None if vol_ccy_quote is None else Decimal(vol_ccy_quote), confirmed,
    )


def new_keys() -> Keys:
    """Keys under a prefix no other test or process uses."""
    return Keys(prefix=f"test:{uuid.uuid4().hex}:")


def delete_keys(redis: Redis, keys: Keys) -> int:
    """Delete every key under the prefix (the prefix holds no glob characters)."""
    names = list(redis.scan_iter(match=f"{keys.prefix}*", count=1000))
    return redis.delete(*names) if names else 0


@contextlib.contextmanager
def isolated_keys(redis: Redis) -> Iterator[Keys]:
    keys = new_keys()
    try:
        yield keys
    finally:
        delete_keys(redis, keys)


class LiveBuffer:
    """Writes candles into the live buffer the way a collector does (newest version wins)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._put = redis.register_script(PUT_NEWEST_LUA)

    def put(self, update: CandleUpdate, version: int) -> int:
        """Returns 1 when the entry was written, 0 when the buffer kept a newer (or confirmed) one."""
        return self.put_many([(update, version)])

    def put_many(self, updates: Iterable[tuple[CandleUpdate, int]]) -> int:
        entries = [encode_entry(update, version) for update, version in updates]
        return int(self._put(keys=[self.keys.live], args=flatten(entries))) if entries else 0

    def put_raw(self, field: str, value: str | bytes) -> None:
        """An entry as stored, bypassing the encoder (for entries a collector would never write)."""
        self.redis.hset(self.keys.live, field, value)

    def live(self) -> dict[bytes, bytes]:
        return self.redis.hgetall(self.keys.live)

    def taken(self) -> dict[bytes, bytes]:
        return self.redis.hgetall(self.keys.taken)

    def counters(self) -> dict[str, int]:
        return {name.decode(): int(value) for name, value in self.redis.hgetall(self.keys.counters).items()}
