"""Operators' screens: what is collected, how it is doing, and the candles themselves (read-only)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html

from candles.bars import ms_to_datetime
from candles.models import CandleRecord, Gap, GapState, Instrument, Subscription, SubscriptionStatus, Timeframe
from candles.signals import subscriptions_changed

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
}


def badge(label: str, colour: str):
    return format_html(
        '<span style="background:{};color:#fff;border-radius:8px;padding:1px 8px;font-size:11px">{}</span>',
        colour, label,
    )


def human_seconds(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ("inst_id", "inst_type", "base_ccy", "quote_ccy", "settle_ccy", "state", "tick_size",
                    "lot_size", "listed_at", "expires_at", "delisted_at")
    list_filter = ("inst_type", "state", "quote_ccy")
    search_fields = ("inst_id", "base_ccy", "quote_ccy", "inst_family")
    readonly_fields = ("created_at", "updated_at")
    list_per_page = 100


@admin.register(Timeframe)
class TimeframeAdmin(admin.ModelAdmin):
    list_display = ("code", "length", "alignment", "rest_candles", "rest_history", "display_order", "is_active")
    list_editable = ("is_active",)
    list_filter = ("is_active", "utc_offset_hours", "rest_candles", "rest_history")
    search_fields = ("code",)
    ordering = ("display_order",)

    @admin.display(description="length")
    def length(self, obj: Timeframe) -> str:
        return f"{obj.months} calendar month(s)" if obj.is_calendar else human_seconds(obj.seconds)

    @admin.display(description="alignment")
    def alignment(self, obj: Timeframe) -> str:
        return obj.alignment_label

    def get_readonly_fields(self, request, obj=None):
        # The code names the OKX channel and keys stored candles; renaming it would orphan them.
        return ("code",) if obj else ()


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("instrument", "timeframe", "status_badge", "status_message", "backfill_from", "webhook_url",
                    "updated_at")
    list_filter = ("is_active", "status", "timeframe", "instrument__inst_type")
    search_fields = ("instrument__inst_id",)
    list_select_related = ("instrument", "timeframe")
    autocomplete_fields = ("instrument",)
    readonly_fields = ("status", "status_message", "created_at", "updated_at")
    actions = ("pause", "resume")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Subscription):
        key = obj.status if obj.is_active else "paused"
        return badge(key, STATUS_COLOURS.get(key, "#6e7781"))

    @admin.action(description="Pause collection of the selected subscriptions")
    def pause(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        changed = queryset.filter(is_active=True).update(is_active=False)
        transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
        self.message_user(request, f"Paused {changed} subscription(s); their candles stay.", messages.SUCCESS)

    @admin.action(description="Resume collection of the selected subscriptions")
    def resume(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        changed = queryset.filter(is_active=False).update(is_active=True, status=SubscriptionStatus.PENDING)
        transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
        self.message_user(request, f"Resumed {changed} subscription(s).", messages.SUCCESS)


@admin.register(Gap)
class GapAdmin(admin.ModelAdmin):
    list_display = ("subscription", "start", "end", "missing", "state_badge", "attempts", "reason", "updated_at")
    list_filter = ("state", "subscription__timeframe")
    search_fields = ("subscription__instrument__inst_id", "reason")
    list_select_related = ("subscription__instrument", "subscription__timeframe")
    readonly_fields = ("created_at", "updated_at")
    raw_id_fields = ("subscription",)
    date_hierarchy = "end"

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Gap):
        return badge(obj.state, GAP_COLOURS.get(obj.state, "#6e7781"))


class EstimatedCountPaginator(Paginator):
    """Counting every candle row on each page view is slow on a large table; an unfiltered list uses
    PostgreSQL's row estimate, a filtered one the exact count."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where:
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'candles_candle'")
                row = cursor.fetchone()
            if row and row[0] > 100_000:
                return row[0]
        return super().count


@admin.register(CandleRecord)
class CandleAdmin(admin.ModelAdmin):
    """Read-only: candles are written only by candles_upsert."""

    list_display = ("instrument", "timeframe", "open_time", "open", "high", "low", "close", "vol",
                    "confirmed", "source", "updated_at")
    list_filter = ("timeframe", "confirmed", "source")
    search_fields = ("instrument__inst_id__exact",)
    search_help_text = "Exact instrument id, e.g. BTC-USDT"
    date_hierarchy = "open_time"
    ordering = ("-open_time", "instrument", "timeframe")
    list_select_related = ("instrument", "timeframe")
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 100

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
