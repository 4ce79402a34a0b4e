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
    assert body["gaps"] == {"open": 1, "filling": 0, "filled": 1, "unfillable": 0, "missing_candles": 10}

    alive, dead = body["collectors"]
    assert (alive["id"], alive["alive"], alive["shards"], alive["reconnects"]) == ("host-a:1", True, [0, 1], 2)
    assert alive["connections"][0]["state"] == "open"
    assert (dead["id"], dead["alive"]) == ("host-b:2", False)

    rows = {(row["symbol"], row["timeframe"]): row for row in body["subscriptions"]}
    assert [(row["symbol"], row["timeframe"]) for row in body["subscriptions"]] == [
        ("BTC-USDT", "1m"), ("BTC-USDT", "1H"), ("ETH-USDT", "1m"), ("ETH-USDT", "1M")]
    btc = rows[("BTC-USDT", "1m")]
    assert {k: btc[k] for k in ("active", "status", "channel_state", "reconnects", "collector", "open_gaps",
                                "missing_candles")} == {
        "active": True, "status": "live", "channel_state": "subscribed", "reconnects": 2, "collector": "host-a:1",
        "open_gaps": 1, "missing_candles": 10}
    assert btc["last_message_at"] == iso(system["now"] - 1)
    assert btc["last_confirmed_open_time"] == iso((system["minute_ms"] - 5 * MINUTE_MS) / 1000)
    # The candle after the last confirmed one closed 3 minutes ago (it opened 4 minutes ago).
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
    assert [row["channel_state"] for row in body["subscriptions"]] == [None] * 4


def test_an_empty_system_is_healthy(client, keys):
    body = client.get("/api/v1/status").json()

    assert (body["status"], body["subscriptions"], body["collectors"]) == ("healthy", [], [])
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
    assert set(body) == {"error_code", "message", "details", "request_id", "timestamp"}


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
