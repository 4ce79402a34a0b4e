"""The Prometheus text exposition as a DRF renderer, so content negotiation and the schema know its type."""

from __future__ import annotations

from typing import Any

from rest_framework.renderers import BaseRenderer

from collectors.monitoring.metrics import CONTENT_TYPE


class PrometheusTextRenderer(BaseRenderer):
    """Text for any client accepting text/plain (with or without Prometheus' `version=0.0.4`) or */*.

    DRF requires a client's Accept to carry every parameter of the renderer's media type, so the version is
    not declared here (a plain `Accept: */*` would be refused); the view sets the exact Content-Type.
    """

    media_type = "text/plain"
    format = "prometheus"
    charset = "utf-8"
    content_type = CONTENT_TYPE

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if not isinstance(data, str):
            raise TypeError("the metrics view renders exposition text only (errors are JSON envelopes)")
        return data.encode("utf-8")
