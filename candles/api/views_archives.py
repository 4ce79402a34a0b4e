"""The Parquet archive's files: GET /archives (bar, symbol, status, days; paged).

Each file holds every candle of one bar whose open time falls on one UTC day (candles/archive.py); this lists
what was written and whether it was verified. The files themselves are read from CANDLE_ARCHIVE_DIR, not served
here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from candles.api.lookups import PRICES, unknown_timeframe
from candles.api.pagination import PAGE_PARAMS, page_bounds, paginate
from candles.api.params import SYMBOL_PATTERN, TIMEFRAME_PATTERN, Query
from candles.api.serializers_archives import ArchiveFileSerializer, ArchivePageSerializer
from candles.archive_format import series_name
from candles.models import ArchiveFile, ArchiveStatus, Timeframe
from okxproject.api_errors import ApiError

DAY_DOC = "A day as YYYY-MM-DD (UTC), or any ISO 8601 instant or epoch milliseconds (its UTC day)."


def _day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), datetime.min.time(), UTC)


class ArchiveListView(APIView):
    @extend_schema(
        operation_id="archives_list",
        summary="Parquet archive files, one per bar per UTC day, newest first",
        description="Files written by the archive of candle partitions (docs/archive.md). `start` and `end` select "
                    "the files of those days, both included. 400 VALIDATION_ERROR for a malformed parameter, "
                    "INVALID_TIMEFRAMES for an unknown bar, INVALID_TIME_RANGE when start is after end.",
        parameters=[
            OpenApiParameter("bar", {"type": "string", "pattern": f"^{TIMEFRAME_PATTERN}$"},
                             description="Bar code, case-sensitive (1m is a minute, 1M a month)."),
            OpenApiParameter("symbol", {"type": "string", "pattern": f"^{SYMBOL_PATTERN}$"},
                             description="Only files holding this instrument (exact OKX id, BTC-USDT)."),
            OpenApiParameter("price", {"type": "string", "enum": list(PRICES), "default": "trade"},
                             description="With `symbol`: which of its series (trade candles, its mark price, an "
                                         "index); a file names a mark or index series `BTC-USDT-SWAP|mark`."),
            OpenApiParameter("status", {"type": "string", "enum": list(ArchiveStatus.values)},
                             description="ok: verified against PostgreSQL; written: not yet; failed: did not match."),
            OpenApiParameter("start", {"type": "string"}, description=f"First day. {DAY_DOC}"),
            OpenApiParameter("end", {"type": "string"}, description=f"Last day. {DAY_DOC}"),
            *PAGE_PARAMS,
        ],
        responses={200: ArchivePageSerializer},
        tags=["archives"],
    )
    def get(self, request: Request) -> Response:
        query = Query(request)
        code = query.text("bar", max_length=16, pattern=TIMEFRAME_PATTERN)
        symbol = query.text("symbol", max_length=64, pattern=SYMBOL_PATTERN)
        price = query.choice("price", PRICES, "trade")
        state = query.choice("status", ArchiveStatus.values)
        start = query.time("start")
        end = query.time("end")
        limit, offset = page_bounds(query)
        query.done()
        files = ArchiveFile.objects.select_related("timeframe").order_by("-start", "timeframe__display_order", "id")
        if code is not None:
            timeframe = Timeframe.objects.filter(code=code).first()
            if timeframe is None:
                raise unknown_timeframe(code, status=400)
            files = files.filter(timeframe=timeframe)
        if start is not None and end is not None and _day_start(start) > _day_start(end):
            raise ApiError("start is a later day than end.", code="INVALID_TIME_RANGE",
                           details={"start": _day_start(start).date().isoformat(),
                                    "end": _day_start(end).date().isoformat()})
        if start is not None:
            files = files.filter(start__gte=_day_start(start))
        if end is not None:
            files = files.filter(start__lte=_day_start(end))
        if symbol is not None:
            files = files.filter(inst_ids__contains=[series_name(symbol, price)])
        if state is not None:
            files = files.filter(status=state)
        page, items = paginate(request, files, limit, offset)
        return Response({**page, "results": ArchiveFileSerializer(items, many=True).data})
