"""Content negotiation: DRF's, except that an OPTIONS answer is always JSON.

OPTIONS answers with metadata (a dict: the view's name, description, renderers and parsers). DRF renders it
with whatever renderer the request negotiated, and some views offer only renderers that cannot render a dict:
the Prometheus text of /metrics refused it (a TypeError, answered 500), and the CSV renderer of /data, which
only lets the view stream by itself, would have too (OPTIONS /data/...?format=csv). Metadata is JSON for every
view, whatever the view's renderers or the client's Accept header.
"""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

from candles.api.renderers import OrjsonRenderer


class JsonOptionsNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request: Request, renderers: list[BaseRenderer],
                        format_suffix: Any = None) -> tuple[BaseRenderer, str]:
        if request.method == "OPTIONS":
            return OrjsonRenderer(), OrjsonRenderer.media_type
        return super().select_renderer(request, renderers, format_suffix)
