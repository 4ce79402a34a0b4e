"""The candle list in the admin: read-only, and fast at tens of millions of rows.

The list is sorted by open time across every instrument and bar, and no index gives that order (the key
leads with the instrument, and a btree on the open time would cost 25 B a row). So it reads a window:

* by default the last 15 minutes of open times, which PostgreSQL answers from the newest leaf of each bar
  through its BRIN index (3.7 ms against 197 ms for a day's leaf; docs/storage-design.md §5);
* a chosen window (an hour, a day, one of the last seven UTC days);
* no window once a series is chosen (an exact instrument and a bar): the primary key is then walked backwards.

Even a window can hold millions of rows (a day of 1s), and sorting them all for a page of 100 took 0.7 s at
12 instruments. So the list reads the newest part of its window that holds enough rows for every page it can
show (`COUNT_BOUND` + 1: the count stops there): a minute, five, fifteen, an hour… of the window's end, the first
that is full. The rows shown are the same; only fewer are sorted.

Counts are bounded (`candles.admin_counts`). `date_hierarchy` is gone: it read min, max and the distinct days of
the open time over the whole table on every view.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from candles.admin_counts import BoundedCountChangeList, BoundedCountPaginator
from candles.bars import ms_to_datetime
from candles.models import CandleRecord, Instrument, PriceKind

WINDOWS = {
    "15m": ("last 15 minutes", timedelta(minutes=15)),
    "1h": ("last hour", timedelta(hours=1)),
    "24h": ("last 24 hours", timedelta(hours=24)),
}
DEFAULT_WINDOW = "15m"
ANY_TIME = "all"
DAYS_OFFERED = 7
# The newest parts of a window tried, shortest first, for one that holds every row the list can show.
SLICES = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
          timedelta(hours=6))
SEARCH_VAR = "q"
BAR_PARAMETER = "timeframe__id__exact"


def series_chosen(request: HttpRequest) -> bool:
    """An exact instrument searched for and a bar filtered on: one series, read along its key."""
    return bool(request.GET.get(SEARCH_VAR, "").strip() and request.GET.get(BAR_PARAMETER))


def dates_chosen(request: HttpRequest) -> bool:
    """Open-time bounds given in the URL (open_time__gte=…, open_time__year=…): the operator's own window."""
    return any(name.startswith("open_time") for name in request.GET)


class OpenTimeWindowFilter(admin.SimpleListFilter):
    title = "open time"
    parameter_name = "window"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        today = timezone.now().astimezone(UTC).date()
        choices = [(key, label) for key, (label, _) in WINDOWS.items()]
        choices += [(day.isoformat(), f"{day.isoformat()} (UTC)")
                    for day in (today - timedelta(days=back) for back in range(DAYS_OFFERED))]
        if series_chosen(request):
            choices.append((ANY_TIME, "any time"))
        return choices

    def effective(self) -> str | None:
        """The window applied: the chosen one when it is offered, else the default unless the operator chose a
        series or dates of their own."""
        value = self.value()
        if value in {key for key, _ in self.lookup_choices}:
            return value
        return None if self.open_by_default else DEFAULT_WINDOW

    def __init__(self, request: HttpRequest, params, model, model_admin) -> None:
        self.open_by_default = series_chosen(request) or dates_chosen(request)
        super().__init__(request, params, model, model_admin)

    def choices(self, changelist):
        current = self.effective()
        for lookup, title in self.lookup_choices:
            yield {
                "selected": current == lookup or (current is None and lookup == ANY_TIME),
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def bounds(self) -> tuple[datetime, datetime] | None:
        """[start, end) of the window applied, None for none."""
        value = self.effective()
        if value is None or value == ANY_TIME:
            return None
        if value in WINDOWS:
            now = timezone.now()
            return now - WINDOWS[value][1], now
        start = datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        return start, start + timedelta(days=1)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        window = self.bounds()
        if window is None:
            return queryset
        if self.effective() in WINDOWS:  # up to now, and past it: a collector's clock may run ahead
            return queryset.filter(open_time__gte=window[0])
        return queryset.filter(open_time__gte=window[0], open_time__lt=window[1])


def newest_slice(queryset: QuerySet, start: datetime, end: datetime, rows: int) -> QuerySet:
    """`queryset` (already within [start, end)) narrowed to the shortest newest part of the window that still
    holds `rows` rows; each try counts at most `rows`, reading them through the BRIN index of the open time."""
    for span in SLICES:
        lower = end - span
        if lower <= start:
            break
        candidate = queryset.filter(open_time__gte=lower)
        if candidate.order_by()[:rows].count() >= rows:
            return candidate
    return queryset


class CandleChangeList(BoundedCountChangeList):
    """Applies `newest_slice` once every filter and the search are in the query, so that it counts their rows."""

    def get_queryset(self, request: HttpRequest, exclude_parameters=None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        window = next((spec.bounds() for spec in self.filter_specs if isinstance(spec, OpenTimeWindowFilter)), None)
        if window is None:
            return queryset
        return newest_slice(queryset, *window, rows=self.model_admin.paginator.count_bound + 1)


@admin.register(CandleRecord)
class CandleAdmin(admin.ModelAdmin):
    """Read-only: candles are written only by candles_upsert."""

    list_display = ("instrument", "timeframe", "open_time", "open", "high", "low", "close", "vol",
                    "confirmed", "source", "updated_at")
    # The columns in the table's order (the model declares the shared candle columns first).
    fields = ("key", "instrument", "timeframe", "open_time", "open", "high", "low", "close", "vol", "vol_ccy",
              "vol_ccy_quote", "confirmed", "source", "version", "updated_at")
    list_filter = ("timeframe", "confirmed", "source", OpenTimeWindowFilter)
    search_fields = ("instrument__inst_id__exact",)
    search_help_text = "Exact instrument id, e.g. BTC-USDT; with a bar chosen, the whole series (any time)"
    # By the key's columns, not the related models' orderings: with an instrument and a bar chosen, the sort is
    # then the primary key's own order, and the constraint below makes it total (no extra sort key appended).
    ordering = ("-open_time", "instrument_id", "timeframe_id")
    list_select_related = ("instrument", "timeframe")
    paginator = BoundedCountPaginator
    show_full_result_count = False
    list_per_page = 100

    def get_changelist(self, request: HttpRequest, **kwargs):
        return CandleChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        # The instrument resolved here, so that the candle query names it as a constant id (its key's first
        # column) instead of joining to find it.
        term = search_term.strip()
        if not term:
            return queryset, False
        instrument_id = (Instrument.objects.filter(inst_id=term, price=PriceKind.TRADE)
                         .values_list("id", flat=True).first())
        if instrument_id is None:
            return queryset.none(), False
        return queryset.filter(instrument_id=instrument_id), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        # The key is "<instrument id>.<timeframe id>.<open time ms>"; filtering on its parts uses the
        # candle table's primary key instead of scanning the view's computed column.
        try:
            instrument_id, timeframe_id, open_ms = (int(part) for part in object_id.split("."))
        except ValueError:
            return None
        return (
            self.get_queryset(request)
            .filter(instrument_id=instrument_id, timeframe_id=timeframe_id, open_time=ms_to_datetime(open_ms))
            .first()
        )
