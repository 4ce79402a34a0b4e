"""Renderers: JSON through orjson (the API's default), and the CSV media type of the candle endpoint."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from django.utils.functional import Promise
from rest_framework.renderers import BaseRenderer
from rest_framework.utils import encoders

# Non-string keys: DRF's errors of list items are keyed by index.
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def _default(value: object) -> str:
    # Decimals keep their exact digits as strings (str of a Decimal never rounds); lazy translations (DRF's
    # messages) become text.
    if isinstance(value, Decimal | Promise):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> bytes:
    try:
        return orjson.dumps(data, default=_default, option=_OPTIONS)
    except TypeError:
        # What orjson refuses but JSON allows (an integer beyond 64 bits echoed from a request): the
        # standard library, through DRF's encoder (datetimes, Decimals, lazy strings).
        return json.dumps(data, cls=encoders.JSONEncoder, separators=(",", ":")).encode()


class OrjsonRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None  # JSON is UTF-8 by definition; no charset parameter

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        return dumps(data)


class CsvRenderer(BaseRenderer):
    """Lets content negotiation pick CSV (`?format=csv` or `Accept: text/csv`).

    Views that offer it stream the CSV themselves (a StreamingHttpResponse, see candles.api.views_data), so
    nothing is ever rendered here; errors are JSON envelopes whatever was negotiated.
    """

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        raise NotImplementedError("CSV is streamed by the view itself")


class ParquetRenderer(BaseRenderer):
    """Lets content negotiation pick Parquet (`?format=parquet` or `Accept: application/vnd.apache.parquet`).

    As with CSV, the view streams the file itself (candles.api.parquet) and errors are JSON envelopes.
    """

    media_type = "application/vnd.apache.parquet"
    format = "parquet"
    charset = None  # binary

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        raise NotImplementedError("Parquet is streamed by the view itself")
