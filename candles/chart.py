"""The live candlestick chart page.

The view only renders the page; its script (candles/static/candles/chart.js) reads subscriptions,
timeframes and candles from the REST API, so the page shows exactly what API clients see.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import get_script_prefix
from django.views.decorators.http import require_safe

# Where okxproject/urls.py mounts the v1 API, below the script prefix.
API_PATH = "api/v1/"


@require_safe
def chart_page(request: HttpRequest) -> HttpResponse:
    """/chart/?symbol=BTC-USDT&timeframe=1m; the page reads the query string itself, so links can be shared."""
    return render(request, "chart.html", {"api_root": get_script_prefix() + API_PATH})
