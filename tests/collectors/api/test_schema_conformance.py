"""Every response of the status, health and metrics endpoints matches the project's OpenAPI schema
(schemathesis against the WSGI application, with a populated database and pipeline state)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from candles.models import Subscription, SubscriptionStatus, Timeframe

OUR_PATHS = r"^/api/v1/(status|health|metrics)"


@pytest.fixture
def in_process_requests() -> Iterator[None]:
    """Requests through the WSGI application inside the test's transaction: as Django's test client does, the
    connection is not closed when a request ends (that would end the test's transaction)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def our_operations(db, in_process_requests, state, instrument):
    """The schema's operations of this package, with data behind them (and a garbled status entry)."""
    now = time.time()
    btc = instrument("BTC-USDT")
    for bar, status in (("1m", SubscriptionStatus.LIVE), ("1H", SubscriptionStatus.STALE)):
        Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code=bar), status=status)
    state.channel("BTC-USDT", "1m", last_message_at=now, last_confirmed_open=int(now * 1000) // 60_000 * 60_000)
    state.channel("BTC-USDT", "1H", last_message_at=1e300, last_confirmed_open=10**18)  # absurd, not garbled
    state.r.hset(state.keys.channel_status, "BTC-USDT|1D", b"{garbled")
    state.collector("c1", heartbeat_at=now)
    state.repair_report(eta_s=None)
    state.buffered(2)
    state.last_flush(now)
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    return schema.include(path_regex=OUR_PATHS)


def test_responses_match_the_schema(our_operations):
    operations = [result.ok() for result in our_operations.get_all_operations()]
    assert sorted(op.path for op in operations) == [
        "/api/v1/health", "/api/v1/health/live", "/api/v1/metrics", "/api/v1/status",
        "/api/v1/status/subscriptions", "/api/v1/status/{symbol}"]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case) -> None:
            # 503 is what /health documents for a system that is not healthy (this one has a stale subscription).
            case.call_and_validate(excluded_checks=[not_a_server_error] if case.path == "/api/v1/health" else [])

        conforms()


@pytest.mark.django_db
def test_the_schema_documents_every_status_code_of_these_endpoints(client):
    spec = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}).json()
    codes = {path: sorted(spec["paths"][path]["get"]["responses"]) for path in spec["paths"]
             if path.startswith(("/api/v1/status", "/api/v1/health", "/api/v1/metrics"))}

    assert codes == {
        "/api/v1/status": ["200", "401", "406", "429", "503"],
        "/api/v1/status/{symbol}": ["200", "401", "404", "406", "429", "503"],
        "/api/v1/status/subscriptions": ["200", "400", "401", "406", "429", "503"],
        "/api/v1/health": ["200", "406", "503"],
        "/api/v1/health/live": ["200", "406"],
        "/api/v1/metrics": ["200", "401", "406"],
    }
    assert list(spec["paths"]["/api/v1/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert {} in spec["paths"]["/api/v1/metrics"]["get"]["security"]  # open unless METRICS_TOKEN is set
