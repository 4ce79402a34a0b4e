"""The console's status line (`manage.py status_line`, every 10 s in `make run`): collectors, channels, updates
and flushes per second, flush lag, buffer, open gaps and REST budget use, read from the real Redis and
PostgreSQL; what is away is said on the line and the next line tries again."""

from __future__ import annotations

import asyncio
import io
import time

import orjson
import pytest
import redis as redis_lib
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from candles.bars import ms_to_datetime
from candles.models import Gap, Subscription, Timeframe
from collectors.monitoring.status_line import GapCounts, StatusReading, status_line, status_reading
from collectors.okx.ratelimit import RedisRateLimiter
from collectors.okx.rest_endpoints import CANDLES
from tests.support import T0_MS
from tests.support.ports import free_port

pytestmark = pytest.mark.django_db

MINUTE = 60_000


def put_collector(redis, keys, collector_id: str, *, channels: int, subscribed: int) -> None:
    now = time.time()
    redis.zadd(keys.collectors, {collector_id: now})
    redis.hset(keys.collector(collector_id), mapping={
        "id": collector_id, "host": "host-a", "pid": "1", "started_at": str(now - 60), "heartbeat_at": str(now),
        "shards": orjson.dumps([0]), "messages": "0", "reconnects": "0", "errors": "0", "channels": str(channels),
        "connections": orjson.dumps([{"shard": 0, "state": "open", "conn_id": "c1", "channels": channels,
                                      "subscribed": subscribed, "messages": 0, "reconnects": 0, "errors": 0,
                                      "last_message_at": now, "detail": None}]),
    })


def spend(keys, requests: int) -> None:
    async def take() -> None:
        aredis = redis_lib.asyncio.Redis.from_url(settings.REDIS_URL)
        limiter = RedisRateLimiter(aredis, prefix=keys.rate_limits)
        for _ in range(requests):
            await limiter.acquire(CANDLES.budget, CANDLES.limit, CANDLES.period_s)
        await aredis.aclose()
    asyncio.run(take())


def test_a_line_holds_every_figure_and_rates_between_two_readings(redis, keys, btc):
    put_collector(redis, keys, "c-1", channels=300, subscribed=298)
    put_collector(redis, keys, "c-2", channels=0, subscribed=0)
    redis.zadd(keys.collectors, {"c-2": time.time() - 3600})  # its heartbeat is an hour old: not alive
    redis.hset(keys.counters, mapping={"messages": 1000, "candles_flushed": 400})
    subscription = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))
    Gap.objects.create(subscription=subscription, start=ms_to_datetime(T0_MS), end=ms_to_datetime(T0_MS + 4 * MINUTE),
                       missing=5)
    now = time.time()
    first = status_reading(redis, keys, now=now)
    redis.hincrby(keys.counters, "messages", 250)
    redis.hincrby(keys.counters, "candles_flushed", 100)
    redis.hset(keys.last_flush, mapping={"at": now + 9.6, "rows": 100, "written": 100, "rejected": 0,
                                         "duration_ms": 12})
    redis.hset(keys.live, mapping={"a": "1", "b": "2"})
    spend(keys, 3)
    second = status_reading(redis, keys, now=now + 10)

    assert status_line(first) == (
        "collectors 1/2 · channels 298 (2 pending) · updates –/s · flushed –/s · flush lag none yet · buffer 0"
        " · open gaps 1 (5 candles) · REST idle")
    assert status_line(second, first) == (
        "collectors 1/2 · channels 298 (2 pending) · updates 25.0/s · flushed 10.0/s · flush lag 0.4 s · buffer 2"
        " · open gaps 1 (5 candles) · REST 8% (candles 3/40)")


def test_counters_that_went_back_give_no_rate_rather_than_a_negative_one():
    def reading(at: float, messages: int) -> StatusReading:
        return StatusReading(at=at, collectors_alive=1, collectors_total=1, subscribed=1, pending=0,
                             messages=messages, flushed=0, flush_age_s=None, buffer=0, budget=None,
                             gaps=GapCounts(0, 0))

    assert "updates –/s" in status_line(reading(10, 5), reading(0, 900))


def test_postgresql_away_blanks_only_the_gap_figures():
    line = status_line(StatusReading(at=0, collectors_alive=1, collectors_total=1, subscribed=3, pending=0,
                                     messages=0, flushed=0, flush_age_s=1.0, buffer=0, budget=None, gaps=None,
                                     gaps_error="OperationalError: connection refused"))
    assert "channels 3 (0 pending)" in line
    assert "open gaps ? (PostgreSQL: OperationalError: connection refused)" in line


def test_the_command_prints_a_line_per_interval(redis, keys):
    redis.hset(keys.counters, mapping={"messages": 10})
    out = io.StringIO()
    call_command("status_line", "--every", "0.05", "--count", "2", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("status ") and "collectors 0/0" in line for line in lines)
    assert "updates –/s" in lines[0]
    assert "updates 0.0/s" in lines[1]


def test_redis_away_is_said_on_the_line_and_the_next_line_tries_again(keys):
    out = io.StringIO()
    url = f"redis://127.0.0.1:{free_port()}/0"
    # With --count, the exit status says the last line could not be read (the console's healthcheck).
    with override_settings(REDIS_URL=url), pytest.raises(CommandError, match="unreachable"):
        call_command("status_line", "--every", "0.05", "--count", "2", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(f"Redis ({url}) unreachable" in line for line in lines)
