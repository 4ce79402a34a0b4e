"""GET /status builds its answer without DRF's serializer: it must be the JSON StatusSerializer gives, byte for
byte, for a report with every part filled and for reports whose sources are down."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from candles.api.renderers import dumps
from candles.models import Gap, GapState, RepairPriority, Subscription, SubscriptionStatus, Timeframe
from collectors.api.probes import Probe
from collectors.api.serializers import StatusSerializer
from collectors.api.status_body import status_body, status_document
from collectors.api.system import Observation, SystemStatus, health_evaluate, problems_list, system_status
from tests.collectors.api.servers import closed_port

pytestmark = pytest.mark.django_db
MINUTE_MS = 60_000
DETAIL = "http://testserver/api/v1/status/subscriptions"


def assert_same_json(report: SystemStatus) -> bytes:
    document = status_document(report, detail_url=DETAIL)
    expected = dumps(StatusSerializer(document).data)
    assert dumps(status_body(document)) == expected
    return expected


@pytest.fixture
def busy_system(state, instrument):
    """Every section of the answer filled, with the odd values: nulls, floats where integers are usual, a
    collector without details, every subscription state, gaps of several priorities, a repair report."""
    now = time.time()
    minute_ms = int(now * 1000) // MINUTE_MS * MINUTE_MS
    bars = {tf.code: tf for tf in Timeframe.objects.all()}
    statuses = [SubscriptionStatus.LIVE, SubscriptionStatus.STALE, SubscriptionStatus.ERROR,
                SubscriptionStatus.PENDING]
    subscriptions = []
    for i, symbol in enumerate(["BTC-USDT", "ETH-USDT", "SOL-USDT"]):
        inst = instrument(symbol)
        for n, bar in enumerate(["1m", "5m", "1H", "1D"]):
            status = statuses[(i + n) % len(statuses)]
            subscriptions.append(Subscription.objects.create(
                instrument=inst, timeframe=bars[bar], status=status, is_active=not (i == 2 and bar == "1D"),
                status_message={"stale": "no message since 2024-01-16T19:00:00Z",
                                "error": "60018 channel does not exist"}.get(status, "")))
            state.channel(symbol, bar, last_message_at=now - n, last_confirmed_open=minute_ms - (i + 2) * MINUTE_MS
                          if bar == "1m" else None, collector="host-a:1", reconnects=i)
    state.collector("host-a:1", heartbeat_at=now - 1.25, shards=[0, 3], reconnects=2, messages=500, channels=12)
    state.r.zadd(state.keys.collectors, {"host-gone:9": now - 7200})  # its hash expired: details missing
    state.counters(messages=500, candles_flushed=480)
    state.r.hset(state.keys.counters, "flush_duration_ms", "12.5")
    state.buffered(3, taken=2)
    state.dead_letters(2)
    state.last_flush(now - 0.75, rows=4, written=3, rejected=1, duration_ms=8)
    state.repair_report(updated_at=now - 2.5, eta_s=None)
    start = timezone.now() - timedelta(hours=2)
    for n, (gap_state, priority) in enumerate([
        (GapState.OPEN, RepairPriority.CONFIRM), (GapState.FILLING, RepairPriority.OUTAGE),
        (GapState.OPEN, RepairPriority.HISTORY), (GapState.FILLED, RepairPriority.OUTAGE),
        (GapState.UNFILLABLE, RepairPriority.OLD),
    ]):
        Gap.objects.create(subscription=subscriptions[n], start=start, end=start + timedelta(minutes=n),
                           missing=n + 1, state=gap_state, priority=priority)


def test_a_full_report_renders_as_the_serializer_renders_it(busy_system):
    report = system_status()

    body = assert_same_json(report)

    # The report is the full one the fixture meant (so the comparison covered every section).
    assert all((report.collectors, report.worst_lags, report.repair, report.gaps))
    assert all((report.problems["error"].examples, report.problems["stale"].examples))
    assert {c.details_missing for c in report.collectors} == {True, False}
    assert (b'"eta_s":null' in body, b'"duration_ms":8.0' in body) == (True, True)


def test_a_report_with_redis_down_renders_as_the_serializer_renders_it(busy_system):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        report = system_status()

    assert (report.observation.pipeline, report.collectors, report.worst_lags, report.repair) == (None,) * 4
    assert_same_json(report)


def test_a_report_with_every_source_down_renders_as_the_serializer_renders_it():
    probes = {"database": Probe("database", False, None, "no answer within 1.5 s"),
              "redis": Probe("redis", False, 1000.0, "TimeoutError: Timeout reading from socket"),
              "broker": Probe("broker", True, None, "not probed: a amqp:// broker, not Redis", checked=False)}
    observation = Observation(time.time(), probes, None, None)
    problems = {"top": problems_list(None, None, None, None, None, None), "error": None, "stale": None,
                "gaps_by_priority": None, "dead_letters": None}

    assert_same_json(SystemStatus(health_evaluate(observation), observation, None, None, None, None, problems, None))
