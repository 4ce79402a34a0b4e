"""GET /status, /status/{symbol}, /health, /health/live and /metrics.

/status and /status/{symbol} follow the API's defaults (open reads unless API_READ_AUTH, throttling).
The probes /health and /health/live, and /metrics, must answer load balancers, orchestrators and Prometheus
whatever the API's settings: they take no users and no throttling, and /metrics has its own optional token.
"""

from __future__ import annotations

import os
import re
import time

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from candles.api.pagination import PAGE_PARAMS, page_bounds, paginate
from candles.api.params import Query
from candles.models import Instrument, PriceKind, Subscription, SubscriptionStatus
from collectors.api.access import MetricsTokenAuthentication, MetricsTokenRequired
from collectors.api.metrics import PAUSED, metrics_text
from collectors.api.renderers import PrometheusTextRenderer
from collectors.api.serializers import (
    HealthSerializer,
    LivenessSerializer,
    StatusSerializer,
    SubscriptionStatusPageSerializer,
    SymbolStatusSerializer,
)
from collectors.api.status_body import status_body, status_document
from collectors.api.subscriptions import instrument_subscription_rows, subscription_page_rows
from collectors.api.system import HEALTHY, Health, health_evaluate, observe, system_status
from okxproject.api_errors import NotFoundError
from okxproject.api_schema import EnvelopeAutoSchema, ErrorEnvelopeSerializer

# When this process loaded the application: the liveness probe's uptime.
STARTED = time.monotonic()
TAG = "status"
# What an OKX instrument id can look like ("BTC-USDT", "BTC-USD-240329-60000-C"); anything else is not one,
# and never reaches SQL (a NUL byte would make PostgreSQL refuse the query).
SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

DATABASE_UNAVAILABLE = OpenApiResponse(
    ErrorEnvelopeSerializer, description="DATABASE_UNAVAILABLE: PostgreSQL went away while serving the request.")


def _health_body(health: Health) -> dict:
    return {"status": health.status, "timestamp": timezone.now(), "checks": health.checks,
            "failing": health.failing}


class StatusView(APIView):
    @extend_schema(
        tags=[TAG], operation_id="status_retrieve",
        summary="The whole system in summary: health, services, pipeline, gaps, collectors, subscription counts, "
                "worst lags, top problems and the repair backlog",
        description="200 whenever the API can answer: `status` is healthy, degraded or unhealthy by the rule in "
                    "docs/status-and-metrics.md, `failing` names the failing checks, and the sections whose "
                    "source (Redis or PostgreSQL) is down are null. The answer is a summary whose size does "
                    "not grow with the subscriptions; each subscription's status is at "
                    "/api/v1/status/subscriptions (filtered, paged) and /api/v1/status/{symbol}.",
        responses={200: StatusSerializer, 503: DATABASE_UNAVAILABLE},
    )
    def get(self, request: Request) -> Response:
        document = status_document(system_status(), detail_url=reverse("status-subscriptions", request=request))
        # The same JSON as StatusSerializer(document).data (a test compares them), without its cost.
        return Response(status_body(document))


STATES = (*SubscriptionStatus.values, PAUSED)
BAR = r"[0-9A-Za-z]{1,8}"  # what a timeframe code can look like (Timeframe.code: 8 characters at most)


class SubscriptionStatusListView(APIView):
    @extend_schema(
        tags=[TAG], operation_id="status_subscriptions_list",
        summary="Each subscription's status, filtered and paged: status, last message, lag, open gaps",
        description="Ordered by symbol and bar. Filters combine: `state` (live, stale, error and pending are "
                    "active subscriptions by the status the health task set; paused are the paused ones), "
                    "`bar` (exact, case-sensitive: 1m is a minute, 1M a month) and `symbol` (exact instId). "
                    "Pages hold at most 1000 subscriptions (`limit`, default 100; `offset`).",
        parameters=[
            OpenApiParameter("state", {"type": "string", "enum": list(STATES)}, description="Only this state."),
            OpenApiParameter("bar", {"type": "string", "pattern": f"^{BAR}$"},
                             description="Only this bar (timeframe code)."),
            OpenApiParameter("symbol", {"type": "string", "pattern": f"^{SYMBOL.pattern}$"},
                             description="Only this instrument (exact instId)."),
            *PAGE_PARAMS,
        ],
        responses={200: SubscriptionStatusPageSerializer,
                   400: OpenApiResponse(ErrorEnvelopeSerializer, description="VALIDATION_ERROR: a bad filter."),
                   503: DATABASE_UNAVAILABLE},
    )
    def get(self, request: Request) -> Response:
        query = Query(request)
        state = query.choice("state", STATES)
        bar = query.text("bar", pattern=BAR)
        symbol = query.text("symbol", pattern=SYMBOL.pattern)
        limit, offset = page_bounds(query)
        query.done()
        subscriptions = Subscription.objects.all()
        if state == PAUSED:
            subscriptions = subscriptions.filter(is_active=False)
        elif state is not None:
            subscriptions = subscriptions.filter(is_active=True, status=state)
        if bar is not None:
            subscriptions = subscriptions.filter(timeframe__code=bar)
        if symbol is not None:
            subscriptions = subscriptions.filter(instrument__inst_id=symbol)
        page, ids = paginate(request, subscriptions.values_list("pk", flat=True), limit, offset)
        rows, live = subscription_page_rows(ids, now=time.time())
        return Response(SubscriptionStatusPageSerializer({**page, "live_status_available": live,
                                                          "results": rows}).data)


class SymbolStatusView(APIView):
    @extend_schema(
        tags=[TAG], operation_id="status_symbol_retrieve",
        summary="One instrument's subscriptions: status, last message, last confirmed candle, lag, reconnects",
        description="The symbol is OKX's instId, exact and case-sensitive. Its subscriptions of every price kind "
                    "are listed, each row naming its `price` (a swap's trade and mark-price series; for a name "
                    "such as BTC-USDT, the spot pair's trades and the index). A known instrument without "
                    "subscriptions has an empty `timeframes` list; an unknown one is 404 SYMBOL_NOT_FOUND.",
        responses={
            200: SymbolStatusSerializer,
            404: OpenApiResponse(ErrorEnvelopeSerializer, description="SYMBOL_NOT_FOUND: no such instrument."),
            503: DATABASE_UNAVAILABLE,
        },
    )
    def get(self, request: Request, symbol: str) -> Response:
        rows_of_id = list(Instrument.objects.filter(inst_id=symbol)) if SYMBOL.fullmatch(symbol) else []
        if not rows_of_id:
            raise NotFoundError(f"No instrument {symbol!r} is known.", code="SYMBOL_NOT_FOUND",
                                details={"symbol": symbol})
        # The instrument described is the traded one when there is one (an index alone describes itself).
        instrument = next((row for row in rows_of_id if row.price == PriceKind.TRADE), rows_of_id[0])
        rows, live = instrument_subscription_rows(instrument_id=[row.pk for row in rows_of_id], now=time.time())
        return Response(SymbolStatusSerializer({
            "symbol": instrument.inst_id, "inst_type": instrument.inst_type, "state": instrument.state,
            "delisted_at": instrument.delisted_at, "timestamp": timezone.now(), "live_status_available": live,
            "timeframes": rows,
        }).data)


class HealthView(APIView):
    # A readiness probe: reachable without credentials or throttling, whatever the API's settings.
    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()

    @extend_schema(
        tags=[TAG], operation_id="health_retrieve",
        summary="Readiness: 200 when healthy, 503 with the failing checks otherwise",
        description="Probes PostgreSQL, Redis and the broker (each bounded: the answer comes within about two "
                    "seconds even when a server hangs) and grades the pipeline by the rule in "
                    "docs/status-and-metrics.md.",
        responses={
            200: OpenApiResponse(HealthSerializer, description="healthy"),
            503: OpenApiResponse(HealthSerializer, description="degraded or unhealthy; `failing` names the checks"),
        },
    )
    def get(self, request: Request) -> Response:
        health = health_evaluate(observe())
        return Response(HealthSerializer(_health_body(health)).data, status=200 if health.status == HEALTHY else 503)


class LivenessView(APIView):
    # A liveness probe: answers as long as the process serves, touching neither PostgreSQL nor Redis (no
    # authentication: a session lookup would read the database; no throttling: its counters live in Redis).
    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()

    @extend_schema(
        tags=[TAG], operation_id="health_live_retrieve",
        summary="Liveness: 200 as long as the process serves requests (no database or Redis access)",
        responses={200: LivenessSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(LivenessSerializer({
            "status": "alive", "timestamp": timezone.now(), "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - STARTED, 3),
        }).data)


class OptionalTokenSchema(EnvelopeAutoSchema):
    def get_auth(self) -> list[dict]:
        # The token is required only when METRICS_TOKEN is set: an empty requirement says "or none".
        auths = super().get_auth()
        return auths if {} in auths else [*auths, {}]


class MetricsView(APIView):
    schema = OptionalTokenSchema()
    authentication_classes = (MetricsTokenAuthentication,)
    permission_classes = (MetricsTokenRequired,)
    throttle_classes = ()  # Prometheus scrapes on its own schedule
    renderer_classes = (PrometheusTextRenderer,)

    @extend_schema(
        tags=[TAG], operation_id="metrics_retrieve",
        summary="Prometheus metrics (text exposition format 0.0.4)",
        description="Counters of every process (they only grow), gauges of the buffer, gaps, collectors and "
                    "subscriptions, per-subscription lag. Every metric is described in "
                    "docs/status-and-metrics.md. When METRICS_TOKEN is set, requests need "
                    "`Authorization: Bearer <METRICS_TOKEN>`.",
        responses={(200, PrometheusTextRenderer.media_type): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> Response:
        return Response(metrics_text(), content_type=PrometheusTextRenderer.content_type)
