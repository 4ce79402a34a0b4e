"""GET /api/v1/status and /api/v1/status/{symbol} against the real PostgreSQL and Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candles.models import Gap, GapState, Subscription, SubscriptionStatus, Timeframe
from tests.collectors.api.servers import closed_port

pytestmark = pytest.mark.django_db
MINUTE_MS = 60_000


def subscribe(inst, bar: str, **fields) -> Subscription:
    return Subscription.objects.create(instrument=inst, timeframe=Timeframe.objects.get(code=bar), **fields)


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def system(state, instrument):
    """Two instruments, four subscriptions (one paused, one stale), a live and a dead collector, a few gaps."""
    now = time.time()
    btc, eth = instrument("BTC-USDT"), instrument("ETH-USDT")
    minute_ms = int(now * 1000) // MINUTE_MS * MINUTE_MS
    one_minute = subscribe(btc, "1m", status=SubscriptionStatus.LIVE)
    subscribe(btc, "1H", status=SubscriptionStatus.PENDING)
    subscribe(eth, "1m", status=SubscriptionStatus.STALE, status_message="no message since 2024-01-16T19:00:00Z")
    subscribe(eth, "1M", status=SubscriptionStatus.LIVE, is_active=False)
    state.channel("BTC-USDT", "1m", last_message_at=now - 1, last_confirmed_open=minute_ms - 5 * MINUTE_MS,
                  collector="host-a:1", reconnects=2)
    state.channel("ETH-USDT", "1m", last_message_at=now - 100, last_confirmed_open=None, collector="host-a:1")
    state.collector("host-a:1", heartbeat_at=now - 1, shards=[0, 1], reconnects=2, messages=500, channels=2)
    state.collector("host-b:2", heartbeat_at=now - 3600, shards=[2])
    state.counters(messages=500, candles_flushed=480)
    state.buffered(4)
    state.dead_letters(1)
    state.last_flush(now - 0.5, rows=4, written=4, duration_ms=8)
    start = timezone.now() - timedelta(hours=2)
    Gap.objects.create(subscription=one_minute, start=start, end=start + timedelta(minutes=9), missing=10)
    Gap.objects.create(subscription=one_minute, start=start - timedelta(hours=1), end=start - timedelta(minutes=55),
                       missing=6, state=GapState.FILLED)
    return {"now": now, "minute_ms": minute_ms}


def test_the_system_status_shows_every_part(client, system):
    before = time.time()
    response = client.get("/api/v1/status")
    after = time.time()

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["failing"] == ["subscriptions"]
    assert body["checks"]["subscriptions"]["message"] == "1 of 3 active stale or in error (ETH-USDT 1m stale)"
    services = body["services"]
    assert {name: services[name]["up"] for name in ("database", "redis", "broker")} == dict.fromkeys(
        ("database", "redis", "broker"), True)
    assert services["collectors"] == {"alive": 1, "total": 2}
    pipeline = body["pipeline"]
    assert pipeline["buffer"] == {"live": 4, "taken": 0, "depth": 4,
                                  "alarm_entries": django_settings.BUFFER_ALARM_ENTRIES}
    assert (pipeline["dead_letters"], pipeline["rest_needed"]) == (1, 0)
    assert pipeline["counters"] == {"candles_flushed": 480, "messages": 500}
    assert pipeline["last_flush"]["rows"] == 4
    assert pipeline["last_flush"]["at"] == iso(system["now"] - 0.5)
    assert {k: v for k, v in body["gaps"].items() if k != "unfinished_by_priority"} == {
        "open": 1, "filling": 0, "filled": 1, "unfillable": 0, "expired": 0, "missing_candles": 10}

    alive, dead = body["collectors"]
    assert (alive["id"], alive["alive"], alive["shards"], alive["reconnects"]) == ("host-a:1", True, [0, 1], 2)
    assert alive["connections"][0]["state"] == "open"
    assert (dead["id"], dead["alive"]) == ("host-b:2", False)

    # A summary: counts by state, the worst lags and the problems; each subscription is on the detail endpoint.
    assert body["subscriptions"] == {
        "by_state": {"live": 1, "stale": 1, "error": 0, "pending": 1, "paused": 1}, "active": 3, "paused": 1,
        "total": 4, "detail": "http://testserver/api/v1/status/subscriptions"}
    [lag] = body["worst_lags"]
    # The candle after the last confirmed one closed 3 minutes ago (it opened 4 minutes ago).
    closed_s = (system["minute_ms"] - 3 * MINUTE_MS) / 1000
    assert (lag["symbol"], lag["timeframe"]) == ("BTC-USDT", "1m")
    assert before - closed_s - 0.01 <= lag["lag_s"] <= after - closed_s + 0.01
    assert lag["last_confirmed_open_time"] == iso((system["minute_ms"] - 5 * MINUTE_MS) / 1000)
    problems = body["problems"]
    assert problems["stale"] == {"count": 1, "examples": [
        {"symbol": "ETH-USDT", "timeframe": "1m", "status_message": "no message since 2024-01-16T19:00:00Z",
         "price": "trade"}]}
    assert problems["error"] == {"count": 0, "examples": []}
    assert problems["gaps_by_priority"]["outage"] == {"gaps": 1, "missing_candles": 10}
    assert problems["dead_letters"] == 1
    assert problems["top"][0] == "1 subscription stale (ETH-USDT 1m)"
    assert body["gaps"]["unfinished_by_priority"]["outage"] == {"gaps": 1, "missing_candles": 10}
    assert body["repair"] is None


def detail(client, query: str = "") -> dict:
    response = client.get(f"/api/v1/status/subscriptions{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_detail_lists_each_subscription_with_its_channel(client, system):
    before = time.time()
    body = detail(client)
    after = time.time()

    assert (body["count"], body["next"], body["previous"], body["live_status_available"]) == (4, None, None, True)
    rows = {(row["symbol"], row["timeframe"]): row for row in body["results"]}
    assert [(row["symbol"], row["timeframe"]) for row in body["results"]] == [
        ("BTC-USDT", "1m"), ("BTC-USDT", "1H"), ("ETH-USDT", "1m"), ("ETH-USDT", "1M")]
    btc = rows[("BTC-USDT", "1m")]
    assert {k: btc[k] for k in ("active", "status", "channel_state", "reconnects", "collector", "open_gaps",
                                "missing_candles")} == {
        "active": True, "status": "live", "channel_state": "subscribed", "reconnects": 2, "collector": "host-a:1",
        "open_gaps": 1, "missing_candles": 10}
    assert btc["last_message_at"] == iso(system["now"] - 1)
    assert btc["last_confirmed_open_time"] == iso((system["minute_ms"] - 5 * MINUTE_MS) / 1000)
    closed_s = (system["minute_ms"] - 3 * MINUTE_MS) / 1000
    assert before - closed_s - 0.01 <= btc["lag_s"] <= after - closed_s + 0.01
    assert 1 <= btc["last_message_age_s"] <= 1 + after - system["now"]
    eth = rows[("ETH-USDT", "1m")]
    assert (eth["status"], eth["status_message"], eth["lag_s"]) == (
        "stale", "no message since 2024-01-16T19:00:00Z", None)
    never = rows[("BTC-USDT", "1H")]
    assert (never["channel_state"], never["last_message_at"], never["lag_s"], never["reconnects"]) == (
        None, None, None, None)
    assert rows[("ETH-USDT", "1M")]["active"] is False


@pytest.mark.parametrize(("query", "expected"), [
    ("?state=stale", [("ETH-USDT", "1m")]),
    ("?state=live", [("BTC-USDT", "1m")]),  # the paused 1M is live by its stored status, but paused
    ("?state=paused", [("ETH-USDT", "1M")]),
    ("?state=error", []),
    ("?bar=1m", [("BTC-USDT", "1m"), ("ETH-USDT", "1m")]),
    ("?bar=1M", [("ETH-USDT", "1M")]),
    ("?symbol=BTC-USDT&bar=1H", [("BTC-USDT", "1H")]),
    ("?state=stale&bar=1H", []),
])
def test_the_detail_filters(client, system, query, expected):
    body = detail(client, query)

    assert [(row["symbol"], row["timeframe"]) for row in body["results"]] == expected
    assert body["count"] == len(expected)


def test_the_detail_pages(client, system):
    first = detail(client, "?limit=3")
    second = client.get(first["next"]).json()

    assert (first["count"], len(first["results"]), first["previous"]) == (4, 3, None)
    assert [(row["symbol"], row["timeframe"]) for row in second["results"]] == [("ETH-USDT", "1M")]
    assert second["next"] is None
    assert second["previous"] is not None
    assert second["results"][0]["active"] is False


@pytest.mark.parametrize("query", ["?state=dead", "?limit=1001", "?limit=0", "?offset=-1", "?bar=1%20m",
                                   "?symbol=BTC%00USDT"])
def test_bad_detail_filters_are_validation_errors(client, keys, query):
    response = client.get(f"/api/v1/status/subscriptions{query}")

    assert response.status_code == 400
    assert response.json()["error_code"] == "VALIDATION_ERROR"


def test_the_repair_backlog_is_shown(client, system, state):
    state.repair_report(updated_at=system["now"] - 2, eta_s=5400.0)

    body = client.get("/api/v1/status").json()

    repair = body["repair"]
    assert repair["updated_at"] == iso(system["now"] - 2)
    assert repair["backlog"]["outage"] == {"candles": 3_000, "units": 30}
    assert repair["drained_per_s"]["history"] == 120.0
    # The mark-price and index endpoints beside the trade ones: zero in a report written before them.
    others = ("mark-price-candles", "history-mark-price-candles", "index-candles", "history-index-candles")
    assert (repair["eta_s"], repair["requests"], repair["budget_per_s"]) == (
        5400.0, {"candles": 40, "history": 300, **dict.fromkeys(others, 0)},
        {"candles": 20.0, "history": 10.0, **dict.fromkeys(others, 0.0)})
    # rest_needed stays for the clients that read it; the repair plane's confirm backlog is that figure now.
    assert body["pipeline"]["rest_needed"] == 12


def test_a_garbled_repair_report_is_left_out_with_a_warning(client, system, state, caplog):
    state.r.set(state.keys.repair_backlog, b'{"updated_at": "yesterday"}')

    body = client.get("/api/v1/status").json()

    assert body["repair"] is None
    assert "repair report" in caplog.text


def _many_subscriptions(instrument, state, instruments: int) -> None:
    """`instruments` × 27 bars, every fifth stale, with channel statuses, lags and open gaps."""
    now = time.time()
    bars = list(Timeframe.objects.order_by("display_order"))
    subscriptions = []
    for i in range(instruments):
        inst = instrument(f"S{i:04d}-USDT")
        for n, tf in enumerate(bars):
            subscriptions.append(Subscription(instrument=inst, timeframe=tf, status_message="x" * 40,
                                              status=SubscriptionStatus.STALE if n % 5 == 0 else "live"))
    Subscription.objects.bulk_create(subscriptions)
    for sub in Subscription.objects.select_related("instrument", "timeframe"):
        spec = sub.timeframe.spec
        confirmed = spec.floor(spec.floor(spec.floor(int(now * 1000)) - 1) - 1)
        state.channel(sub.instrument.inst_id, sub.timeframe.code, last_message_at=now, last_confirmed_open=confirmed)
    start = timezone.now() - timedelta(days=1)
    Gap.objects.bulk_create([Gap(subscription=sub, start=start, end=start, missing=1)
                             for sub in Subscription.objects.all()])


@pytest.mark.parametrize("instruments", [1, 40])
def test_status_stays_a_summary(client, instrument, state, django_assert_max_num_queries, instruments):
    """27 or 1,080 subscriptions: the same queries, and the same size give or take the longer numbers."""
    _many_subscriptions(instrument, state, instruments)

    with django_assert_max_num_queries(STATUS_QUERIES) as queries:
        response = client.get("/api/v1/status")

    body = response.json()
    assert body["subscriptions"]["total"] == 27 * instruments
    assert len(body["worst_lags"]) == 10 if instruments > 1 else len(body["worst_lags"]) <= 10
    assert len(body["problems"]["stale"]["examples"]) <= 10
    assert len(response.content) < 12_000, len(response.content)
    # The count does not depend on the subscriptions: a fixed set of GROUP BYs and LIMITed reads.
    assert len(queries) == STATUS_QUERIES


# Queries of one GET /status: one round trip carrying the statement timeout, the subscription counts, the
# troubled examples, the gap figures and the bar specs (collectors.api.status_queries), inside a savepoint
# (a transaction outside tests: BEGIN and COMMIT, which Django does not log).
STATUS_QUERIES = 3


def test_with_redis_down_the_status_is_unhealthy_and_the_database_parts_remain(client, system):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        response = client.get("/api/v1/status")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["failing"] == ["redis", "subscriptions"]  # the broker is still the machine's Redis here
    assert (body["pipeline"], body["collectors"], body["services"]["collectors"]) == (None, None, None)
    assert body["services"]["redis"]["up"] is False
    assert body["gaps"]["open"] == 1
    assert body["subscriptions"]["total"] == 4
    assert (body["worst_lags"], body["repair"], body["problems"]["dead_letters"]) == (None, None, None)


def test_with_redis_down_the_detail_still_lists_the_subscriptions(client, system):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        body = detail(client)

    assert body["live_status_available"] is False
    assert [row["channel_state"] for row in body["results"]] == [None] * 4


def test_an_empty_system_is_healthy(client, keys):
    body = client.get("/api/v1/status").json()

    assert (body["status"], body["subscriptions"]["total"], body["collectors"]) == ("healthy", 0, [])
    assert (body["worst_lags"], body["problems"]["top"], body["repair"]) == ([], [], None)
    assert body["pipeline"]["last_flush"] is None


# --- one symbol --------------------------------------------------------------------------------------------


def test_a_symbols_status_lists_its_timeframes(client, system):
    response = client.get("/api/v1/status/BTC-USDT")

    assert response.status_code == 200
    body = response.json()
    assert (body["symbol"], body["inst_type"], body["state"], body["delisted_at"]) == ("BTC-USDT", "SPOT", "live",
                                                                                        None)
    assert body["live_status_available"] is True
    assert [(row["timeframe"], row["status"], row["channel_state"]) for row in body["timeframes"]] == [
        ("1m", "live", "subscribed"), ("1H", "pending", None)]
    one_minute = body["timeframes"][0]
    assert (one_minute["reconnects"], one_minute["open_gaps"], one_minute["collector"]) == (2, 1, "host-a:1")
    assert one_minute["lag_s"] > 0
    assert one_minute["last_confirmed_open_time"] == iso((system["minute_ms"] - 5 * MINUTE_MS) / 1000)


def test_a_known_instrument_without_subscriptions_has_no_timeframes(client, keys, instrument):
    instrument("SOL-USDT")

    response = client.get("/api/v1/status/SOL-USDT")

    assert response.status_code == 200
    assert response.json()["timeframes"] == []


def test_with_redis_down_a_symbols_status_says_the_live_part_is_missing(client, system):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        body = client.get("/api/v1/status/BTC-USDT").json()

    assert body["live_status_available"] is False
    assert [(row["status"], row["channel_state"]) for row in body["timeframes"]] == [("live", None),
                                                                                    ("pending", None)]


@pytest.mark.parametrize("symbol", ["NOPE-USDT", "btc-usdt", "BTC-USDT ", "x" * 65, "\x00", "BTC\x00USDT", "☃",
                                    "-BTC", "BTC-USDT'; DROP TABLE candles_candle; --"])
def test_an_unknown_symbol_is_symbol_not_found(client, keys, btc, symbol):
    response = client.get("/api/v1/status/" + quote(symbol, safe=""))

    assert response.status_code == 404
    body = response.json()
    assert body["error_code"] == "SYMBOL_NOT_FOUND"
    assert body["details"] == {"symbol": symbol}
    assert set(body) == {"status", "error_code", "message", "details", "request_id", "timestamp"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(symbol=st.text(min_size=1, max_size=80))
def test_no_symbol_makes_a_server_error(client, keys, btc, symbol):
    response = client.get("/api/v1/status/" + quote(symbol, safe=""))

    assert response.status_code in (200, 404)
    assert response["Content-Type"] == "application/json"
    if response.status_code == 404:
        # A "/" in the symbol leaves no route at all: NOT_FOUND rather than SYMBOL_NOT_FOUND.
        assert response.json()["error_code"] in ("SYMBOL_NOT_FOUND", "NOT_FOUND")


@override_settings(API_READ_AUTH=True)
def test_status_reads_follow_the_api_read_setting(client, keys, btc):
    assert client.get("/api/v1/status/BTC-USDT").status_code in (401, 403)
    assert client.get("/api/v1/status").status_code in (401, 403)
