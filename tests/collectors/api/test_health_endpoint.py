"""GET /api/v1/health (readiness) and /api/v1/health/live (liveness), against real services and outages."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis as redis_lib
from django.test import override_settings

from candles.models import Subscription, SubscriptionStatus, Timeframe
from collectors.api.probes import Probe
from collectors.api.system import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    Observation,
    SubscriptionSummary,
    health_evaluate,
)
from collectors.monitoring.replicas import ShardHolder, ShardReplicas
from collectors.shared.connections import pipeline_keys
from tests.collectors.api.servers import closed_port, silent_server
from tests.support.private_services import private_redis

pytestmark = pytest.mark.django_db
CHECKS = ["database", "redis", "broker", "collectors", "replicas", "buffer", "flush", "subscriptions"]


def subscribe(inst, bar: str = "1m", **fields) -> Subscription:
    return Subscription.objects.create(instrument=inst, timeframe=Timeframe.objects.get(code=bar), **fields)


def health(client) -> tuple[int, dict]:
    response = client.get("/api/v1/health")
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body["checks"]) == CHECKS
    assert body["failing"] == [name for name, check in body["checks"].items() if check["status"] == "fail"]
    return response.status_code, body


@pytest.fixture
def running(state, btc) -> None:
    """A working system: a live subscription, a collector heartbeating, candles flushed a moment ago."""
    subscribe(btc, status=SubscriptionStatus.LIVE)
    state.collector("c1")
    state.buffered(2)
    state.last_flush(time.time() - 0.5)


def test_a_working_system_is_healthy(client, running):
    status, body = health(client)

    assert status == 200
    assert body["status"] == HEALTHY
    assert body["failing"] == []
    assert {name: check["status"] for name, check in body["checks"].items()} == dict.fromkeys(CHECKS, "pass")
    assert body["checks"]["collectors"]["message"] == "1 alive of 1 registered"
    assert body["checks"]["subscriptions"]["message"] == "1 active subscription: 1 live"


def test_no_collector_alive_while_subscriptions_are_active_is_degraded(client, running, state):
    state.collector("c1", heartbeat_at=time.time() - 600)  # stopped heartbeating long ago

    status, body = health(client)

    assert (status, body["status"], body["failing"]) == (503, DEGRADED, ["collectors"])
    assert body["checks"]["collectors"]["message"] == \
        "no collector is alive while 1 subscription is active (1 registered)"


def test_without_active_subscriptions_no_collector_is_needed(client, state, btc):
    subscribe(btc, is_active=False)

    status, body = health(client)

    assert (status, body["status"]) == (200, HEALTHY)


@override_settings(BUFFER_ALARM_ENTRIES=2)
def test_a_buffer_above_the_alarm_is_degraded(client, running, state):
    state.buffered(3)

    status, body = health(client)

    assert (status, body["failing"]) == (503, ["buffer"])
    assert body["checks"]["buffer"]["message"] == "3 candles buffered, above BUFFER_ALARM_ENTRIES (2)"


@override_settings(FLUSH_INTERVAL_S=1.0)
def test_a_flush_that_stopped_while_candles_wait_is_degraded(client, running, state):
    state.last_flush(time.time() - 11)

    status, body = health(client)

    assert (status, body["failing"]) == (503, ["flush"])
    assert body["checks"]["flush"]["message"].startswith("last flush 11")
    assert body["checks"]["flush"]["message"].endswith("s ago (limit 10 s) while 2 candles wait")


def test_an_old_flush_with_nothing_waiting_is_fine(client, running, state, r, keys):
    state.last_flush(time.time() - 3600)
    r.delete(keys.live)

    assert health(client)[0] == 200


def test_candles_waiting_and_no_flush_ever_is_degraded(client, running, r, keys):
    r.delete(keys.last_flush)

    status, body = health(client)

    assert (status, body["failing"]) == (503, ["flush"])
    assert body["checks"]["flush"]["message"] == "no flush recorded while 2 candles wait"


@pytest.mark.parametrize("troubled", [SubscriptionStatus.STALE, SubscriptionStatus.ERROR])
def test_a_stale_or_failed_subscription_is_degraded(client, running, instrument, troubled):
    subscribe(instrument("ETH-USDT"), "1H", status=troubled)
    subscribe(instrument("SOL-USDT"), "1m", status=troubled, is_active=False)  # paused: not counted

    status, body = health(client)

    assert (status, body["status"], body["failing"]) == (503, DEGRADED, ["subscriptions"])
    assert body["checks"]["subscriptions"]["message"] == f"1 of 2 active stale or in error (ETH-USDT 1H {troubled})"


def test_a_broker_that_does_not_answer_is_degraded(client, running):
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        status, body = health(client)

    assert (status, body["status"], body["failing"]) == (503, DEGRADED, ["broker"])
    assert "Connection refused" in body["checks"]["broker"]["message"]


# --- Redis down and Redis hung -------------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator:
    """A private Redis as the project's Redis and broker: the test may stop it (never the machine's)."""
    with private_redis() as server, override_settings(REDIS_URL=server.url, CELERY_BROKER_URL=server.url):
        yield server


def test_redis_stopping_makes_it_unhealthy_within_two_seconds_and_healthy_again(client, own_redis, btc):
    subscribe(btc, status=SubscriptionStatus.LIVE)
    client_of_own = redis_lib.Redis.from_url(own_redis.url)
    client_of_own.zadd(pipeline_keys().collectors, {"c1": time.time()})
    client_of_own.close()
    assert health(client)[0] == 200

    own_redis.stop()
    started = time.monotonic()
    status, body = health(client)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert (status, body["status"]) == (503, UNHEALTHY)
    assert body["failing"] == ["redis", "broker"]
    assert "Connection refused" in body["checks"]["redis"]["message"]
    assert {name: body["checks"][name]["status"] for name in ("collectors", "buffer", "flush")} == \
        dict.fromkeys(("collectors", "buffer", "flush"), "unknown")
    assert body["checks"]["database"]["status"] == body["checks"]["subscriptions"]["status"] == "pass"

    own_redis.start()  # empty again: no collector registered
    status, body = health(client)
    assert (status, body["failing"]) == (503, ["collectors"])


def test_a_redis_that_hangs_is_unhealthy_within_two_seconds(client, btc):
    with silent_server() as port, override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0",
                                                    CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0"):
        started = time.monotonic()
        status, body = health(client)
        elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert (status, body["status"]) == (503, UNHEALTHY)
    assert set(body["failing"]) == {"redis", "broker"}


# --- who may call it ---------------------------------------------------------------------------------------


@override_settings(API_READ_AUTH=True)
def test_the_probes_need_no_credentials_even_when_reads_do(client, keys):
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/health/live").status_code == 200
    assert client.get("/api/v1/status").status_code in (401, 403)


def test_a_wrong_token_does_not_stop_a_probe(client, keys):
    headers = {"Authorization": "Token not-a-token"}

    assert client.get("/api/v1/health", headers=headers).status_code == 200
    assert client.get("/api/v1/health/live", headers=headers).status_code == 200


def test_liveness_touches_neither_the_database_nor_redis(client, django_assert_num_queries):
    client.cookies["sessionid"] = "a-session-that-would-need-a-lookup"
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"), django_assert_num_queries(0):
        response = client.get("/api/v1/health/live")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "alive"
    assert body["uptime_s"] >= 0
    assert set(body) == {"status", "timestamp", "pid", "uptime_s"}


# --- the rule itself ---------------------------------------------------------------------------------------


def up(name: str) -> Probe:
    return Probe(name, True, 1.0)


def down(name: str) -> Probe:
    return Probe(name, False, None, "refused")


def observation(*, database=True, redis=True, broker=True, alive=1, depth=0, flush_age=1.0,
                subscriptions=None, replicas=1, held=(1,)) -> Observation:
    """`held`: per shard, how many of its `replicas` slots a collector holds."""
    probes = {"database": (up if database else down)("database"), "redis": (up if redis else down)("redis"),
              "broker": (up if broker else down)("broker")}
    pipeline = {"buffer": {"live": depth, "taken": 0, "depth": depth}, "collectors": {"alive": alive, "total": alive},
                "last_flush": None if flush_age is None else {"age_s": flush_age},
                "shards": ShardReplicas(replicas, [[ShardHolder(slot, f"c{slot}", "h") for slot in range(n)]
                                                   for n in held])} if redis else None
    subs = SubscriptionSummary(subscriptions or {"live": 1}) if database else None
    return Observation(time.time(), probes, pipeline, subs)


@pytest.mark.parametrize(("case", "expected", "failing"), [
    (observation(), HEALTHY, []),
    (observation(database=False), UNHEALTHY, ["database"]),
    (observation(redis=False), UNHEALTHY, ["redis"]),
    (observation(database=False, redis=False, broker=False), UNHEALTHY, ["database", "redis", "broker"]),
    (observation(broker=False), DEGRADED, ["broker"]),
    (observation(alive=0), DEGRADED, ["collectors"]),
    (observation(alive=0, subscriptions={"pending": 0}), HEALTHY, []),
    (observation(depth=101), DEGRADED, ["buffer"]),
    (observation(depth=100, flush_age=10.0), HEALTHY, []),  # at the limit exactly: still fine
    (observation(depth=100, flush_age=10.001), DEGRADED, ["flush"]),
    (observation(depth=1, flush_age=None), DEGRADED, ["flush"]),
    (observation(depth=0, flush_age=None), HEALTHY, []),
    (observation(subscriptions={"live": 3, "stale": 1}), DEGRADED, ["subscriptions"]),
    (observation(subscriptions={"pending": 2}), HEALTHY, []),
    (observation(alive=0, depth=500, flush_age=60, subscriptions={"error": 1}), DEGRADED,
     ["collectors", "buffer", "flush", "subscriptions"]),
    (observation(replicas=2, held=(2, 2)), HEALTHY, []),
    (observation(replicas=2, held=(2, 1)), DEGRADED, ["replicas"]),  # the hot standby of shard 1 is gone
    (observation(replicas=2, held=(1, 0), subscriptions={"pending": 0}), HEALTHY, []),  # nothing to collect
    (observation(replicas=1, held=(1, 1)), HEALTHY, []),
])
def test_the_rule(case, expected, failing):
    result = health_evaluate(case, buffer_alarm_entries=100, flush_interval_s=1.0)

    assert (result.status, result.failing) == (expected, failing)


def hold(state, shard: int, slot: int, collector_id: str, host: str) -> None:
    """A lease slot held, as the collectors' lease script leaves it."""
    state.r.set(state.keys.lease(shard, slot), collector_id, px=60_000)
    state.r.hset(state.keys.lease_hosts, collector_id, host)


@override_settings(COLLECTOR_REPLICAS=2, COLLECTOR_SHARDS=2)
def test_a_shard_on_one_replica_degrades_the_system_and_two_on_each_is_healthy(client, running, state):
    state.collector("c2")
    for shard in (0, 1):
        hold(state, shard, 0, "c1", "host-a")
    hold(state, 0, 1, "c2", "host-b")

    status, body = health(client)
    assert (status, body["status"], body["failing"]) == (503, DEGRADED, ["replicas"])
    assert body["checks"]["replicas"]["message"] == "1 shard of 2 below 2 collectors (shard 1 on 1)"

    hold(state, 1, 1, "c2", "host-b")
    status, body = health(client)
    assert (status, body["status"], body["checks"]["replicas"]["message"]) == (
        200, HEALTHY, "every shard on 2 collectors")


@override_settings(COLLECTOR_REPLICAS=2, COLLECTOR_SHARDS=2)
def test_the_status_lists_each_shard_s_collectors_and_hosts(client, running, state):
    hold(state, 0, 0, "c1", "host-a")
    hold(state, 0, 1, "c2", "host-b")

    shards = client.get("/api/v1/status").json()["pipeline"]["shards"]

    assert shards == {"replicas": 2, "shards": 2, "short": [1],
                      "holders": [[{"slot": 0, "collector": "c1", "host": "host-a"},
                                   {"slot": 1, "collector": "c2", "host": "host-b"}], []]}
