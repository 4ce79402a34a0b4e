"""Reference data: GET /instruments (type, state, search; paged) and GET /timeframes."""

from __future__ import annotations

from django.db.models import Exists, OuterRef
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from candles.api.pagination import PAGE_PARAMS, page_bounds, paginate
from candles.api.params import Query
from candles.api.serializers import InstrumentPageSerializer, InstrumentSerializer, TimeframeListSerializer
from candles.models import Instrument, InstrumentType, PriceKind, Timeframe

STATE_PATTERN = r"[a-z_]{1,32}"


class InstrumentListView(APIView):
    @extend_schema(
        operation_id="instruments_list",
        summary="Instruments known from OKX, filtered and paged",
        parameters=[
            OpenApiParameter("type", {"type": "string", "enum": list(InstrumentType.values)}),
            OpenApiParameter("state", {"type": "string", "pattern": f"^{STATE_PATTERN}$"},
                             description="OKX state: live, suspend, preopen, ..."),
            OpenApiParameter("search", {"type": "string", "maxLength": 64},
                             description="Part of the instrument id, any case (btc finds BTC-USDT)."),
            *PAGE_PARAMS,
        ],
        responses={200: InstrumentPageSerializer},
        tags=["reference"],
    )
    def get(self, request: Request) -> Response:
        query = Query(request)
        inst_type = query.choice("type", InstrumentType.values)
        state = query.text("state", max_length=32, pattern=STATE_PATTERN)
        search = query.text("search", max_length=64)
        limit, offset = page_bounds(query)
        query.done()
        # One entry per OKX id and kind of thing (an instrument, or an index); an instrument's mark-price series
        # shows in its `prices`, not as an entry of its own.
        instruments = (Instrument.objects.exclude(price=PriceKind.MARK).order_by("inst_id", "inst_type")
                       .annotate(has_mark=Exists(Instrument.objects.filter(inst_id=OuterRef("inst_id"),
                                                                           price=PriceKind.MARK))))
        if inst_type is not None:
            instruments = instruments.filter(inst_type=inst_type)
        if state is not None:
            instruments = instruments.filter(state=state)
        if search is not None:
            instruments = instruments.filter(inst_id__icontains=search)
        page, items = paginate(request, instruments, limit, offset)
        return Response({**page, "results": InstrumentSerializer(items, many=True).data})


class TimeframeListView(APIView):
    @extend_schema(
        operation_id="timeframes_list",
        summary="Every bar, in display order; only active ones can be subscribed",
        responses={200: TimeframeListSerializer},
        tags=["reference"],
    )
    def get(self, request: Request) -> Response:
        timeframes = list(Timeframe.objects.order_by("display_order", "code"))
        return Response(TimeframeListSerializer({"count": len(timeframes), "results": timeframes}).data)
