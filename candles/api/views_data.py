"""GET /data/{symbol}/{timeframe} (JSON pages, streamed CSV or Parquet) and GET /data/{symbol}/{timeframe}/latest.

Rows are built straight from the storage read's tuples (numbers already exact text from PostgreSQL) and
rendered by orjson: no serializer per candle, no Decimal, no float.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from candles.api.candle_page import latest_body, page_body
from candles.api.derived import annotate, derived_or_400
from candles.api.derived import csv_header as derived_csv_header
from candles.api.derived import csv_lines as derived_csv_lines
from candles.api.lookups import (
    PRICES,
    instrument_or_404,
    priced_series,
    symbol_not_found,
    timeframe_or_error,
    unknown_timeframe,
)
from candles.api.params import SYMBOL_PATTERN, TIMEFRAME_PATTERN, Query, is_symbol, is_timeframe, time_range
from candles.api.parquet import parquet_response
from candles.api.renderers import CsvRenderer, OrjsonRenderer, ParquetRenderer
from candles.api.serializers import CandlePageSerializer, LatestCandleSerializer
from candles.bars import datetime_to_ms
from candles.candle_shape import CANDLE_FIELDS as CANDLE_KEYS  # noqa: F401 (the name other modules import)
from candles.candle_shape import CSV_HEADER, csv_lines
from candles.derived import derived_list_text
from candles.reads import CandlePage, InvalidCursor, candle_list_text
from candles.retention import bar_horizon, iso_z
from okxproject.api_errors import ApiError
from okxproject.api_schema import ErrorEnvelopeSerializer

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# Rows per query while streaming CSV: large enough to amortise the query, small enough to stay in memory.
CSV_CHUNK = 5000

# On a CSV answer whose range reaches behind the bar's retention horizon (JSON says it in the body).
RETENTION_HEADER = "X-Retention-Horizon"

SYMBOL_PARAM = OpenApiParameter(
    "symbol", {"type": "string", "pattern": f"^{SYMBOL_PATTERN}$"}, OpenApiParameter.PATH,
    description="OKX instrument id, exact (BTC-USDT). Unknown: 404 SYMBOL_NOT_FOUND.",
    examples=[OpenApiExample("BTC-USDT", value="BTC-USDT")],
)
TIMEFRAME_PARAM = OpenApiParameter(
    "timeframe", {"type": "string", "pattern": f"^{TIMEFRAME_PATTERN}$"}, OpenApiParameter.PATH,
    description="An OKX bar, case-sensitive (1m is a minute, 1M a month), or a bar derived from them such as 7m, "
                "8H or 4Dutc (docs/api.md, Derived bars). A name that is neither: 400 INVALID_TIMEFRAMES.",
    examples=[OpenApiExample("1m", value="1m")],
)
PRICE_PARAM = OpenApiParameter(
    "price", {"type": "string", "enum": list(PRICES), "default": "trade"},
    description="Which price's candles: trade (OKX's trades, the default), mark (the mark price of a SWAP, FUTURES "
                "or OPTION instrument) or index (an OKX index such as BTC-USD). Mark and index candles carry no "
                "volumes (null) and start at 1m. An instrument id with index, a spot pair with mark: 400 "
                "INVALID_PRICE.",
    examples=[OpenApiExample("trade", value="trade"), OpenApiExample("mark of BTC-USDT-SWAP", value="mark"),
              OpenApiExample("index BTC-USD", value="index")],
)
TIME_DOC = "ISO 8601 (naive means UTC; in a query string send + as %2B) or epoch milliseconds; inclusive."
LIST_PARAMS = [
    SYMBOL_PARAM,
    TIMEFRAME_PARAM,
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                     description=f"Candles per page (default {DEFAULT_LIMIT}). CSV: every candle unless given."),
    OpenApiParameter("start_time", OpenApiTypes.STR, description=f"Earliest open time. {TIME_DOC}"),
    OpenApiParameter("end_time", OpenApiTypes.STR, description=f"Latest open time. {TIME_DOC}"),
    OpenApiParameter("sort", {"type": "string", "enum": ["asc", "desc"]},
                     description="Order of open times (default desc: newest first)."),
    OpenApiParameter("confirmed", OpenApiTypes.BOOL,
                     description="true: closed candles only; false: the open one(s) only; absent: both."),
    OpenApiParameter("cursor", {"type": "string", "maxLength": 64},
                     description="Opaque position: `pagination.next_cursor` of the previous page (which its "
                                 "`pagination.next` link carries); keep the other parameters unchanged."),
    PRICE_PARAM,
    OpenApiParameter("format", {"type": "string", "enum": ["json", "csv", "parquet"]},
                     description="csv streams text/csv (as does Accept: text/csv); parquet streams one Parquet "
                                 "file (as does Accept: application/vnd.apache.parquet)."),
]


def require_series_names(symbol: str, timeframe: str) -> None:
    """Names that cannot exist are refused before any query (PostgreSQL refuses NUL in text, for one)."""
    if not is_symbol(symbol):
        raise symbol_not_found(symbol)
    if not is_timeframe(timeframe):
        raise unknown_timeframe(timeframe, status=404)


def expired_by_policy(symbol: str, timeframe: str, horizon: datetime) -> ApiError:
    return ApiError(
        f"{timeframe} candles are kept for a limited time: none before {iso_z(horizon)} is stored any more, and "
        f"this range ends before it.", code="EXPIRED_BY_POLICY", status=410,
        details={"symbol": symbol, "timeframe": timeframe, "horizon": iso_z(horizon),
                 "horizon_ms": datetime_to_ms(horizon)},
    )


class CandleDataView(APIView):
    renderer_classes = [OrjsonRenderer, CsvRenderer, ParquetRenderer]

    @extend_schema(
        operation_id="data_list",
        summary="Candles of one instrument and bar",
        description="A page of candles (limit, start_time/end_time, sort, confirmed) in `data`, with the "
                    "following page in `pagination`, or "
                    "every matching candle as streamed CSV (format=csv or Accept: text/csv). Values are exact "
                    "decimal strings. An empty range is a page with count 0, not an error.\n\n"
                    "Bars with a retention (1s: 7 days by default) keep candles back to their horizon, now minus "
                    "the retention. A range that ends before the horizon is 410 EXPIRED_BY_POLICY with the "
                    "horizon in `details`; a range that reaches behind it (or has no start_time) serves what is "
                    "stored and says where that stops: `retention.horizon` in JSON, the "
                    f"{RETENTION_HEADER} header in CSV.",
        parameters=LIST_PARAMS,
        responses={
            (200, "application/json"): CandlePageSerializer,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description=f"Header {CSV_HEADER.strip()}. {RETENTION_HEADER}: the bar's "
                                              "retention horizon, when the range reaches behind it."),
            (200, "application/vnd.apache.parquet"): OpenApiResponse(
                OpenApiTypes.BINARY, description="One Parquet file (zstd): timestamp, open_time_ms, open, high, "
                                                 "low, close, volume, volume_currency, volume_quote, confirm; "
                                                 "numbers as exact decimal strings (docs/api.md)."),
            (410, "application/json"): OpenApiResponse(
                ErrorEnvelopeSerializer,
                description="EXPIRED_BY_POLICY: the range ends before the bar's retention horizon; details.horizon "
                            "(ISO 8601) and details.horizon_ms say from when candles are kept."),
        },
        tags=["candles"],
    )
    def get(self, request: Request, symbol: str, timeframe: str) -> Response | StreamingHttpResponse:
        require_series_names(symbol, timeframe)
        derived = derived_or_400(timeframe)  # None for a bar OKX offers (stored); else the bar it is built from
        query = Query(request)
        price = query.choice("price", PRICES, "trade")
        limit = query.integer("limit", default=None, minimum=1, maximum=MAX_LIMIT)
        start = query.time("start_time")
        end = query.time("end_time")
        descending = query.choice("sort", ("asc", "desc"), "desc") == "desc"
        confirmed = query.boolean("confirmed")
        cursor = query.text("cursor", max_length=64)
        query.done()
        time_range(start, end)
        series_id = priced_series(symbol, price, derived.source if derived else timeframe)
        horizon = bar_horizon(derived.source if derived else timeframe, now=timezone.now())
        if horizon is not None and end is not None and end < horizon:
            instrument_or_404(symbol)  # an unknown symbol is not found, whatever the range
            raise expired_by_policy(symbol, timeframe, horizon)
        # The range reaches behind the horizon: it is served from the horizon on, and the answer says so. Candles
        # behind it that wait for their partition's drop are left out, so the answer does not change when it goes.
        crossing = horizon is not None and (start is None or start < horizon)
        if crossing:
            start = horizon
        csv = request.accepted_renderer.format in ("csv", "parquet")  # both stream every candle unless limited
        chunk = (min(limit, CSV_CHUNK) if limit else CSV_CHUNK) if csv else (limit or DEFAULT_LIMIT)

        # Trade series by name (resolved in the read's own statement), mark and index ones by their row's id.
        series = {"inst_id": symbol} if series_id is None else {"instrument_id": series_id}

        def read(after: str | None, size: int) -> CandlePage:
            if derived is not None:
                return derived_list_text(bar=derived, start=start, end=end, confirmed=confirmed,
                                         descending=descending, limit=size, cursor=after, **series)
            return candle_list_text(bar=timeframe, start=start, end=end, confirmed=confirmed,
                                    descending=descending, limit=size, cursor=after, **series)

        try:
            page = read(cursor, chunk)  # read before answering: a bad cursor is a 400, not a broken stream
        except InvalidCursor as exc:
            raise ApiError(str(exc), code="INVALID_CURSOR", details={"cursor": cursor}) from None
        if not page.candles:
            # The read resolves the names itself; only an empty page needs to know whether they exist.
            instrument_or_404(symbol)
            if derived is None:
                timeframe_or_error(timeframe, status=404)
        if request.accepted_renderer.format == "parquet":
            return parquet_response(page, read, limit, symbol=symbol, timeframe=timeframe, descending=descending,
                                    horizon=horizon if crossing else None, horizon_header=RETENTION_HEADER)
        if csv:
            response = StreamingHttpResponse(_stream_csv(page, read, limit, derived is not None),
                                             content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{symbol}_{timeframe}.csv"'
            if crossing:
                response[RETENTION_HEADER] = iso_z(horizon)
            return response
        body = page_body(request, symbol, timeframe, page, limit=chunk, horizon=horizon if crossing else None,
                         price=price)
        if derived is not None:
            annotate(body, body["data"], derived, page)
        return Response(body)


def _stream_csv(first: CandlePage, read, limit: int | None, derived: bool = False) -> Iterator[bytes]:
    """Header, then pages of rows until the range (or `limit` rows) is exhausted: memory stays one page."""
    yield (derived_csv_header(CSV_HEADER) if derived else CSV_HEADER).encode()
    page, left = first, limit
    while True:
        rows = page.candles if left is None else page.candles[:left]
        yield (derived_csv_lines(csv_lines, page, rows) if derived else csv_lines(rows)).encode()
        if left is not None:
            left -= len(rows)
        if page.next_cursor is None or left == 0:
            return
        page = read(page.next_cursor, CSV_CHUNK if left is None else min(left, CSV_CHUNK))


class LatestCandleView(APIView):
    @extend_schema(
        operation_id="data_latest",
        summary="The newest candle of one instrument and bar, open or closed",
        parameters=[SYMBOL_PARAM, TIMEFRAME_PARAM, PRICE_PARAM],
        responses={
            200: LatestCandleSerializer,
            400: OpenApiResponse(ErrorEnvelopeSerializer,
                                 description="INVALID_TIMEFRAMES: neither an OKX bar nor a derived bar name."),
        },
        tags=["candles"],
    )
    def get(self, request: Request, symbol: str, timeframe: str) -> Response:
        require_series_names(symbol, timeframe)
        derived = derived_or_400(timeframe)
        query = Query(request)
        price = query.choice("price", PRICES, "trade")
        query.done()
        series_id = priced_series(symbol, price, derived.source if derived else timeframe)
        series = {"inst_id": symbol} if series_id is None else {"instrument_id": series_id}
        if derived is not None:
            page = derived_list_text(bar=derived, descending=True, limit=1, **series)
        else:
            page = candle_list_text(bar=timeframe, descending=True, limit=1, **series)
        if not page.candles:
            instrument_or_404(symbol)
            if derived is None:
                timeframe_or_error(timeframe, status=404)
            raise ApiError(f"No candle stored for {symbol} {timeframe} yet.", code="NO_DATA_FOUND",
                           status=404, details={"symbol": symbol, "timeframe": timeframe})
        body = latest_body(symbol, timeframe, page, price=price)
        if derived is not None:
            annotate(body, [body["candle"]], derived, page)
        return Response(body)
