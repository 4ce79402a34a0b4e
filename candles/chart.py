"""The live candlestick chart page.

The view only renders the page; its script (candles/static/candles/chart.js) reads subscriptions,
timeframes and candles from the REST API, so the page shows exactly what API clients see.

For a derivative the page can overlay its mark price and its index as close-price lines. The view says which of
the two the symbol of the query string has (`chart_overlays`), so the page needs no request to show the toggles
of the chart it opens on; for a symbol chosen later the script asks GET /api/v1/instruments the same question.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_safe

from candles.models import MARK_PRICE_TYPES, Instrument, PriceKind


@require_safe
def chart_page(request: HttpRequest) -> HttpResponse:
    """/chart/?symbol=BTC-USDT&timeframe=1m; the page reads the query string itself, so links can be shared."""
    symbol = request.GET.get("symbol", "").strip()
    overlays = chart_overlays(symbol) if symbol else None
    return render(request, "chart.html", {
        "api_root": _api_root(), "api_docs": _optional_url("api-docs"), "overlays": overlays,
    })


def index_id_of(base_ccy: str, quote_ccy: str, inst_family: str, inst_id: str) -> str:
    """The OKX index a derivative follows: BTC-USDT for BTC-USDT-SWAP (its base and quote; swaps and futures
    list neither, so their instrument family, else the id's first two parts). The twin of chart.js' `indexIdOf`."""
    if base_ccy and quote_ccy:
        return f"{base_ccy}-{quote_ccy}"
    if inst_family:
        return inst_family
    return "-".join(inst_id.split("-")[:2])


def chart_overlays(symbol: str) -> dict:
    """What the chart of `symbol` can overlay: {"symbol", "mark": bool, "index": index id or None}.

    mark: the symbol has mark-price candles (its mark row exists, as `prices` of /instruments says); index: the
    derivative's underlying index exists (an INDEX row with index candles). A spot pair or an index has neither.
    """
    rows = {row.price: row for row in Instrument.objects.filter(inst_id=symbol)}
    trade = rows.get(PriceKind.TRADE)
    if trade is None or trade.inst_type not in MARK_PRICE_TYPES:
        return {"symbol": symbol, "mark": False, "index": None}
    index_id = index_id_of(trade.base_ccy, trade.quote_ccy, trade.inst_family, trade.inst_id)
    has_index = Instrument.objects.filter(inst_id=index_id, price=PriceKind.INDEX).exists()
    return {"symbol": symbol, "mark": PriceKind.MARK in rows, "index": index_id if has_index else None}


def _api_root() -> str:
    # Wherever the URL root mounts the v1 API (and under any script prefix): the base of one of its routes.
    return reverse("api-timeframes").removesuffix("timeframes")


def _optional_url(name: str) -> str | None:
    try:
        return reverse(name)
    except NoReverseMatch:
        return None
