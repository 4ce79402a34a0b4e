"""The body of GET /data/{symbol}/{timeframe} as JSON: the v1 contract's `CandleDataResponse`.

    {"symbol", "timeframe", "count", "data": [candle, ...], "pagination": {"next", "next_cursor", "has_more",
     "limit"}, "retention"?: {"horizon"}}

`data` holds candles in the one shape of candles.candle_shape. `pagination.next` is the link to the following
page (same filters), `next_cursor` the bare cursor in it, for clients that build their own URLs; both are null
on the last page, where `has_more` is false. `retention` is the project's addition: present only when the
range reaches behind the bar's retention horizon.
"""

from __future__ import annotations

from datetime import datetime

from rest_framework.request import Request

from candles.candle_shape import candle_dicts
from candles.reads import CandlePage
from candles.retention import iso_z


def next_url(request: Request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    query = request.query_params.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def page_body(request: Request, symbol: str, timeframe: str, page: CandlePage, *, limit: int,
              horizon: datetime | None = None, price: str = "trade") -> dict:
    body = {
        "symbol": symbol,
        "timeframe": timeframe,
        "count": len(page.candles),
        "data": candle_dicts(page.candles),
        "pagination": {
            "next": next_url(request, page.next_cursor),
            "next_cursor": page.next_cursor,
            "has_more": page.next_cursor is not None,
            "limit": limit,
        },
    }
    if horizon is not None:
        body["retention"] = {"horizon": iso_z(horizon)}
    if price != "trade":
        # Trade pages keep exactly the seed's keys; the others say which price they hold.
        body["price"] = price
    return body


def latest_body(symbol: str, timeframe: str, page: CandlePage, *, price: str = "trade") -> dict:
    body = {"symbol": symbol, "timeframe": timeframe, "candle": candle_dicts(page.candles[:1])[0]}
    if price != "trade":
        body["price"] = price
    return body
