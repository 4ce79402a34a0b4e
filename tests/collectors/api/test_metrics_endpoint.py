"""GET /api/v1/metrics against a private Redis and the real PostgreSQL: the values are what was written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis as redis_lib
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from candles.bars import ms_to_datetime
from candles.models import Gap, GapState, Instrument, Subscription, SubscriptionStatus, Timeframe
from candles.retention import retention_plan
from collectors.monitoring import metrics as m
from tests.collectors.api.exposition import parse
from tests.support.private_services import private_redis

pytestmark = pytest.mark.django_db
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
ODD = 'Q"UOTE\\BACK\nSLASH'  # stored as an instId: label values must be escaped
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def server():
    with private_redis() as redis_server:
        yield redis_server


@pytest.fixture
def r(server) -> Iterator[redis_lib.Redis]:
    """The private Redis is the project's Redis (and broker) for the test."""
    if not server.running():
        server.start()
    client = redis_lib.Redis.from_url(server.url)
    with override_settings(REDIS_URL=server.url, CELERY_BROKER_URL=server.url):
        yield client
    client.close()


def scrape(client, **headers) -> dict[str, object]:
    response = client.get("/api/v1/metrics", headers={"Accept": PROMETHEUS_ACCEPT, **headers})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse(response.content.decode())
    assert list(families) == list(m.METRIC_NAMES)  # every family, in the catalogue's order
    return families


def subscribe(inst: Instrument, bar: str, **fields) -> Subscription:
    return Subscription.objects.create(instrument=inst, timeframe=Timeframe.objects.get(code=bar), **fields)


def gap(sub: Subscription, state: str, missing: int, hours_ago: int) -> Gap:
    start = timezone.now() - timedelta(hours=hours_ago)
    return Gap.objects.create(subscription=sub, start=start, end=start + timedelta(minutes=missing - 1),
                              missing=missing, state=state)


@pytest.fixture
def system(state, instrument) -> dict[str, float]:
    """Counters, buffer, flush and collectors as the processes write them; subscriptions with their channels."""
    state.counters(messages=1234, candle_updates=1000, candles_flushed=900, flush_errors=2, dead_letters=7,
                   dead_letters_trimmed=1, missed_confirms=3, reconnects=5, collectors_removed=1, gaps_filled=4,
                   rest_requests=50, rest_retries=6, rest_rate_limited=5, flush_runs=30, flush_duration_ms=4500,
                   flush_requests_sent=12, flush_requests=10, flush_request_wait_ms=500)
    state.buffered(3, taken=2)
    state.dead_letters(4)
    state.rest_needed("BTC-USDT|1m|0", "BTC-USDT|1m|60000")
    flushed_at = time.time() - 0.25
    state.last_flush(flushed_at)
    now = time.time()
    state.collector("alive", heartbeat_at=now)
    state.collector("dead", heartbeat_at=now - 1000)

    btc, odd = instrument("BTC-USDT"), instrument(ODD)
    minute_ms = int(now * 1000) // MINUTE_MS * MINUTE_MS
    live = subscribe(btc, "1m", status=SubscriptionStatus.LIVE)
    behind = subscribe(btc, "1H", status=SubscriptionStatus.STALE)
    subscribe(odd, "1m", status=SubscriptionStatus.LIVE)
    subscribe(odd, "1H", is_active=False, status=SubscriptionStatus.LIVE)
    subscribe(btc, "1D", status=SubscriptionStatus.ERROR)
    subscribe(btc, "1s")  # pending, no channel status yet
    # BTC-USDT 1m confirmed its previous minute: no lag. The odd one's last confirmed candle opened 10
    # minutes ago, so the next one closed 8 minutes ago; its last message is 100 s old: quiet.
    state.channel("BTC-USDT", "1m", last_message_at=now - 2, last_confirmed_open=minute_ms - MINUTE_MS)
    state.channel(ODD, "1m", last_message_at=now - 100, last_confirmed_open=minute_ms - 10 * MINUTE_MS)
    state.channel("BTC-USDT", "1H", last_message_at=None, last_confirmed_open=None, state="pending")
    state.channel("BTC-USDT", "1D", last_message_at=None, last_confirmed_open=None, state="invalid",
                  error="60018 no such channel")
    for state_name, missing, hours_ago, sub in [
        (GapState.OPEN, 10, 1, live), (GapState.OPEN, 5, 2, live), (GapState.FILLING, 3, 3, live),
        (GapState.FILLED, 7, 4, live), (GapState.FILLED, 7, 5, live), (GapState.FILLED, 7, 6, behind),
        (GapState.UNFILLABLE, 100, 7, behind),
    ]:
        gap(sub, state_name, missing, hours_ago)
    return {"now": now, "flushed_at": flushed_at, "minute_ms": minute_ms}


def test_every_value_is_what_the_processes_wrote(client, system, django_assert_max_num_queries):
    now, minute_ms = system["now"], system["minute_ms"]
    before = time.time()
    # savepoint, statement timeout, subscriptions, gaps, bars, release; then the storage figures apart (a failure
    # there leaves the rest): savepoint, statement timeout, timeframes, partitions, retired tables, the archive's
    # totals once it is installed, release
    with django_assert_max_num_queries(13):
        families = scrape(client)
    after = time.time()

    def value(name: str, suffix: str = "", **labels: str) -> float:
        return families[name].value(suffix, **labels)

    expected_counters = {
        "okx_candles_messages_received_total": 1234, "okx_candles_buffer_writes_total": 1000,
        "okx_candles_candles_flushed_total": 900, "okx_candles_flush_errors_total": 2,
        "okx_candles_dead_letters_total": 7, "okx_candles_dead_letters_trimmed_total": 1,
        "okx_candles_missed_confirms_total": 3, "okx_candles_ws_reconnects_total": 5,
        "okx_candles_collectors_removed_total": 1, "okx_candles_gaps_filled_total": 4,
        "okx_candles_rest_requests_total": 50, "okx_candles_rest_retries_total": 6,
        "okx_candles_rest_rate_limited_total": 5, "okx_candles_flush_requests_total": 12,
    }
    assert {name: value(name) for name in expected_counters} == expected_counters
    assert value("okx_candles_flush_duration_seconds", "_sum") == 4.5
    assert value("okx_candles_flush_duration_seconds", "_count") == 30
    assert value("okx_candles_flush_request_wait_seconds", "_sum") == 0.5
    assert value("okx_candles_flush_request_wait_seconds", "_count") == 10
    assert families["okx_candles_buffer_entries"].by_label("part") == {"live": 3, "taken": 2}
    assert value("okx_candles_buffer_alarm_entries") == settings.BUFFER_ALARM_ENTRIES
    assert value("okx_candles_dead_letters_stored") == 4
    assert value("okx_candles_rest_needed_candles") == 2
    assert value("okx_candles_last_flush_timestamp_seconds") == pytest.approx(system["flushed_at"], abs=1e-6)
    assert families["okx_candles_collectors"].by_label("state") == {"alive": 1, "dead": 1}
    assert families["okx_candles_gaps"].by_label("state") == {"open": 2, "filling": 1, "filled": 3, "unfillable": 1,
                                                               "expired": 0}
    assert families["okx_candles_gap_missing_candles"].by_label("state") == {
        "open": 15, "filling": 3, "filled": 21, "unfillable": 100, "expired": 0}
    assert families["okx_candles_subscriptions"].by_label("status") == {
        "pending": 1, "live": 2, "stale": 1, "error": 1, "paused": 1}
    assert families["okx_candles_metrics_source_up"].by_label("source") == {"redis": 1, "database": 1}

    # Per timeframe, every timeframe: channels by state.
    channels = families["okx_candles_channels"].samples
    assert len(channels) == 3 * Timeframe.objects.count()
    by_bar = {bar: {state: value("okx_candles_channels", timeframe=bar, state=state, price="trade")
                    for state in ("fresh", "quiet", "refused")} for bar in ("1m", "1H", "1D", "1s")}
    assert by_bar == {"1m": {"fresh": 1, "quiet": 1, "refused": 0}, "1H": {"fresh": 0, "quiet": 0, "refused": 0},
                      "1D": {"fresh": 0, "quiet": 0, "refused": 1}, "1s": {"fresh": 0, "quiet": 0, "refused": 0}}
    # The worst of each: the odd channel's 100 s and its 8 minutes of lag; timeframes without one have none.
    ages = families["okx_candles_channel_last_message_age_max_seconds"].by_label("timeframe")
    assert list(ages) == ["1m"]
    assert before - now + 100 <= ages["1m"] <= after - now + 100
    lags = families["okx_candles_channel_lag_max_seconds"].by_label("timeframe")
    assert list(lags) == ["1m"]
    odd_next_close_s = (minute_ms - 8 * MINUTE_MS) / 1000
    assert before - odd_next_close_s - 0.001 <= lags["1m"] <= after - odd_next_close_s + 0.001
    unconfirmed = families["okx_candles_channels_unconfirmed"].by_label("timeframe")
    # (The minute may turn between writing and scraping: then BTC-USDT's next candle has just closed too.)
    turned = int(after * 1000) // MINUTE_MS * MINUTE_MS != minute_ms
    assert unconfirmed["1m"] == (2 if turned else 1)
    assert unconfirmed["1H"] == unconfirmed["1D"] == 0
    # No series per subscription unless asked for.
    assert families["okx_candles_subscription_last_message_age_seconds"].samples == {}
    assert families["okx_candles_subscription_lag_seconds"].samples == {}


def test_mark_and_index_channels_are_counted_apart_from_trade_ones(client, state):
    now = time.time()
    minute_ms = int(now * 1000) // MINUTE_MS * MINUTE_MS
    state.channel("BTC-USDT-SWAP", "1m", last_message_at=now - 1, last_confirmed_open=minute_ms - MINUTE_MS)
    state.channel("BTC-USDT-SWAP", "mark:1m", last_message_at=now - 1, last_confirmed_open=minute_ms - MINUTE_MS)
    state.channel("ETH-USDT-SWAP", "mark:1m", last_message_at=now - 500, last_confirmed_open=minute_ms - MINUTE_MS)
    state.channel("BTC-USD", "index:1H", last_message_at=None, last_confirmed_open=None, state="invalid",
                  error="60018 no such channel")

    families = scrape(client)

    channels = families["okx_candles_channels"]
    assert channels.value(timeframe="1m", state="fresh", price="trade") == 1
    assert channels.value(timeframe="1m", state="quiet", price="trade") == 0
    assert channels.value(timeframe="1m", state="fresh", price="mark") == 1
    assert channels.value(timeframe="1m", state="quiet", price="mark") == 1
    assert channels.value(timeframe="1H", state="refused", price="index") == 1
    # A kind's bar nobody collects has no series; every trade bar has its three, as before price kinds.
    kinds = {(labels["timeframe"], labels["price"]) for labels in (dict(key[1]) for key in channels.samples)}
    assert {(bar, price) for bar, price in kinds if price != "trade"} == {("1m", "mark"), ("1H", "index")}
    assert {bar for bar, price in kinds if price == "trade"} == set(Timeframe.objects.values_list("code", flat=True))
    ages = families["okx_candles_channel_last_message_age_max_seconds"]
    assert ages.value(timeframe="1m", price="mark") >= 500
    assert ages.value(timeframe="1m", price="trade") < 100


def test_storage_is_exported_per_timeframe_not_per_partition(client, state, btc, stored_candles):
    now = time.time()
    Timeframe.objects.filter(code="1m").update(retention=timedelta(days=400))
    stored_candles(btc, "1m", [ms_to_datetime(int(now * 1000) // MINUTE_MS * MINUTE_MS - k * MINUTE_MS)
                               for k in range(1, 4)])
    state.counters(**{"partitions_dropped:1s": 3})
    plans = {plan.bar: plan for plan in retention_plan(now=timezone.now())}

    families = scrape(client)

    sizes = families["okx_candles_partition_bytes"].by_label("timeframe")
    assert set(sizes) == set(plans)  # one series per timeframe, however many partitions it has
    assert len(plans["1m"].leaves) > 1
    assert sizes["1m"] > 0
    assert families["okx_candles_rows"].by_label("timeframe")["1m"] == plans["1m"].live_rows
    horizons = families["okx_candles_retention_horizon_seconds"].by_label("timeframe")
    assert horizons == {"1s": 7 * 86_400, "1m": 400 * 86_400}  # the others are kept forever: no series
    drops = families["okx_candles_next_drop_timestamp_seconds"].by_label("timeframe")
    assert set(drops) == {"1s", "1m"}
    assert drops["1m"] == pytest.approx(plans["1m"].next_drop.timestamp(), abs=0.01)
    assert families["okx_candles_partitions_dropped_total"].by_label("timeframe") == {"1s": 3}


@override_settings(METRICS_PER_SUBSCRIPTION=True)
def test_per_subscription_gauges_come_when_asked_for(client, system):
    now, minute_ms = system["now"], system["minute_ms"]
    before = time.time()
    families = scrape(client)
    after = time.time()

    ages = families["okx_candles_subscription_last_message_age_seconds"].samples
    lags = families["okx_candles_subscription_lag_seconds"].samples
    key = {"btc": ("BTC-USDT", "1m"), "odd": (ODD, "1m")}
    series = {name: frozenset({"symbol": s, "timeframe": t, "price": "trade"}.items()) for name, (s, t) in key.items()}
    # Only active subscriptions whose channel reported a message (age) or a confirmed candle (lag).
    assert {labels for _, labels in ages} == set(series.values())
    assert {labels for _, labels in lags} == set(series.values())
    age_name, lag_name = "okx_candles_subscription_last_message_age_seconds", "okx_candles_subscription_lag_seconds"
    assert before - now + 2 <= ages[(age_name, series["btc"])] <= after - now + 2
    assert before - now + 100 <= ages[(age_name, series["odd"])] <= after - now + 100
    # (The minute may turn between writing and scraping: then BTC-USDT's next candle has just closed.)
    assert lags[(lag_name, series["btc"])] <= after - now
    odd_next_close_s = (minute_ms - 8 * MINUTE_MS) / 1000
    assert before - odd_next_close_s - 0.001 <= lags[(lag_name, series["odd"])] <= after - odd_next_close_s + 0.001


def test_a_scrape_reads_redis_without_locks_or_key_scans(client, state, r, btc):
    state.collector("c1")
    state.channel("BTC-USDT", "1m", last_message_at=time.time(), last_confirmed_open=None)
    scrape(client)  # the first scrape opens the connection
    r.config_resetstat()

    scrape(client)

    stats = {name.removeprefix("cmdstat_"): figures for name, figures in r.info("commandstats").items()}
    used = set(stats) - {"config|resetstat", "info"}
    # mget: the shards' lease slots, a fixed handful of keys (COLLECTOR_SHARDS × COLLECTOR_REPLICAS).
    assert used <= {"hlen", "llen", "get", "mget", "hgetall", "zcard", "zcount", "zrange", "scard"}, used
    # The counters, the last flush and the collectors' hosts; never a channel's status (its indexes give counts
    # and heads).
    assert stats["hgetall"]["calls"] == 3


def test_counters_that_never_moved_are_zero(client, keys):
    families = scrape(client)

    for family in m.COUNTERS:
        assert families[family.name].value() == 0
    assert families["okx_candles_flush_duration_seconds"].value("_count") == 0
    assert families["okx_candles_last_flush_timestamp_seconds"].samples == {}  # no flush yet: no sample


def test_with_redis_down_the_database_metrics_remain(client, keys, server, btc):
    subscribe(btc, "1m", status=SubscriptionStatus.LIVE)
    server.stop()
    try:
        started = time.monotonic()
        families = scrape(client)
    finally:
        server.start()

    assert time.monotonic() - started < 2.5
    assert families["okx_candles_metrics_source_up"].by_label("source") == {"redis": 0, "database": 1}
    assert families["okx_candles_messages_received_total"].samples == {}
    assert families["okx_candles_buffer_entries"].samples == {}
    assert families["okx_candles_subscriptions"].value(status="live") == 1
    assert families["okx_candles_channels"].samples == {}


@override_settings(METRICS_TOKEN="s3cret-token")
def test_a_metrics_token_is_required_when_set(client, keys):
    missing = client.get("/api/v1/metrics")
    wrong = client.get("/api/v1/metrics", headers={"Authorization": "Bearer nope"})
    other_scheme = client.get("/api/v1/metrics", headers={"Authorization": "Token s3cret-token"})

    for response in (missing, wrong, other_scheme):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert response["Content-Type"] == "application/json"
    assert missing.json()["error_code"] == "NOT_AUTHENTICATED"
    assert wrong.json()["error_code"] == "AUTHENTICATION_FAILED"
    scrape(client, Authorization="Bearer s3cret-token")


@override_settings(API_READ_AUTH=True)
def test_metrics_stay_open_when_reads_need_authentication(client, keys):
    scrape(client)
    assert client.get("/api/v1/status").status_code in (401, 403)


def test_a_client_that_accepts_only_json_is_told_so_in_json(client, keys):
    response = client.get("/api/v1/metrics", headers={"Accept": "application/json"})

    assert response.status_code == 406
    assert response.json()["error_code"] == "NOT_ACCEPTABLE"


@override_settings(COLLECTOR_REPLICAS=2, COLLECTOR_SHARDS=3)
def test_the_collectors_holding_each_shard_are_exported_beside_the_replicas_wanted(client, r, keys):
    for shard, slot, collector_id in [(0, 0, "a"), (0, 1, "b"), (1, 0, "b")]:
        r.set(keys.lease(shard, slot), collector_id, px=60_000)

    families = scrape(client)

    assert families["okx_candles_shard_replicas"].by_label("shard") == {"0": 2, "1": 1, "2": 0}
    assert families["okx_candles_shard_replicas_wanted"].value() == 2
