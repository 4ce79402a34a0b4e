"""Operators' screens over the data: instruments, bars, subscriptions, gaps and the candles (read-only).

This module knows only the database. The pipeline's live side (status from Redis, dead letters, the
dashboard, actions that queue Celery work) is added by `collectors/admin.py`, which subclasses the admins
here and registers the subclasses in their place: `candles` never imports `collectors`.

Nothing here can lose data: candles are read-only, instruments and bars cannot be deleted (candles are
keyed by them; OKX's delistings are recorded by the instrument sync instead), and a subscription's pair is
fixed once created (its gaps belong to that pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import widgets as admin_widgets
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import connection, models, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from candles import admin_archives, admin_candles, admin_rules  # noqa: F401  (register their screens; kept in their own modules)
from candles.admin_counts import EstimatedCountPaginator
from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import (
    Gap,
    GapState,
    Instrument,
    InstrumentType,
    PriceKind,
    Subscription,
    SubscriptionStatus,
    Timeframe,
)
from candles.price_series import PriceSeriesError
from candles.signals import subscriptions_changed
from candles.subscriptions import UnknownNames, subscriptions_create

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
UNFINISHED_GAP_STATES = (GapState.OPEN, GapState.FILLING)

# Completeness covers the last day; a candle closed this recently may still be in the live buffer (flushed
# about every second), so it is not expected yet.
COMPLETENESS_WINDOW = timedelta(hours=24)
COMPLETENESS_SETTLE = timedelta(seconds=15)
# Instruments × bars one bulk subscribe may create; each pair is a channel the collectors must carry.
MAX_BULK_PAIRS = 2_000
# Instruments offered in the bulk subscribe picker (narrow with the filters, or tick "all matching").
MAX_PICKER_INSTRUMENTS = 3_000
# Subscriptions a result page links to as one changelist filter (`?id__in=`): URLs must stay short.
MAX_LINKED_IDS = 400


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


# --- bulk subscribe ------------------------------------------------------------------------------------


def subscribable_instruments() -> QuerySet[Instrument]:
    """What `subscriptions_create` accepts: live instruments OKX still lists."""
    return Instrument.objects.filter(state="live", delisted_at__isnull=True)


class InstrumentFilterForm(forms.Form):
    """Narrows the instruments offered by the bulk subscribe page (sent with GET, carried along in the POST).

    `price` picks which rows are offered and subscribed: every instrument id has a trade row, a derivative a mark
    row too, an index an index row only (docs/price-kinds.md); empty means trade, as before price kinds.
    """

    price = forms.ChoiceField(label="series", required=False, choices=[
        ("", "trade (OKX's trades)"), (PriceKind.MARK, "mark price"), (PriceKind.INDEX, "index")])
    inst_type = forms.ChoiceField(label="type", required=False)
    quote_ccy = forms.ChoiceField(label="quote currency", required=False)
    q = forms.CharField(label="search", required=False, max_length=64)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        live = subscribable_instruments()
        self.fields["inst_type"].choices = [("", "any type")] + [
            (value, label) for value, label in InstrumentType.choices
        ]
        quotes = live.exclude(quote_ccy="").order_by("quote_ccy").values_list("quote_ccy", flat=True).distinct()
        self.fields["quote_ccy"].choices = [("", "any quote currency")] + [(q, q) for q in quotes]

    def matching(self) -> QuerySet[Instrument]:
        instruments = subscribable_instruments()
        if not self.is_valid():
            return instruments.none()
        data = self.cleaned_data
        instruments = instruments.filter(price=self.price_kind())
        if data["inst_type"]:
            instruments = instruments.filter(inst_type=data["inst_type"])
        if data["quote_ccy"]:
            instruments = instruments.filter(quote_ccy=data["quote_ccy"])
        if data["q"]:
            term = data["q"].strip()
            instruments = instruments.filter(
                Q(inst_id__icontains=term) | Q(base_ccy__iexact=term) | Q(inst_family__icontains=term)
            )
        return instruments.order_by("inst_id")

    def price_kind(self) -> str:
        """The series kind chosen (trade unless mark or index); call after is_valid."""
        return self.cleaned_data.get("price") or PriceKind.TRADE


class BulkSubscribeForm(forms.Form):
    instruments = forms.ModelMultipleChoiceField(
        queryset=Instrument.objects.none(), required=False,
        widget=admin_widgets.FilteredSelectMultiple("instruments", is_stacked=False),
    )
    all_matching = forms.BooleanField(
        required=False, label="Every instrument matching the filter",
        help_text="Instead of picking: subscribe every live instrument the filter above matches.",
    )
    timeframes = forms.ModelMultipleChoiceField(
        queryset=Timeframe.objects.none(), to_field_name="code", widget=forms.CheckboxSelectMultiple,
        help_text="Bars are case-sensitive: 1m is a minute, 1M a month.",
    )
    backfill_from = forms.SplitDateTimeField(
        required=False, label="History from (UTC)", widget=admin_widgets.AdminSplitDateTime,
        help_text="Optional: fetch candles from this moment on through REST. Empty: only the recent past.",
    )
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https",
                                 help_text="Optional: POST every confirmed candle of these subscriptions here.")

    def __init__(self, *args, matching: QuerySet[Instrument], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.matching = matching
        self.fields["instruments"].queryset = matching
        self.fields["timeframes"].queryset = Timeframe.objects.filter(is_active=True).order_by("display_order")

    def clean_backfill_from(self) -> datetime | None:
        value = self.cleaned_data["backfill_from"]
        if value is not None and value > timezone.now():
            raise forms.ValidationError("History cannot start in the future.")
        return value

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        if data.get("all_matching"):
            inst_ids = list(self.matching.values_list("inst_id", flat=True))
        else:
            inst_ids = [instrument.inst_id for instrument in data.get("instruments") or ()]
        if not inst_ids:
            raise forms.ValidationError("Pick at least one instrument, or tick “every instrument matching”.")
        pairs = len(inst_ids) * len(data["timeframes"])
        if pairs > MAX_BULK_PAIRS:
            raise forms.ValidationError(
                f"That is {pairs:,} subscriptions; at most {MAX_BULK_PAIRS:,} at once. Narrow the filter."
            )
        data["inst_ids"] = inst_ids
        return data


# --- model admins --------------------------------------------------------------------------------------


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ("inst_id", "price", "inst_type", "base_ccy", "quote_ccy", "settle_ccy", "state", "tick_size",
                    "lot_size", "listed_at", "expires_at", "delisted_at")
    list_filter = ("price", "inst_type", "state", "quote_ccy")
    search_fields = ("inst_id", "base_ccy", "quote_ccy", "inst_family")
    readonly_fields = ("created_at", "updated_at")
    list_per_page = 100

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Candles are keyed by the instrument; OKX's delistings are recorded by the sync, never by deleting.
        return False


# Longer than any history OKX has, and far from the dates PostgreSQL and Python cannot subtract it from.
MAX_RETENTION = timedelta(days=100 * 366)


class TimeframeForm(forms.ModelForm):
    class Meta:
        model = Timeframe
        fields = ["code", "seconds", "months", "utc_offset_hours", "anchor", "rest_candles", "rest_history",
                  "display_order", "is_active", "retention", "archive"]
        help_texts = {
            "retention": "How long candles of this bar are kept, as days and time: 7 00:00:00 is seven days. "
                         "Empty keeps them forever. Whole partitions are dropped once their end is behind now "
                         "minus this (a 1s partition is a day, a 1m one a month, longer bars' a year), so up to "
                         "one partition more is kept. Shortening it drops data at the next maintenance run.",
            "archive": "Write each partition to a verified Parquet file (CANDLE_ARCHIVE_DIR) before it is dropped. "
                       "While archiving is unavailable, nothing of this bar is dropped.",
        }

    def clean_retention(self) -> timedelta | None:
        retention = self.cleaned_data.get("retention")
        if retention is None:
            return None
        if retention <= timedelta(0):
            raise forms.ValidationError("The retention must be positive; leave it empty to keep candles forever.")
        if retention > MAX_RETENTION:
            raise forms.ValidationError("More than 100 years is not a retention; leave it empty to keep candles "
                                        "forever.")
        months = self.cleaned_data.get("months", getattr(self.instance, "months", 0)) or 0
        seconds = self.cleaned_data.get("seconds", getattr(self.instance, "seconds", 0)) or 0
        bar = timedelta(days=28 * months) if months else timedelta(seconds=seconds)
        if retention < bar:
            raise forms.ValidationError(f"Shorter than one bar ({human_seconds(int(bar.total_seconds()))}): no "
                                        f"closed candle would be kept.")
        return retention


@admin.register(Timeframe)
class TimeframeAdmin(admin.ModelAdmin):
    form = TimeframeForm
    list_display = ("code", "length", "alignment", "rest_candles", "rest_history", "kept", "archive",
                    "display_order", "is_active")
    list_editable = ("is_active",)
    list_filter = ("is_active", "utc_offset_hours", "rest_candles", "rest_history", "archive")
    search_fields = ("code",)
    ordering = ("display_order",)

    @admin.display(description="length")
    def length(self, obj: Timeframe) -> str:
        return f"{obj.months} calendar month(s)" if obj.is_calendar else human_seconds(obj.seconds)

    @admin.display(description="kept", ordering="retention")
    def kept(self, obj: Timeframe) -> str:
        return retention_label(obj.retention)

    @admin.display(description="alignment")
    def alignment(self, obj: Timeframe) -> str:
        return obj.alignment_label

    def get_readonly_fields(self, request, obj=None):
        # The code names the OKX channel and keys stored candles; renaming it would orphan them.
        return ("code",) if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # candles are keyed by the bar; deactivate it instead


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("instrument", "timeframe", "status_badge", "last_confirmed", "completeness_24h", "open_gaps",
                    "backfill_from", "updated_at")
    list_filter = ("is_active", "status", "timeframe", "instrument__price", "instrument__inst_type",
                   "instrument__quote_ccy")
    search_fields = ("instrument__inst_id",)
    list_select_related = ("instrument", "timeframe")
    autocomplete_fields = ("instrument",)
    readonly_fields = ("status", "status_message", "webhook_failures", "webhook_last_error", "created_at",
                       "updated_at")
    actions = ("pause", "resume")
    # Each row's figures count its candles of the last day: 86,400 index entries for a 1s bar, 20–45 ms on
    # the 2-core development machine. Fifty rows keep a page of 1s subscriptions near a second or two.
    list_per_page = 50
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    # --- the page's figures

    def get_changelist(self, request: HttpRequest, **kwargs):
        return SubscriptionChangeList

    def annotate_page(self, request: HttpRequest, subscriptions: list[Subscription]) -> None:
        """Attach per-row figures to one page of subscriptions; subclasses add their own."""
        figures = subscription_figures(subscriptions)
        for sub in subscriptions:
            sub.figures = figures.get(sub.pk)

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = super().get_readonly_fields(request, obj)
        # The pair is the subscription's identity: its gaps and figures belong to it. Subscribe anew instead.
        return ("instrument", "timeframe", *fields) if obj else fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Subscription):
        key = obj.status if obj.is_active else "paused"
        return badge(key, STATUS_COLOURS.get(key, "#6e7781"), obj.status_message)

    @admin.display(description="last confirmed candle")
    def last_confirmed(self, obj: Subscription):
        figures: SubscriptionFigures | None = getattr(obj, "figures", None)
        if figures is None or figures.last_confirmed is None:
            return "–"
        moment = figures.last_confirmed
        return format_html('<span title="{}">{}</span>', moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S"))

    @admin.display(description="complete (24 h)")
    def completeness_24h(self, obj: Subscription):
        figures: SubscriptionFigures | None = getattr(obj, "figures", None)
        if figures is None or figures.completeness is None:
            return "–"
        share = figures.completeness
        colour = "#1a7f37" if figures.stored >= figures.expected else "#bf8700" if share >= 99 else "#cf222e"
        return format_html(
            '<span title="{} of {} closed candles stored, confirmed" style="color:{}">{} %</span>',
            f"{figures.stored:,}", f"{figures.expected:,}", colour, f"{share:.2f}".rstrip("0").rstrip("."),
        )

    @admin.display(description="open gaps")
    def open_gaps(self, obj: Subscription):
        figures: SubscriptionFigures | None = getattr(obj, "figures", None)
        if figures is None:
            return "–"
        if not figures.open_gaps:
            return "0"
        url = reverse("admin:candles_gap_changelist")
        return format_html(
            '<a href="{}?subscription__id__exact={}&amp;state__in=open,filling">{} ({} missing)</a>',
            url, obj.pk, figures.open_gaps, f"{figures.missing_in_gaps:,}",
        )

    # --- actions

    @admin.action(description="Pause collection of the selected subscriptions", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        changed = queryset.filter(is_active=True).update(is_active=False)
        transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
        self.message_user(request, f"Paused {changed} subscription(s); their candles stay.", messages.SUCCESS)

    @admin.action(description="Resume collection of the selected subscriptions", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        changed = queryset.filter(is_active=False).update(is_active=True, status=SubscriptionStatus.PENDING,
                                                                   ended_at=None)
        transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
        self.message_user(request, f"Resumed {changed} subscription(s).", messages.SUCCESS)

    # --- subscribe many at once

    def get_urls(self):
        view = self.admin_site.admin_view(self.subscribe_view)
        return [path("subscribe/", view, name="candles_subscription_subscribe"), *super().get_urls()]

    def subscribe_view(self, request: HttpRequest) -> HttpResponse:
        """Instruments (searchable, filtered by type and quote currency) × bars, with an optional history start."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        source = request.POST if request.method == "POST" else request.GET
        filters = InstrumentFilterForm(source)
        matching = filters.matching()
        form = BulkSubscribeForm(request.POST if request.method == "POST" else None, matching=matching)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": "Subscribe instruments × bars", "filters": filters, "form": form,
            "matching_count": matching.count(), "picker_limit": MAX_PICKER_INSTRUMENTS,
            "media": self.media + form.media,
        }
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                result = subscriptions_create(
                    inst_ids=data["inst_ids"], bars=[tf.code for tf in data["timeframes"]],
                    backfill_from=data["backfill_from"], webhook_url=data["webhook_url"] or "",
                    price=filters.price_kind(),
                )
            except UnknownNames as exc:  # an instrument delisted or a bar deactivated since the page was drawn
                form.add_error(None, str(exc))
            except PriceSeriesError as exc:  # 1s ticked for mark-price or index series
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    f"{len(result.created)} created, {len(result.reactivated)} resumed, "
                    f"{len(result.unchanged)} already subscribed.",
                    messages.SUCCESS,
                )
                subscriptions = result.subscriptions
                ids = ",".join(str(sub.pk) for sub in subscriptions)
                context.update({
                    "title": "Subscribed", "result": result,
                    "rows": [(sub, "created") for sub in result.created]
                    + [(sub, "resumed") for sub in result.reactivated]
                    + [(sub, "already subscribed") for sub in result.unchanged],
                    "list_url": f"{reverse('admin:candles_subscription_changelist')}?id__in={ids}"
                    if len(subscriptions) <= MAX_LINKED_IDS else None,
                })
                return TemplateResponse(request, "admin/candles/subscription/subscribe_done.html", context)
        # Picks are validated against every matching instrument; the picker offers a bounded number of them.
        form.fields["instruments"].queryset = matching[:MAX_PICKER_INSTRUMENTS]
        return TemplateResponse(request, "admin/candles/subscription/subscribe.html", context)


@admin.register(Gap)
class GapAdmin(admin.ModelAdmin):
    list_display = ("subscription", "start", "end", "missing", "state_badge", "priority", "attempts", "reason",
                    "updated_at")
    # A date filter instead of a date hierarchy: the hierarchy reads min/max and the distinct days of `end`
    # over the whole table on every view (100 ms at 100,000 gaps), the filter's choices are fixed.
    list_filter = ("state", "priority", ("end", admin.DateFieldListFilter), "subscription__timeframe")
    search_fields = ("subscription__instrument__inst_id", "reason")
    list_select_related = ("subscription__instrument", "subscription__timeframe")
    readonly_fields = ("created_at", "updated_at")
    raw_id_fields = ("subscription",)
    # Newest recorded first, along the primary key: ordering by `end` has no index to walk, so every view
    # sorted the whole table (170 ms at 100,000 gaps). Filtered views walk the same index until a page is full.
    ordering = ("-id",)
    # The table only grows (filled gaps stay as the record): no exact count of it on every view.
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Gap):
        return badge(obj.state, GAP_COLOURS.get(obj.state, "#6e7781"))
