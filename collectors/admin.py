"""The admin's operational side of the data screens: live status, and actions that queue work.

`candles/admin.py` holds the data screens and knows only the database (candles never imports collectors).
This module extends them where the pipeline is needed, by subclassing candles' ModelAdmins and registering
the subclasses in their place: one registration per model, so every screen keeps the data columns and
gains the operational ones, and `candles` still works alone. The site itself (`admin_site.py`) puts the
pipeline dashboard (`admin_dashboard.py`) on its index and mounts the dead-letter list
(`admin_dead_letters.py`).

Rules every screen keeps:
* Heavy work never runs in the request: backfill, re-verify, gap fills and instrument syncs are Celery
  tasks (`collectors/admin_tasks.py`), queued without broker retries so a broker outage is an error message
  within a second, not a hung page. Their results show in Flower, the gaps list and the dashboard.
* Nothing here can lose data: no action deletes candles, and a dead letter leaves the list only after its
  candles are in the live buffer.
* Redis being down degrades a page to a notice; it never fails it. A GET writes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin import widgets as admin_widgets
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from candles.admin import GapAdmin, InstrumentAdmin, SubscriptionAdmin
from candles.admin_labels import STATUS_COLOURS, age_label, badge
from candles.bars import datetime_to_ms
from candles.gaps import gap_retry
from candles.models import Gap, GapState, Instrument, Subscription
from collectors import admin_tasks
from collectors.admin_common import REDIS_DOWN, enqueue, redis_notice, report_queueing, screen_redis
from collectors.instruments import DEFAULT_INST_TYPES, SYNCABLE_TYPES
from collectors.monitoring.health import subscription_health
from collectors.monitoring.status import (
    ChannelStatus,
    channel_statuses,
)
from collectors.shared.connections import pipeline_keys
from okxproject.keys import Keys, priced_bar

logger = logging.getLogger(__name__)

# Instrument types a sync always covers (collectors.instruments.DEFAULT_INST_TYPES); types already stored are
# synced too.
SYNC_DEFAULT_TYPES = DEFAULT_INST_TYPES

# --- subscriptions: live status, backfill and re-verify ------------------------------------------------


class RangeForm(forms.Form):
    """The range of a backfill or re-verify action (UTC)."""

    start = forms.SplitDateTimeField(label="From (UTC)", widget=admin_widgets.AdminSplitDateTime)
    end = forms.SplitDateTimeField(label="To (UTC)", widget=admin_widgets.AdminSplitDateTime, required=False,
                                   help_text="Empty: now. Only closed candles are fetched.")

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        now = timezone.now()
        if start is None:
            return data
        end = min(end or now, now)
        if start >= end:
            raise forms.ValidationError("The range must start before it ends (and before now).")
        data["end"] = end
        return data


@dataclass(frozen=True, slots=True)
class LiveStatus:
    status: str
    message: str
    last_message_age_s: float | None


def live_statuses(
    redis: Any, keys: Keys, subscriptions: list[Subscription], now: float
) -> dict[int, LiveStatus]:
    """Each active subscription's status as the health task would set it now, from its channel in Redis."""
    pairs = [(sub.instrument.inst_id, priced_bar(sub.timeframe.code, sub.instrument.price)) for sub in subscriptions]
    channels: dict[tuple[str, str], ChannelStatus] = channel_statuses(redis, keys, pairs)
    statuses = {}
    for sub, pair in zip(subscriptions, pairs, strict=True):
        channel = channels.get(pair)
        status, message = subscription_health(channel, now=now, stale_after_s=settings.HEALTH_STALE_AFTER_S)
        age = None if channel is None or channel.last_message_at is None else max(0.0, now - channel.last_message_at)
        statuses[sub.pk] = LiveStatus(status, message, age)
    return statuses


class PipelineSubscriptionAdmin(SubscriptionAdmin):
    actions = ("pause", "resume", "backfill_range", "verify_range")

    def annotate_page(self, request: HttpRequest, subscriptions: list[Subscription]) -> None:
        super().annotate_page(request, subscriptions)
        if not subscriptions:
            return
        try:
            live = live_statuses(screen_redis(), pipeline_keys(), subscriptions, time.time())
        except REDIS_DOWN as exc:
            messages.warning(request, redis_notice(exc))
            return
        for sub in subscriptions:
            sub.live = live.get(sub.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Subscription):
        if not obj.is_active:
            return badge("paused", STATUS_COLOURS["paused"], "collection paused; its candles stay")
        live: LiveStatus | None = getattr(obj, "live", None)
        if live is None:
            # Redis unreachable (or a change form): the status the health task stored last.
            return badge(f"{obj.status} ?", STATUS_COLOURS.get(obj.status, "#6e7781"),
                         f"stored status (live status unavailable) {obj.status_message}".strip())
        label = live.status if live.last_message_age_s is None else \
            f"{live.status} · {age_label(live.last_message_age_s)}"
        title = live.message or ("last update " + age_label(live.last_message_age_s) + " ago"
                                 if live.last_message_age_s is not None else "")
        return badge(label, STATUS_COLOURS.get(live.status, "#6e7781"), title)

    @admin.action(description="Backfill a range now (queued)", permissions=["change"])
    def backfill_range(self, request: HttpRequest, queryset: QuerySet[Subscription]):
        return self._range_action(
            request, queryset, action="backfill_range", title="Backfill a range now",
            explanation="Missing and unconfirmed closed candles of the range are recorded as gaps and fetched "
                        "from OKX REST right away, within the shared REST budget. Stored candles are not touched.",
            queue=lambda sub, start_ms, end_ms: enqueue(admin_tasks.backfill_range, sub.pk, start_ms, end_ms),
            done="a backfill", where="see Flower and the gaps list.",
        )

    @admin.action(description="Re-verify a range against OKX REST (queued)", permissions=["change"])
    def verify_range(self, request: HttpRequest, queryset: QuerySet[Subscription]):
        return self._range_action(
            request, queryset, action="verify_range", title="Re-verify a range against OKX REST",
            explanation="Closed candles of the range are fetched from OKX REST and compared digit for digit with "
                        "the stored ones; missing and differing candles are rewritten from REST (a stored "
                        "version newer than the fetch is kept). Nothing is deleted. The counts appear on the "
                        "admin index.",
            queue=lambda sub, start_ms, end_ms: enqueue(admin_tasks.verify_range, sub.instrument.inst_id,
                                                        sub.timeframe.code, start_ms, end_ms, sub.instrument.price),
            done="a re-verification", where="see Flower and the reports on the admin index.",
        )

    def _range_action(self, request: HttpRequest, queryset: QuerySet[Subscription], *, action: str, title: str,
                      explanation: str, queue, done: str, where: str) -> HttpResponse | None:
        """Ask for a range (an intermediate page, like Django's delete confirmation), then queue one task per
        selected subscription."""
        form = RangeForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            start_ms = datetime_to_ms(form.cleaned_data["start"])
            end_ms = datetime_to_ms(form.cleaned_data["end"])
            queued, errors = 0, []
            for sub in queryset.select_related("instrument", "timeframe"):
                error = queue(sub, start_ms, end_ms)
                if error is None:
                    queued += 1
                else:
                    errors.append(error)
            report_queueing(request, f"Queued {done} of {queued} subscription(s); {where}" if queued else None,
                            errors)
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": title, "explanation": explanation, "form": form, "action": action,
            "subscriptions": queryset.select_related("instrument", "timeframe")[:200],
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"), "count": queryset.count(),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/pipeline/range_action.html", context)


# --- instruments: sync from OKX ------------------------------------------------------------------------


class PipelineInstrumentAdmin(InstrumentAdmin):
    def get_urls(self):
        view = self.admin_site.admin_view(self.sync_view)
        return [path("sync/", view, name="candles_instrument_sync"), *super().get_urls()]

    def sync_types(self) -> list[str]:
        stored = set(Instrument.objects.values_list("inst_type", flat=True).distinct())
        return [t for t in SYNCABLE_TYPES if t in SYNC_DEFAULT_TYPES or t in stored]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"sync_types": self.sync_types(), "can_sync": self._can_sync(request), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def _can_sync(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def sync_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self._can_sync(request):
            raise PermissionDenied
        types = self.sync_types()
        error = enqueue(admin_tasks.sync_instruments, types)
        report_queueing(request, None if error else f"Queued a sync of {', '.join(types)} instruments from OKX; "
                                                    "they appear here when it is done (see Flower).",
                        [error] if error else [])
        return HttpResponseRedirect(reverse("admin:candles_instrument_changelist"))


# --- gaps: fill now ------------------------------------------------------------------------------------


class PipelineGapAdmin(GapAdmin):
    actions = ("fill_now",)

    @admin.action(description="Fill the selected gaps now (queued; unfillable ones are tried again)",
                  permissions=["change"])
    def fill_now(self, request: HttpRequest, queryset: QuerySet[Gap]) -> None:
        reopened = overlapping = 0
        to_fill: list[int] = []
        # Filled gaps need nothing, and expired ones lie behind the retention horizon: their candles would be
        # skipped by the write as soon as fetched.
        for gap in queryset.exclude(state__in=[GapState.FILLED, GapState.EXPIRED]):
            if gap.state == GapState.UNFILLABLE:
                try:
                    gap_retry(gap.pk, f"tried again by {request.user.get_username()}; was: {gap.reason}")
                except IntegrityError:
                    overlapping += 1  # an unfinished gap starts there already, and is filled in its own right
                    continue
                reopened += 1
            to_fill.append(gap.pk)
        skipped = queryset.filter(state=GapState.FILLED).count()
        expired = queryset.filter(state=GapState.EXPIRED).count()
        notes = [f"{reopened} unfillable reopened"] if reopened else []
        notes += [f"{skipped} already filled, skipped"] if skipped else []
        notes += [f"{expired} expired by the retention policy, skipped"] if expired else []
        notes += [f"{overlapping} overlap an unfinished gap, left"] if overlapping else []
        extra = f" ({'; '.join(notes)})" if notes else ""
        if not to_fill:
            self.message_user(request, f"Nothing to fill{extra}.", messages.WARNING)
            return

        def queue_fills() -> None:
            # After commit, so a task never finds a reopened gap still unfillable. A gap whose message the
            # broker refused stays open: the scheduled fill_gaps takes it.
            errors = [error for gap_id in to_fill if (error := enqueue(admin_tasks.fill_gap, gap_id))]
            queued = len(to_fill) - len(errors)
            report_queueing(request, f"Queued fills of {queued} gap(s){extra}; watch their state here."
                            if queued else None, errors, "Those gaps stay open; the scheduled fill_gaps takes them.")

        transaction.on_commit(queue_fills)


for model, model_admin in ((Subscription, PipelineSubscriptionAdmin), (Instrument, PipelineInstrumentAdmin),
                           (Gap, PipelineGapAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
