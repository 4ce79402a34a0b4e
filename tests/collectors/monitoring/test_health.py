"""Status readers and the health check, against the real Redis (a key prefix per test) and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from uuid import uuid4

import orjson
import pytest
import redis as redis_lib
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from candles.models import Subscription
from collectors.monitoring.health import (
    PRUNE_CHANNEL_STATUS_LUA,
    REMOVE_DEAD_COLLECTOR_LUA,
    counted_key,
    health_check,
)
from collectors.monitoring.repair_report import repair_report_parse
from collectors.monitoring.replicas import ShardHolder, ShardReplicas
from collectors.monitoring.status import (
    ChannelStatus,
    channel_statuses,
    collector_statuses,
    pipeline_overview,
)
from okxproject.keys import Keys
from tests.support.channel_status import put_channel

NOW = 1_700_000_000.0
TTL = settings.COLLECTOR_LEASE_TTL_S


@pytest.fixture
def keys() -> Keys:
    return Keys(prefix=f"test:{uuid4().hex}:")


@pytest.fixture
def r(keys) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    yield client
    try:
        stale = list(client.scan_iter(match=keys.prefix + "*"))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


def put_collector(r, keys, collector_id: str, heartbeat_at: float, shard_list: list[int], **fields) -> None:
    r.zadd(keys.collectors, {collector_id: heartbeat_at})
    mapping = {
        "id": collector_id, "host": "host-a", "pid": "4242", "started_at": str(heartbeat_at - 100),
        "heartbeat_at": str(heartbeat_at), "shards": orjson.dumps(shard_list),
        "connections": orjson.dumps([{
            "shard": shard_list[0] if shard_list else 0, "state": "open", "conn_id": "abc", "channels": 3,
            "subscribed": 3, "messages": 120, "reconnects": 1, "errors": 0, "last_message_at": heartbeat_at,
            "detail": None,
        }]),
        "messages": "120", "reconnects": "1", "errors": "0", "channels": "3",
    }
    mapping.update(fields)
    r.hset(keys.collector(collector_id), mapping=mapping)
    r.expire(keys.collector(collector_id), int(3 * TTL))


# --- status readers --------------------------------------------------------------------------------------


def test_channel_statuses_read_what_the_collector_writes(r, keys):
    put_collector(r, keys, "c1", NOW, [0], reconnects="2")
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW - 1.5, last_confirmed_open=1_699_999_940_000)
    put_channel(r, keys, "NOPE-USDT", "1H", state="invalid", error="60018 Wrong URL or channel:candle1H",
                collector="gone")

    statuses = channel_statuses(r, keys)

    # The reconnects are those of the collector named in the row (0 once its status hash expired).
    assert statuses == {
        ("BTC-USDT", "1m"): ChannelStatus("BTC-USDT", "1m", "subscribed", NOW - 1.5, 1_699_999_940_000, None,
                                          "c1", 2),
        ("NOPE-USDT", "1H"): ChannelStatus("NOPE-USDT", "1H", "invalid", None, None,
                                           "60018 Wrong URL or channel:candle1H", "gone", 0),
    }
    assert channel_statuses(r, keys, pairs=[("NOPE-USDT", "1H"), ("BTC-USDT", "1m")]) == statuses


def test_a_channel_seen_without_a_row_is_subscribed(r, keys):
    # Its row went with a subscription that ended while another collector took the channel up again.
    r.zadd(keys.channel_seen("1m"), {"BTC-USDT": NOW})
    r.zadd(keys.channel_confirmed("1m"), {"BTC-USDT": 1_699_999_940_000})

    assert channel_statuses(r, keys, pairs=[("BTC-USDT", "1m"), ("ETH-USDT", "1m")]) == {
        ("BTC-USDT", "1m"): ChannelStatus("BTC-USDT", "1m", "subscribed", NOW, 1_699_999_940_000, None, None, 0)}


def test_rows_of_the_older_format_are_read_without_their_figures(r, keys):
    r.hset(keys.channel_status, "BTC-USDT|1m", orjson.dumps({
        "last_message_at": NOW, "last_confirmed_open": 5, "state": "pending", "error": None, "collector": "c1",
        "reconnects": 3}))

    (status,) = channel_statuses(r, keys).values()

    assert (status.state, status.last_message_at, status.last_confirmed_open, status.reconnects) == \
        ("pending", None, None, 0)


def test_channel_statuses_skip_garbled_entries_with_one_log_line(r, keys, caplog):
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW)
    r.hset(keys.channel_status, mapping={
        "ETH-USDT|1m": b"{not json",
        "ETH-USDT|5m": b"[1, 2]",
        "ETH-USDT|15m": orjson.dumps({"state": "dancing"}),
        "ETH-USDT|1H": orjson.dumps({"state": "invalid", "error": 60018}),
        "ETH-USDT|4H": orjson.dumps({"state": "subscribed", "collector": ["c1"]}),
        "no-bar": orjson.dumps({"state": "subscribed"}),
        "ETH-USDT|1D": b"\xff\xfe",
    })
    r.zadd(keys.channel_seen("1m"), {"ETH-USDT": NOW})  # a garbled row is not guessed from the ZSETs

    with caplog.at_level(logging.WARNING, logger="collectors.monitoring.status"):
        statuses = channel_statuses(r, keys)

    assert list(statuses) == [("BTC-USDT", "1m")]
    warnings = [rec for rec in caplog.records if rec.name == "collectors.monitoring.status"]
    assert len(warnings) == 1
    assert "skipped 7 garbled channel statuses" in warnings[0].getMessage()


def test_channel_statuses_of_some_pairs_leave_out_unknown_ones(r, keys):
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW)
    put_channel(r, keys, "BTC-USDT", "1H", last_message_at=NOW)

    statuses = channel_statuses(r, keys, pairs=[("BTC-USDT", "1H"), ("ETH-USDT", "1m")])

    assert list(statuses) == [("BTC-USDT", "1H")]
    assert channel_statuses(r, keys, pairs=[]) == {}


def test_collector_statuses_tell_alive_from_dead(r, keys):
    put_collector(r, keys, "alive", NOW - 2, [0, 2])
    put_collector(r, keys, "dead", NOW - 3 * TTL - 1, [1])
    r.zadd(keys.collectors, {"expired": NOW - 1000})  # its hash expired long ago

    statuses = collector_statuses(r, keys, now=NOW)

    assert [(s.id, s.alive, s.details_missing) for s in statuses] == [
        ("alive", True, False), ("dead", False, False), ("expired", False, True),
    ]
    alive = statuses[0]
    assert (alive.host, alive.pid, alive.shards, alive.messages, alive.channels) == ("host-a", 4242, [0, 2], 120, 3)
    assert alive.heartbeat_at == NOW - 2
    assert alive.connections[0].state == "open"
    assert alive.connections[0].messages == 120


def test_collector_statuses_list_a_garbled_collector_without_details(r, keys, caplog):
    put_collector(r, keys, "good", NOW, [0])
    put_collector(r, keys, "bad-shards", NOW, [1], shards=b"{oops")
    put_collector(r, keys, "bad-conn", NOW, [2], connections=orjson.dumps(["nope"]))
    put_collector(r, keys, "bad-pid", NOW, [3], pid="many")

    with caplog.at_level(logging.WARNING, logger="collectors.monitoring.status"):
        statuses = {s.id: s for s in collector_statuses(r, keys, now=NOW)}

    assert set(statuses) == {"good", "bad-shards", "bad-conn", "bad-pid"}
    assert not statuses["good"].details_missing
    assert all(statuses[name].details_missing and statuses[name].alive
               for name in ("bad-shards", "bad-conn", "bad-pid"))
    assert "skipped 3 garbled collector statuses" in caplog.text


def test_pipeline_overview_sums_the_buffer_and_reads_counters(r, keys, caplog):
    r.hset(keys.live, mapping={"BTC-USDT|1m|0": "x", "BTC-USDT|1m|60000": "y"})
    r.hset(keys.taken, mapping={"BTC-USDT|1m|-60000": "z"})
    r.rpush(keys.dead_letters, "a", "b", "c")
    report = orjson.dumps({"updated_at": NOW, "backlog": {"confirm": {"candles": 1, "units": 1}}})
    r.set(keys.repair_backlog, report)
    r.hset(keys.counters, mapping={"messages": "1000", "candles_flushed": "40", "rest_429": "2", "junk": "x!"})
    r.hset(keys.last_flush, mapping={"at": str(NOW - 0.5), "rows": "3", "written": "3", "rejected": "0",
                                          "duration_ms": "12.5"})
    put_collector(r, keys, "alive", NOW - 1, [0])
    put_collector(r, keys, "dead", NOW - 3 * TTL - 1, [1])
    r.set(keys.lease(0), "alive")
    r.hset(keys.lease_hosts, "alive", "host-a")

    with caplog.at_level(logging.WARNING, logger="collectors.monitoring.status"):
        overview = pipeline_overview(r, keys, now=NOW)

    assert overview == {
        "buffer": {"live": 2, "taken": 1, "depth": 3},
        "dead_letters": 3,
        "rest_needed": 1,
        "repair": repair_report_parse(report),
        "counters": {"candles_flushed": 40, "messages": 1000, "rest_429": 2},
        "last_flush": {"at": NOW - 0.5, "rows": 3, "written": 3, "rejected": 0, "duration_ms": 12.5, "age_s": 0.5},
        "collectors": {"alive": 1, "total": 2},
        "shards": ShardReplicas(1, [[ShardHolder(0, "alive", "host-a")], *([] for _ in range(7))]),
    }
    assert "junk" in caplog.text


def test_pipeline_overview_of_an_empty_redis(r, keys):
    assert pipeline_overview(r, keys, now=NOW) == {
        "buffer": {"live": 0, "taken": 0, "depth": 0},
        "dead_letters": 0,
        "rest_needed": 0,
        "repair": None,
        "counters": {},
        "last_flush": None,
        "collectors": {"alive": 0, "total": 0},
        "shards": ShardReplicas(1, [[] for _ in range(8)]),
    }


# --- health: subscriptions -------------------------------------------------------------------------------


@pytest.fixture
def subscribe(btc, tf):
    def make(bar: str = "1m", inst=None, **fields) -> Subscription:
        return Subscription.objects.create(instrument=inst or btc, timeframe=tf(bar), **fields)

    return make


def statuses_of(*subs: Subscription) -> list[tuple[str, str]]:
    for sub in subs:
        sub.refresh_from_db()
    return [(sub.status, sub.status_message) for sub in subs]


def test_a_subscription_goes_live_then_stale_then_live_again(r, keys, subscribe):
    sub = subscribe("1m")
    stale_after = settings.HEALTH_STALE_AFTER_S

    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW - 1)
    result = health_check(redis=r, keys=keys, now=NOW)
    assert statuses_of(sub) == [("live", "")]
    assert (result.checked, result.live, result.changed) == (1, 1, 1)

    later = NOW + stale_after + 5
    result = health_check(redis=r, keys=keys, now=later)
    assert statuses_of(sub) == [("stale", "no message since 2023-11-14T22:13:19Z")]
    assert (result.stale, result.changed) == (1, 1)

    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=later - 0.2)
    result = health_check(redis=r, keys=keys, now=later)
    assert statuses_of(sub) == [("live", "")]
    assert (result.live, result.changed) == (1, 1)


def test_the_stale_limit_is_inclusive(r, keys, subscribe):
    sub = subscribe("1m")
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW - settings.HEALTH_STALE_AFTER_S)

    health_check(redis=r, keys=keys, now=NOW)

    assert statuses_of(sub) == [("live", "")]


def test_an_invalid_channel_is_an_error_with_okx_text(r, keys, subscribe):
    sub = subscribe("1m", status="live")
    put_channel(r, keys, "BTC-USDT", "1m", state="invalid", last_message_at=NOW,
                error="60018 Wrong URL or channel:candle1m,instId:BTC-USDT doesn't exist.")

    result = health_check(redis=r, keys=keys, now=NOW)

    assert statuses_of(sub) == [("error", "60018 Wrong URL or channel:candle1m,instId:BTC-USDT doesn't exist.")]
    assert result.error == 1


def test_channels_never_seen_or_without_messages_are_pending(r, keys, subscribe):
    unseen = subscribe("1m", status="live", status_message="")
    subscribing = subscribe("5m", status="stale", status_message="old")
    subscribed = subscribe("1H", status="live")
    put_channel(r, keys, "BTC-USDT", "5m", state="pending")
    put_channel(r, keys, "BTC-USDT", "1H", state="subscribed")

    result = health_check(redis=r, keys=keys, now=NOW)

    assert statuses_of(unseen, subscribing, subscribed) == [
        ("pending", "waiting for the first message"),
        ("pending", "subscribing"),
        ("pending", "waiting for the first message"),
    ]
    assert (result.pending, result.changed) == (3, 3)


def test_paused_subscriptions_are_left_untouched(r, keys, subscribe):
    paused = subscribe("1m", is_active=False, status="live", status_message="as it was")
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW - 10_000)
    before = Subscription.objects.get(pk=paused.pk).updated_at

    result = health_check(redis=r, keys=keys, now=NOW)

    paused.refresh_from_db()
    assert (paused.status, paused.status_message, paused.updated_at) == ("live", "as it was", before)
    assert result.checked == 0


def test_only_changed_rows_are_written_in_one_update(r, keys, subscribe, instrument):
    eth = instrument("ETH-USDT")
    steady = subscribe("1m")
    turning = subscribe("1m", inst=eth)
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW)
    put_channel(r, keys, "ETH-USDT", "1m", last_message_at=NOW)
    health_check(redis=r, keys=keys, now=NOW)
    steady_written = Subscription.objects.get(pk=steady.pk).updated_at

    put_channel(r, keys, "ETH-USDT", "1m", state="invalid", error="60018 gone")
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW + 1)  # still live: nothing to write
    with CaptureQueriesContext(connection) as queries:
        result = health_check(redis=r, keys=keys, now=NOW + 1)

    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert result.changed == 1
    assert statuses_of(steady, turning) == [("live", ""), ("error", "60018 gone")]
    assert steady.updated_at == steady_written

    with CaptureQueriesContext(connection) as queries:
        again = health_check(redis=r, keys=keys, now=NOW + 1)
    assert again.changed == 0
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]


@pytest.fixture
def no_audit(settings):
    """Only the change-driven checks: what they find is not the audit's doing."""
    settings.HEALTH_AUDIT_BATCH = 0


def test_a_live_channel_that_stops_being_seen_goes_stale_and_comes_back_live(r, keys, subscribe, no_audit):
    sub = subscribe("1m", status="live")
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW - 1)
    assert health_check(redis=r, keys=keys, now=NOW).checked == 0  # live and fresh: nothing to look at

    later = NOW + settings.HEALTH_STALE_AFTER_S + 5
    result = health_check(redis=r, keys=keys, now=later)

    assert statuses_of(sub) == [("stale", "no message since 2023-11-14T22:13:19Z")]
    assert (result.checked, result.stale, result.changed) == (1, 1, 1)
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=later)
    result = health_check(redis=r, keys=keys, now=later + 1)
    assert statuses_of(sub) == [("live", "")]
    assert (result.checked, result.live, result.changed) == (1, 1, 1)


def test_a_dead_collectors_channels_go_stale(r, keys, subscribe, instrument, no_audit):
    eth = instrument("ETH-USDT")
    subs = [subscribe("1m"), subscribe("1H"), subscribe("1m", inst=eth)]
    put_collector(r, keys, "dying", NOW, [0])
    for inst_id, bar in (("BTC-USDT", "1m"), ("BTC-USDT", "1H"), ("ETH-USDT", "1m")):
        put_channel(r, keys, inst_id, bar, last_message_at=NOW - 1, collector="dying")
    health_check(redis=r, keys=keys, now=NOW)
    assert {status for status, _ in statuses_of(*subs)} == {"live"}

    # Its heartbeat and its messages stopped together; nothing else is written.
    result = health_check(redis=r, keys=keys, now=NOW + 3 * TTL + 5)

    assert result.dead_collectors == ["dying"]
    assert statuses_of(*subs) == [("stale", "no message since 2023-11-14T22:13:19Z")] * 3
    assert channel_statuses(r, keys)[("BTC-USDT", "1m")].collector == "dying"  # as it last was


def test_a_live_channel_refused_since_is_an_error(r, keys, subscribe, no_audit):
    sub = subscribe("1m", status="live")
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW - 1)
    health_check(redis=r, keys=keys, now=NOW)
    put_channel(r, keys, "BTC-USDT", "1m", state="invalid", error="60018 gone", collector="c2")

    health_check(redis=r, keys=keys, now=NOW + 1)

    assert statuses_of(sub) == [("error", "60018 gone")]


def test_the_audit_finds_live_subscriptions_whose_channels_redis_forgot(r, keys, subscribe, instrument, settings):
    settings.HEALTH_AUDIT_BATCH = 2
    subs = [subscribe("1m", inst=instrument(f"T{k}-USDT"), status="live") for k in range(3)]

    first = health_check(redis=r, keys=keys, now=NOW)  # Redis was emptied: no entry anywhere
    second = health_check(redis=r, keys=keys, now=NOW)

    # The second run's batch: the one subscription still live in PostgreSQL.
    assert (first.audited, first.checked, first.changed) == (2, 2, 2)
    assert (second.audited, second.changed) == (1, 1)
    assert statuses_of(*subs) == [("pending", "waiting for the first message")] * 3


def _items(reply) -> int:
    return len(reply) if isinstance(reply, list | dict | set | tuple) else 1


class CountingRedis(redis_lib.Redis):
    """Counts the commands sent and the items of their replies (an entry of a list, hash or set; 1 for a
    scalar), pipelines' and scripts' included."""

    commands = 0
    items = 0

    def execute_command(self, *args, **options):
        self.commands += 1
        return super().execute_command(*args, **options)

    def parse_response(self, connection, command_name, **options):
        reply = super().parse_response(connection, command_name, **options)
        self.items += _items(reply)
        return reply

    def pipeline(self, transaction: bool = True, shard_hint=None):
        client = self

        class Pipeline(redis_lib.client.Pipeline):
            def execute(self, raise_on_error: bool = True):
                client.commands += len(self.command_stack)
                return super().execute(raise_on_error)

            def parse_response(self, connection, command_name, **options):
                reply = super().parse_response(connection, command_name, **options)
                client.items += _items(reply)
                return reply

        return Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def copies(model, template, count: int, name_column: str, names: str) -> None:
    """`count` copies of the `template` row in one INSERT … SELECT, `name_column` set to `names` % n (fast where
    the ORM's bulk_create takes seconds for 10,000 rows)."""
    columns = [f.column for f in model._meta.concrete_fields if f.column not in ("id", name_column)]
    listed = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({name_column}, {listed}) "
            f"SELECT format(%s, g), {listed} FROM {model._meta.db_table}, generate_series(1, %s) g WHERE id = %s",
            [names.replace("%d", "%s"), count, template.pk])


def unchanged_run_cost(keys: Keys, btc, tf, live_subscriptions: int) -> tuple[int, int, int, int, int]:
    """(subscriptions evaluated, audited, SQL queries, Redis commands, Redis reply items) of a health run over
    `live_subscriptions` live, fresh subscriptions of two bars, after the runs that settled them."""
    from candles.models import Instrument

    names = f"N{live_subscriptions}-%d-USDT"
    copies(Instrument, btc, live_subscriptions // 2, "inst_id", names)
    instruments = list(Instrument.objects.filter(inst_id__startswith=f"N{live_subscriptions}-"))
    bars = [tf("1m"), tf("1H")]
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO candles_subscription (instrument_id, timeframe_id, is_active, status, "
                       "status_message, webhook_url, webhook_failures, webhook_last_error, created_at, updated_at) "
                       "SELECT i.id, t.id, true, 'live', '', '', 0, '', now(), now() FROM candles_instrument i, "
                       "candles_timeframe t WHERE i.inst_id LIKE %s AND t.code IN ('1m', '1H')",
                       [f"N{live_subscriptions}-%"])
    r = CountingRedis.from_url(settings.REDIS_URL)
    try:
        for bar in bars:
            r.zadd(keys.channel_seen(bar.code), {inst.inst_id: NOW - 1 for inst in instruments})
            r.hset(keys.channel_status, mapping={f"{inst.inst_id}|{bar.code}": '{"state":"subscribed"}'
                                                 for inst in instruments})
        for _ in range(2):
            health_check(redis=r, keys=keys, now=NOW)
        r.commands = r.items = 0
        with CaptureQueriesContext(connection) as queries:
            result = health_check(redis=r, keys=keys, now=NOW)
        assert result.changed == 0
        return result.checked, result.audited, len(queries), r.commands, r.items
    finally:
        r.close()
        # Paused: the next measure's runs leave them out.
        Subscription.objects.filter(instrument__in=instruments).update(is_active=False)


def test_a_run_costs_the_same_over_10_or_10000_unchanged_live_subscriptions(btc, tf, settings):
    # The audit's share is a constant batch per run: the same for both here.
    settings.HEALTH_AUDIT_BATCH = 4
    small = Keys(prefix=f"test:{uuid4().hex}:")
    big = Keys(prefix=f"test:{uuid4().hex}:")
    try:
        small_cost = unchanged_run_cost(small, btc, tf, 10)
        big_cost = unchanged_run_cost(big, btc, tf, 10_000)
    finally:
        client = redis_lib.Redis.from_url(settings.REDIS_URL)
        for prefix in (small.prefix, big.prefix):
            doomed = list(client.scan_iter(match=prefix + "*"))
            if doomed:
                client.delete(*doomed)
        client.close()

    assert small_cost[:2] == (0, 4)  # none evaluated; the audit's batch looked up
    assert big_cost[:4] == small_cost[:4]  # the same, and the same SQL queries and Redis commands
    # Redis reply items: the rows audit's HSCAN returns a small hash whole, a large one a batch or so at a time.
    assert big_cost[4] <= small_cost[4] + 4


# --- health: collectors ----------------------------------------------------------------------------------


def test_a_dead_collectors_leases_go_a_living_ones_stay_and_collectors_are_told(r, keys, db):
    dead_at = NOW - 3 * TTL - 1
    put_collector(r, keys, "dead", dead_at, [0, 1, 2])
    put_collector(r, keys, "alive", NOW - 1, [3])
    r.set(keys.lease(0), "dead", px=60_000)
    r.set(keys.lease(1), "dead", px=60_000)
    r.set(keys.lease(2), "alive", px=60_000)  # taken over already: not the dead one's to lose
    r.set(keys.lease(3), "alive", px=60_000)
    r.set(keys.lease(settings.COLLECTOR_SHARDS + 5), "dead", px=60_000)  # beyond the shard count
    r.hset(keys.collector("dead"), "shards", orjson.dumps([0, 1, settings.COLLECTOR_SHARDS + 5]))
    pubsub = r.pubsub()
    pubsub.subscribe(keys.control)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"

    result = health_check(redis=r, keys=keys, now=NOW)

    assert result.dead_collectors == ["dead"]
    assert result.leases_released == 3
    assert result.reconcile_published
    assert [m.decode() for m in r.zrange(keys.collectors, 0, -1)] == ["alive"]
    assert not r.exists(keys.collector("dead"))
    assert r.exists(keys.collector("alive"))
    assert [r.get(keys.lease(n)) for n in range(4)] == [None, None, b"alive", b"alive"]
    assert r.get(keys.lease(settings.COLLECTOR_SHARDS + 5)) is None
    assert r.hget(keys.counters, "collectors_removed") == b"1"
    message = pubsub.get_message(timeout=2)
    assert message is not None
    assert (message["channel"], message["data"]) == (keys.control.encode(), b"reconcile")

    again = health_check(redis=r, keys=keys, now=NOW)
    assert (again.dead_collectors, again.leases_released, again.reconcile_published) == ([], 0, False)
    assert pubsub.get_message(timeout=0.3) is None
    pubsub.close()


def test_a_collector_that_heartbeats_again_before_removal_is_left_alone(r, keys):
    put_collector(r, keys, "slow", NOW, [0])
    r.set(keys.lease(0), "slow", px=60_000)
    remove = r.register_script(REMOVE_DEAD_COLLECTOR_LUA)

    # The health check read it as dead with a cutoff later than its (renewed) heartbeat: no.
    assert remove(keys=[keys.collectors, keys.collector("slow"), keys.lease(0)], args=["slow", repr(NOW)]) == -1

    assert r.zscore(keys.collectors, "slow") == NOW
    assert r.get(keys.lease(0)) == b"slow"
    assert r.exists(keys.collector("slow"))


def test_no_collectors_no_work(r, keys, db):
    result = health_check(redis=r, keys=keys, now=time.time())

    assert (result.checked, result.dead_collectors, result.reconcile_published) == (0, [], False)
    assert "0 subscriptions" in str(result)


def test_statuses_of_channels_no_active_subscription_wants_are_pruned_once_quiet(r, keys, subscribe):
    subscribe("1m")
    subscribe("5m", is_active=False)
    stale_after = settings.HEALTH_STALE_AFTER_S
    put_channel(r, keys, "BTC-USDT", "1m", last_message_at=NOW - 10_000)  # active: kept (and stale)
    put_channel(r, keys, "BTC-USDT", "5m", last_message_at=NOW - stale_after - 1)  # paused, quiet: pruned
    put_channel(r, keys, "BTC-USDT", "1H", last_message_at=NOW - 1)  # still collected a moment ago: kept
    put_channel(r, keys, "GONE-USDT", "1m", state="invalid", error="60018 gone")  # nobody wants it: pruned
    r.hset(keys.channel_status, "GARBLED|1m", b"{")  # left for a human to see in the log

    result = health_check(redis=r, keys=keys, now=NOW)

    assert result.channel_statuses_pruned == 2
    assert sorted(f.decode() for f in r.hkeys(keys.channel_status)) == ["BTC-USDT|1H", "BTC-USDT|1m", "GARBLED|1m"]
    # Their index entries went with them.
    assert r.zscore(keys.channel_seen("5m"), "BTC-USDT") is None
    assert not r.sismember(keys.channel_refused("1m"), "GONE-USDT")
    assert r.zscore(keys.channel_seen("1m"), "BTC-USDT") == NOW - 10_000
    assert health_check(redis=r, keys=keys, now=NOW).channel_statuses_pruned == 0


def test_the_rows_audit_walks_the_hash_a_batch_at_a_time(r, keys, settings, db):
    settings.HEALTH_AUDIT_BATCH = 100
    # Enough rows for a hashtable (not a listpack, which HSCAN returns whole): a full walk takes runs.
    for k in range(1_000):
        put_channel(r, keys, f"GONE{k}-USDT", "1m")

    pruned = [health_check(redis=r, keys=keys, now=NOW).channel_statuses_pruned for _ in range(3)]

    assert all(0 < n < 1_000 for n in pruned)
    assert r.hlen(keys.channel_status) == 1_000 - sum(pruned)


def test_a_channel_status_rewritten_since_it_was_read_is_not_pruned(r, keys):
    put_channel(r, keys, "BTC-USDT", "5m", last_message_at=NOW)
    prune = r.register_script(PRUNE_CHANNEL_STATUS_LUA)

    assert prune(keys=[keys.channel_status], args=["BTC-USDT|5m", b"what was read before"]) == []
    assert r.hexists(keys.channel_status, "BTC-USDT|5m")


# --- health: reconnects counted across collectors ------------------------------------------------------


def reconnects_total(r, keys) -> int:
    return int(r.hget(keys.counters, "reconnects") or 0)


def test_reconnects_are_added_up_by_how_much_each_collector_count_grew(r, keys, db):
    put_collector(r, keys, "a", NOW, [0], reconnects="1")
    put_collector(r, keys, "b", NOW, [1], reconnects="3")

    assert health_check(redis=r, keys=keys, now=NOW).reconnects_counted == 4
    r.hset(keys.collector("a"), "reconnects", "4")
    assert health_check(redis=r, keys=keys, now=NOW).reconnects_counted == 3
    assert health_check(redis=r, keys=keys, now=NOW).reconnects_counted == 0

    assert reconnects_total(r, keys) == 7


def test_a_dead_collectors_last_reconnects_are_counted_before_it_is_removed(r, keys, db):
    put_collector(r, keys, "a", NOW - 1, [0], reconnects="2")
    health_check(redis=r, keys=keys, now=NOW)
    r.hset(keys.collector("a"), "reconnects", "5")  # its last status write, then it died

    result = health_check(redis=r, keys=keys, now=NOW + 3 * TTL + 10)

    assert result.dead_collectors == ["a"]
    assert result.reconnects_counted == 3
    assert reconnects_total(r, keys) == 5
    # The next run forgets the collector that is gone.
    assert r.hgetall(counted_key(keys, "reconnects")) == {b"a": b"5"}
    health_check(redis=r, keys=keys, now=NOW + 3 * TTL + 10)
    assert r.hgetall(counted_key(keys, "reconnects")) == {}


def test_a_new_process_under_the_same_id_counts_from_zero_again(r, keys, db):
    put_collector(r, keys, "host:42", NOW, [0], reconnects="6")
    health_check(redis=r, keys=keys, now=NOW)
    put_collector(r, keys, "host:42", NOW + 1, [0], reconnects="2")  # pid 42 reused after a restart

    assert health_check(redis=r, keys=keys, now=NOW + 1).reconnects_counted == 2
    assert reconnects_total(r, keys) == 8


def test_a_collector_without_a_status_hash_adds_nothing(r, keys, db):
    r.zadd(keys.collectors, {"expired": NOW})  # its hash expired: nothing to read

    assert health_check(redis=r, keys=keys, now=NOW).reconnects_counted == 0
    assert reconnects_total(r, keys) == 0


def test_many_status_changes_are_summed_up_in_one_line_after_the_first_ones(r, keys, subscribe, instrument, caplog):
    names = [f"T{k}-USDT" for k in range(25)]
    for name in names:
        subscribe("1m", inst=instrument(name))
        put_channel(r, keys, name, "1m", last_message_at=NOW)

    with caplog.at_level(logging.INFO, logger="collectors.monitoring.health"):
        result = health_check(redis=r, keys=keys, now=NOW)

    assert result.changed == 25
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "collectors.monitoring.health"]
    assert sum(line.startswith("subscription T") for line in lines) == 20
    assert "25 subscriptions changed status (the first 20 logged above): pending -> live: 25" in lines
