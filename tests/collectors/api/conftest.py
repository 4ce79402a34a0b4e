"""Fixtures of the status, health and metrics endpoint tests: real Redis under a key prefix of the test's own,
and a writer of the pipeline's Redis state in the formats its writers use (collector runtime, flush, ingest).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import redis as redis_lib
from django.conf import settings
from django.test import override_settings

from okxproject.keys import Keys
from tests.support import LiveBuffer, candle_update, isolated_keys
from tests.support.channel_status import put_channel


class PipelineState:
    """Writes what the collectors, the flush and the health task write, under the test's key prefix."""

    def __init__(self, r: redis_lib.Redis, keys: Keys) -> None:
        self.r, self.keys = r, keys
        self.buffer = LiveBuffer(r, keys)

    def collector(self, collector_id: str, *, heartbeat_at: float | None = None, shards: list[int] | None = None,
                  reconnects: int = 0, messages: int = 0, channels: int = 0) -> None:
        """A collector's heartbeat and status hash, as CollectorRuntime._publish_status writes them."""
        at = time.time() if heartbeat_at is None else heartbeat_at
        shards = [0] if shards is None else shards
        self.r.zadd(self.keys.collectors, {collector_id: at})
        self.r.hset(self.keys.collector(collector_id), mapping={
            "id": collector_id, "host": "host-a", "pid": "4242", "started_at": at - 60, "heartbeat_at": at,
            "shards": orjson.dumps(shards),
            "connections": orjson.dumps([{
                "shard": shards[0] if shards else 0, "state": "open", "conn_id": "c0", "channels": channels,
                "subscribed": channels, "messages": messages, "reconnects": reconnects, "errors": 0,
                "last_message_at": at, "detail": "",
            }]),
            "messages": messages, "reconnects": reconnects, "errors": 0, "channels": channels,
        })

    def channel(self, inst_id: str, bar: str, *, last_message_at: float | None, last_confirmed_open: int | None,
                state: str = "subscribed", collector: str = "c1", reconnects: int | None = None,
                error: str | None = None) -> None:
        """A channel's status as the collector runtime writes it (row, per-bar indexes). `reconnects` is its
        collector's count, which readers take from the collector's status hash."""
        put_channel(self.r, self.keys, inst_id, bar, state=state, last_message_at=last_message_at,
                    last_confirmed_open=last_confirmed_open, error=error, collector=collector)
        if reconnects is not None:
            self.r.hset(self.keys.collector(collector), "reconnects", reconnects)

    def repair_report(self, *, updated_at: float | None = None, eta_s: float | None = 3600.0,
                      backlog: dict[str, tuple[int, int]] | None = None) -> None:
        """The repair scheduler's report at Keys.repair_backlog, in its contract's shape."""
        backlog = backlog or {"confirm": (12, 12), "outage": (3_000, 30), "history": (50_000, 500), "old": (0, 0)}
        self.r.set(self.keys.repair_backlog, orjson.dumps({
            "updated_at": time.time() if updated_at is None else updated_at,
            "backlog": {p: {"candles": c, "units": u} for p, (c, u) in backlog.items()},
            "drained_per_s": {"confirm": 2.0, "outage": 15.5, "history": 120.0, "old": 0.0},
            "eta_s": eta_s, "requests": {"candles": 40, "history": 300},
            "budget_per_s": {"candles": 20.0, "history": 10.0},
        }))

    def counters(self, **values: int) -> None:
        for name, value in values.items():
            self.r.hincrby(self.keys.counters, name, value)

    def last_flush(self, at: float, *, rows: int = 10, written: int = 10, rejected: int = 0,
                   duration_ms: int = 12) -> None:
        self.r.hset(self.keys.last_flush, mapping={"at": at, "rows": rows, "written": written,
                                                        "rejected": rejected, "duration_ms": duration_ms})

    def buffered(self, count: int, *, taken: int = 0) -> None:
        """`count` candles in the live buffer (written as a collector does) and `taken` in a flush's batch."""
        base = 1_705_431_600_000
        self.buffer.put_many([(candle_update(base + i * 60_000), 1) for i in range(count)])
        if taken:
            self.r.hset(self.keys.taken, mapping={f"BTC-USDT|1m|{i}": "1|1|[]" for i in range(taken)})

    def dead_letters(self, count: int) -> None:
        if count:
            self.r.lpush(self.keys.dead_letters, *[orjson.dumps({"reason": "test", "n": i}) for i in range(count)])

    def rest_needed(self, *members: str) -> None:
        """Closed candles waiting for REST's confirmation, as the repair scheduler last reported them."""
        report = {"updated_at": time.time(), "backlog": {"confirm": {"candles": len(members), "units": len(members)}}}
        self.r.set(self.keys.repair_backlog, orjson.dumps(report))


@pytest.fixture
def r() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def keys(r) -> Iterator[Keys]:
    """A key prefix of the test's own, which the endpoints use too (REDIS_KEY_PREFIX)."""
    with isolated_keys(r) as test_keys, override_settings(REDIS_KEY_PREFIX=test_keys.prefix):
        yield test_keys


@pytest.fixture
def state(r, keys) -> PipelineState:
    return PipelineState(r, keys)
