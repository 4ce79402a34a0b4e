"""The subscription list's per-page figures (last candle, lag, completeness over the last 24 h, open gaps), read in
one statement for the rows on the page rather than per row, and the change list that attaches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.admin.views.main import ChangeList
from django.db import connection
from django.http import HttpRequest
from django.utils import timezone

from candles import admin_archives, admin_candles, admin_rules  # noqa: F401  (register their screens; kept in their own modules)
from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import (
    Subscription,
)

# Completeness covers the last day; a candle closed this recently may still be in the live buffer (flushed
# about every second), so it is not expected yet.
COMPLETENESS_WINDOW = timedelta(hours=24)
COMPLETENESS_SETTLE = timedelta(seconds=15)

# --- per-page figures of subscriptions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletenessWindow:
    first_ms: int  # first expected open time
    last_ms: int  # last expected open time, inclusive
    expected: int


def completeness_window(subscription: Subscription, now: datetime) -> CompletenessWindow | None:
    """The closed candles a subscription should hold from the last 24 h (None when it should hold none yet).

    The window starts at the latest of now − 24 h, the instrument's listing and the start of the
    subscription's responsibility (`backfill_from`, else its creation), and ends at the newest candle that
    closed at least COMPLETENESS_SETTLE ago, or the instrument's expiry or delisting. Open times follow the
    bar's own boundaries (UTC+8 for 6H and longer, calendar months), as `expected_open_times` does.
    """
    spec = subscription.timeframe.spec
    instrument = subscription.instrument
    start = max(now - COMPLETENESS_WINDOW, subscription.backfill_from or subscription.created_at)
    if instrument.listed_at is not None:
        start = max(start, instrument.listed_at)
    first_ms = spec.ceil(datetime_to_ms(start))
    newest_closed = spec.floor(spec.floor(datetime_to_ms(now - COMPLETENESS_SETTLE)) - 1)
    last_ms = newest_closed
    for ending in (instrument.expires_at, instrument.delisted_at):
        if ending is not None:  # nothing opens after the instrument left OKX
            last_ms = min(last_ms, spec.floor(datetime_to_ms(ending) - 1))
    expected = spec.count(first_ms, last_ms)
    return CompletenessWindow(first_ms, last_ms, expected) if expected else None


@dataclass(frozen=True, slots=True)
class SubscriptionFigures:
    expected: int  # closed candles due in the window
    stored: int  # confirmed candles stored in the window
    last_confirmed: datetime | None  # open time of the newest confirmed candle stored, at any time
    open_gaps: int  # gaps open or being filled
    missing_in_gaps: int  # open times those gaps held when found

    @property
    def completeness(self) -> float | None:
        return None if not self.expected else min(100.0, 100.0 * self.stored / self.expected)


# One statement per page of subscriptions; each lateral part walks the candle table's primary key
# (instrument, timeframe, open time) or the gap table's subscription index for one subscription.
_PAGE_FIGURES = """
SELECT w.id, coalesce(stored.n, 0), newest.open_time, gaps.n, gaps.missing
FROM unnest(%s::bigint[], %s::integer[], %s::smallint[], %s::timestamptz[], %s::timestamptz[])
     AS w(id, instrument_id, timeframe_id, first_open, last_open)
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM candles_candle c
    WHERE c.instrument_id = w.instrument_id AND c.timeframe_id = w.timeframe_id
      AND c.open_time BETWEEN w.first_open AND w.last_open AND c.confirmed
) stored ON w.first_open IS NOT NULL
LEFT JOIN LATERAL (
    SELECT c.open_time FROM candles_candle c
    WHERE c.instrument_id = w.instrument_id AND c.timeframe_id = w.timeframe_id AND c.confirmed
    ORDER BY c.open_time DESC LIMIT 1
) newest ON true
CROSS JOIN LATERAL (
    SELECT count(*) AS n, coalesce(sum(g.missing), 0) AS missing FROM candles_gap g
    WHERE g.subscription_id = w.id AND g.state IN ('open', 'filling')
) gaps
"""


def subscription_figures(
    subscriptions: Sequence[Subscription], *, now: datetime | None = None
) -> dict[int, SubscriptionFigures]:
    """Completeness of the last 24 h, newest confirmed candle and open gaps of each subscription, in one query.

    The subscriptions need their instrument and timeframe loaded (`select_related`).
    """
    if not subscriptions:
        return {}
    now = now or timezone.now()
    windows = {sub.pk: completeness_window(sub, now) for sub in subscriptions}
    columns: tuple[list, ...] = ([], [], [], [], [])
    for sub in subscriptions:
        window = windows[sub.pk]
        for column, value in zip(columns, (
            sub.pk, sub.instrument_id, sub.timeframe_id,
            None if window is None else ms_to_datetime(window.first_ms),
            None if window is None else ms_to_datetime(window.last_ms),
        ), strict=True):
            column.append(value)
    with connection.cursor() as cursor:
        cursor.execute(_PAGE_FIGURES, list(columns))
        rows = cursor.fetchall()
    return {
        pk: SubscriptionFigures(
            expected=0 if windows[pk] is None else windows[pk].expected,
            stored=stored, last_confirmed=last_confirmed, open_gaps=gaps, missing_in_gaps=int(missing),
        )
        for pk, stored, last_confirmed, gaps, missing in rows
    }


class SubscriptionChangeList(ChangeList):
    """Hands the page's subscriptions to the admin once, so per-row figures cost one query per page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Evaluating the page here fills its result cache: the template renders these same objects.
        self.model_admin.annotate_page(request, list(self.result_list))
