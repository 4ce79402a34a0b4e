"""The little pieces every operator screen shares: coloured badges for states, and durations as people read them
("3 h 20 min", "kept 30 days").
"""

from __future__ import annotations

from datetime import timedelta

from django.utils.html import format_html

from candles import admin_archives, admin_candles, admin_rules  # noqa: F401  (register their screens; kept in their own modules)
from candles.models import (
    GapState,
    SubscriptionStatus,
)

STATUS_COLOURS = {
    SubscriptionStatus.LIVE: "#1a7f37",
    SubscriptionStatus.PENDING: "#6e7781",
    SubscriptionStatus.STALE: "#bf8700",
    SubscriptionStatus.ERROR: "#cf222e",
    "paused": "#57606a",
}
GAP_COLOURS = {
    GapState.OPEN: "#bf8700",
    GapState.FILLING: "#0969da",
    GapState.FILLED: "#1a7f37",
    GapState.UNFILLABLE: "#cf222e",
    GapState.EXPIRED: "#57606a",
}


def badge(label: str, colour: str, title: str = ""):
    return format_html(
        '<span title="{}" style="background:{};color:#fff;border-radius:8px;padding:1px 8px;font-size:11px;'
        'white-space:nowrap">{}</span>',
        title, colour, label,
    )


def human_seconds(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def retention_label(retention: timedelta | None) -> str:
    """How long a bar keeps its candles: "forever", "7 days", "36 hours", "90 min"."""
    if retention is None:
        return "forever"
    seconds = int(retention.total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def age_label(seconds: float) -> str:
    """A short age for status columns: "4 s", "12 min", "3 h", "2 d"."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
