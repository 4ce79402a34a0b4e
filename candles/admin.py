"""Operators' screens over the data: instruments, bars, subscriptions, gaps and the candles (read-only).

This module knows only the database. The pipeline's live side (status from Redis, dead letters, the
dashboard, actions that queue Celery work) is added by `collectors/admin.py`, which subclasses the admins
here and registers the subclasses in their place: `candles` never imports `collectors`.

Nothing here can lose data: candles are read-only, instruments and bars cannot be deleted (candles are
keyed by them; OKX's delistings are recorded by the instrument sync instead), and a subscription's pair is
fixed once created (its gaps belong to that pair).
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from candles import admin_archives, admin_candles, admin_rules  # noqa: F401  (register their screens; kept in their own modules)
from candles.admin_bulk import MAX_LINKED_IDS, MAX_PICKER_INSTRUMENTS, BulkSubscribeForm, InstrumentFilterForm
from candles.admin_counts import EstimatedCountPaginator
from candles.admin_figures import SubscriptionChangeList, SubscriptionFigures, subscription_figures
from candles.admin_labels import GAP_COLOURS, STATUS_COLOURS, badge, human_seconds, retention_label
from candles.models import (
    Gap,
    Instrument,
    Subscription,
    SubscriptionStatus,
    Timeframe,
)
from candles.price_series import PriceSeriesError
from candles.signals import subscriptions_changed
from candles.subscriptions import UnknownNames, subscriptions_create

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
