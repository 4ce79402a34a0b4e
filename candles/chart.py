"""The live candlestick chart page.

The view only renders the page; its script (candles/static/candles/chart.js) reads subscriptions,
timeframes and candles from the REST API, so the page shows exactly what API clients see.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_safe


@require_safe
def chart_page(request: HttpRequest) -> HttpResponse:
    """/chart/?symbol=BTC-USDT&timeframe=1m; the page reads the query string itself, so links can be shared."""
    return render(request, "chart.html", {"api_root": _api_root(), "api_docs": _optional_url("api-docs")})


def _api_root() -> str:
    # Wherever the URL root mounts the v1 API (and under any script prefix): the base of one of its routes.
    return reverse("api-timeframes").removesuffix("timeframes")


def _optional_url(name: str) -> str | None:
    try:
        return reverse(name)
    except NoReverseMatch:
        return None
