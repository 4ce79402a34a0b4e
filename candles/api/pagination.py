"""Limit/offset pages for the list endpoints: {"count", "next", "previous", "results"}.

Bad values are 400 VALIDATION_ERROR (not silently replaced, as DRF's paginator does), like every parameter.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request

from candles.api.params import Query

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_OFFSET = 10_000_000

PAGE_PARAMS = [
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                     description=f"Items per page (default {DEFAULT_LIMIT})."),
    OpenApiParameter("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                     description="Items to skip (default 0)."),
]


def page_bounds(query: Query) -> tuple[int, int]:
    limit = query.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    offset = query.integer("offset", default=0, minimum=0, maximum=MAX_OFFSET)
    return limit, offset


def _link(request: Request, offset: int, limit: int) -> str:
    query = request.query_params.copy()
    query["offset"] = str(offset)
    query["limit"] = str(limit)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def paginate(request: Request, queryset: QuerySet, limit: int, offset: int) -> tuple[dict[str, Any], list]:
    """The page envelope without `results`, and the page's objects."""
    count = queryset.count()
    items = list(queryset[offset:offset + limit])
    following = offset + limit
    page = {
        "count": count,
        "next": _link(request, following, limit) if following < count else None,
        "previous": _link(request, max(offset - limit, 0), limit) if offset > 0 else None,
    }
    return page, items
