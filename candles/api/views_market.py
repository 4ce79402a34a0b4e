"""GET /statistics/{symbol} and GET /market/overview: thin views over candles.api.statistics."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from candles.api.lookups import instrument_or_404, timeframe_or_error
from candles.api.params import TIMEFRAME_PATTERN, Query
from candles.api.serializers import MarketOverviewSerializer, StatisticsSerializer
from candles.api.statistics import PERIODS, market_overview, series_statistics
from candles.api.views_data import SYMBOL_PARAM

DEFAULT_PERIOD = "24h"
DEFAULT_TIMEFRAME = "1m"


class StatisticsView(APIView):
    @extend_schema(
        operation_id="statistics_retrieve",
        summary="Statistics of one symbol over the last hour, day, week or month",
        description="Over candles with open time in [now - period, now]: open, close, change and change %, "
                    "high, low, volumes, VWAP, candle count and completeness (stored / expected open times since "
                    "the period start or the listing, whichever is later). No candles: figures are null.",
        parameters=[
            SYMBOL_PARAM,
            OpenApiParameter("period", {"type": "string", "enum": list(PERIODS)},
                             description=f"Default {DEFAULT_PERIOD}."),
            OpenApiParameter("timeframe", {"type": "string", "pattern": f"^{TIMEFRAME_PATTERN}$"},
                             description=f"Bar the figures are computed from (default {DEFAULT_TIMEFRAME}); "
                                         "unknown: 400 INVALID_TIMEFRAMES."),
        ],
        responses={200: StatisticsSerializer},
        tags=["statistics"],
    )
    def get(self, request: Request, symbol: str) -> Response:
        instrument = instrument_or_404(symbol)
        query = Query(request)
        period = query.choice("period", PERIODS, DEFAULT_PERIOD)
        code = query.text("timeframe", max_length=16) or DEFAULT_TIMEFRAME
        query.done()
        timeframe = timeframe_or_error(code, status=400)
        end = timezone.now()
        start = end - PERIODS[period]
        figures = series_statistics(instrument=instrument, timeframe=timeframe, start=start, end=end)
        return Response({"symbol": instrument.inst_id, "timeframe": timeframe.code, "period": period,
                         "start": start, "end": end, "statistics": figures.as_json()})


class MarketOverviewView(APIView):
    @extend_schema(
        operation_id="market_overview",
        summary="Every subscribed symbol with last price, 24 h change and volume",
        description="One line per symbol with an active subscription, from its shortest subscribed bar of at "
                    "least a minute (else its shortest bar).",
        responses={200: MarketOverviewSerializer},
        tags=["statistics"],
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        symbols = market_overview(now=now)
        return Response({"timestamp": now, "count": len(symbols), "symbols": symbols})
