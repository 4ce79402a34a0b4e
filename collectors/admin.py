"""The admin's operational side: live status, the pipeline dashboard, dead letters, and actions that queue work.

`candles/admin.py` holds the data screens and knows only the database (candles never imports collectors).
This module extends them where the pipeline is needed, by subclassing candles' ModelAdmins and registering
the subclasses in their place: one registration per model, so every screen keeps the data columns and
gains the operational ones, and `candles` still works alone. The pipeline pages (the dashboard on the admin
index and the dead-letter list) have no model; they are mounted on the admin site by `mount_pipeline_views`.

Rules every screen here keeps:
* Heavy work never runs in the request: backfill, re-verify, gap fills and instrument syncs are Celery
  tasks (`collectors/admin_tasks.py`), queued without broker retries so a broker outage is an error message
  within a second, not a hung page. Their results show in Flower, the gaps list and the dashboard.
* Nothing here can lose data: no action deletes candles, and a dead letter leaves the list only after its
  candles are in the live buffer.
* Redis being down degrades a page to a notice; it never fails it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import redis as redis_lib
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin import widgets as admin_widgets
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from candles.admin import (
    STATUS_COLOURS,
    GapAdmin,
    InstrumentAdmin,
    SubscriptionAdmin,
    age_label,
    badge,
    retention_label,
)
from candles.bars import datetime_to_ms
from candles.models import Gap, GapState, Instrument, Subscription, SubscriptionStatus
from candles.retention import human_bytes
from candles.storage_stats import storage_by_bar
from collectors import admin_tasks
from collectors.api.subscriptions import bar_specs_by_code, limit_statements, worst_lags
from collectors.api.system import gap_summary
from collectors.instruments import DEFAULT_INST_TYPES, SYNCABLE_TYPES
from collectors.live.deadletters import dead_letters_count, dead_letters_newest, dead_letters_reingest
from collectors.monitoring.health import subscription_health
from collectors.monitoring.repair_report import PRIORITIES
from collectors.monitoring.replicas import ShardReplicas
from collectors.monitoring.status import (
    ChannelStatus,
    channel_statuses,
    collector_statuses,
    pipeline_overview,
)
from collectors.okx.rest import CANDLE_BUDGETS, INDEX_TICKERS, INSTRUMENTS, Endpoint
from collectors.repair.gap_state import gap_retry
from collectors.repair.verify import verify_reports
from collectors.shared.connections import pipeline_keys
from collectors.shared.keys import Keys, priced_bar

logger = logging.getLogger(__name__)

# Instrument types a sync always covers (collectors.instruments.DEFAULT_INST_TYPES); types already stored are
# synced too.
SYNC_DEFAULT_TYPES = DEFAULT_INST_TYPES
DEAD_LETTERS_PER_PAGE = 100
# The flush-rate sample is replaced once it is this old, so the rate covers the last minute or so of views.
FLUSH_SAMPLE_MAX_AGE_S = 60.0
FLUSH_SAMPLE_MIN_AGE_S = 1.0
VERIFY_REPORTS_SHOWN = 8


# --- Redis and Celery, for screens ---------------------------------------------------------------------


@lru_cache(maxsize=4)
def _screen_redis(url: str) -> redis_lib.Redis:
    # Short timeouts: a page waits at most about a second for an unreachable Redis, then says so.
    return redis_lib.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)


def screen_redis() -> redis_lib.Redis:
    return _screen_redis(settings.REDIS_URL)


REDIS_DOWN = (redis_lib.RedisError, OSError)


def redis_notice(exc: Exception) -> str:
    return (f"Redis ({settings.REDIS_URL}) is unreachable: {exc}. Live figures are unavailable; "
            "collected candles wait in the collectors' memory and nothing is lost.")


def enqueue(task: Any, *args: Any) -> str | None:
    """Queue a task; the error text when the broker refused (no retries: the operator is waiting)."""
    try:
        task.apply_async(args, retry=False)
    except Exception as exc:  # kombu raises its own OperationalError, or OSError, when the broker is down
        logger.warning("could not queue %s%r: %r", task.name, args, exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def report_queueing(request: HttpRequest, queued: str | None, errors: list[str],
                    meanwhile: str = "Nothing was changed; try again when the broker is back.") -> None:
    """One message for what was queued, one for what the broker refused (and what happens to it)."""
    if queued:
        messages.success(request, queued)
    if errors:
        messages.error(request, f"Could not queue {len(errors)} task(s): {errors[0]}. {meanwhile}")


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


# --- the pipeline dashboard ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetUse:
    name: str
    used: int
    limit: int
    period_s: float

    @property
    def percent(self) -> int:
        return round(100 * self.used / self.limit) if self.limit else 0


def _budget_endpoints() -> list[tuple[str, Endpoint, str]]:
    """(label, endpoint, limiter key) of every REST budget the client keeps (see OkxRestClient._get)."""
    # Every candle endpoint (trade, mark-price and index; latest and older candles) keeps a budget of its own.
    budgets = [(name, endpoint, endpoint.budget) for name, endpoint in CANDLE_BUDGETS.items()]
    budgets.append(("index-tickers", INDEX_TICKERS, INDEX_TICKERS.budget))
    budgets += [(f"instruments {t}", INSTRUMENTS, f"{INSTRUMENTS.path}:{t}") for t in SYNCABLE_TYPES]
    return budgets


def rest_budget_use(redis: Any, keys: Keys) -> list[BudgetUse]:
    """Requests admitted in the current window of each shared REST budget (the limiter's sorted sets)."""
    seconds, micros = redis.time()  # the limiter's clock
    now_us = int(seconds) * 1_000_000 + int(micros)
    budgets = _budget_endpoints()
    pipe = redis.pipeline(transaction=False)
    for _name, endpoint, limit_key in budgets:
        pipe.zcount(f"{keys.prefix}ratelimit:{limit_key}", now_us - int(endpoint.period_s * 1_000_000), "+inf")
    return [BudgetUse(name, int(used), endpoint.limit, endpoint.period_s)
            for (name, endpoint, _key), used in zip(budgets, pipe.execute(), strict=True)]


# The flush-rate sample of this process, by key prefix: (when, candles_flushed then). Kept in memory, not in
# Redis, so a dashboard view only reads Redis; each server process keeps its own, which is enough for a rate
# over the last minute of one operator's views.
FLUSH_SAMPLES: dict[str, tuple[float, int]] = {}
_flush_samples_lock = threading.Lock()


def flush_rate(keys: Keys, flushed_total: int, now: float) -> tuple[float | None, float | None]:
    """(candles flushed per second, over how many seconds), from the counter's growth since a sample taken by
    an earlier view in this process; the sample is renewed once a minute old. (None, None) until there are
    two readings."""
    with _flush_samples_lock:
        sample = FLUSH_SAMPLES.get(keys.prefix)
        rate = window = None
        if sample is not None:
            sample_at, sample_flushed = sample
            window = now - sample_at
            if window >= FLUSH_SAMPLE_MIN_AGE_S and flushed_total >= sample_flushed:
                rate = (flushed_total - sample_flushed) / window
            else:
                window = None
        if sample is None or now - sample[0] >= FLUSH_SAMPLE_MAX_AGE_S or flushed_total < sample[1]:
            FLUSH_SAMPLES[keys.prefix] = (now, flushed_total)
    return rate, window


# A drop due longer ago than this (two maintenance runs missed) is shown as an alarm.
STORAGE_OVERDUE_AFTER = timedelta(seconds=2 * settings.STORAGE_MAINTENANCE_INTERVAL_S)

# Channels the dashboard names by their confirmation lag (the worst first).
DASHBOARD_LAGS = 5


def _channel_counts(collectors: list) -> dict[str, int]:
    """Channels subscribed and pending, as the alive collectors count them on their connections: a few
    numbers per collector instead of every channel's status."""
    subscribed = pending = 0
    for c in collectors:
        if not c.alive:
            continue
        for conn in c.connections:
            subscribed += conn.subscribed
            pending += max(0, conn.channels - conn.subscribed)
    return {"subscribed": subscribed, "pending": pending}


def _redis_figures(redis: Any, keys: Keys, now: float, specs: dict[str, Any]) -> dict[str, Any]:
    overview = pipeline_overview(redis, keys, now=now)
    collectors = collector_statuses(redis, keys, now=now)
    counters = overview["counters"]
    rate, window = flush_rate(keys, int(counters.get("candles_flushed", 0)), now)
    last_flush = overview["last_flush"]
    repair = overview["repair"]
    return {
        "overview": overview,
        "buffer_alarm": overview["buffer"]["depth"] >= settings.BUFFER_ALARM_ENTRIES,
        "collectors": [
            {
                "status": c, "heartbeat_age": age_label(now - c.heartbeat_at),
                "connections": [
                    {"status": conn, "last_message_age": None if conn.last_message_at is None
                     else age_label(now - conn.last_message_at)}
                    for conn in c.connections
                ],
            }
            for c in collectors
        ],
        "channel_states": _channel_counts(collectors),
        "last_flush_age": None if not last_flush or last_flush.get("age_s") is None
        else age_label(last_flush["age_s"]),
        "flush_rate": None if rate is None else round(rate, 1),
        "flush_rate_window": None if window is None else age_label(window),
        "budgets": rest_budget_use(redis, keys),
        "verify_reports": verify_reports(redis, keys, VERIFY_REPORTS_SHOWN),
        "worst_lags": [{"lag": lag, "label": age_label(lag.lag_s)}
                       for lag in worst_lags(redis, keys, specs, now=now, limit=DASHBOARD_LAGS)],
        "repair": None if repair is None else repair_rows(repair, now),
        "shards": shard_rows(overview["shards"]),
    }


def shard_rows(shards: ShardReplicas) -> dict[str, Any] | None:
    """With a hot standby (COLLECTOR_REPLICAS > 1), per shard the collector in each slot and its host."""
    if shards.replicas == 1:
        return None
    short = set(shards.short)
    rows = [{"shard": shard, "short": shard in short,
             "slots": [next((h for h in held if h.slot == slot), None) for slot in range(shards.replicas)]}
            for shard, held in enumerate(shards.holders)]
    return {"replicas": shards.replicas, "rows": rows, "short": len(short),
            "slot_names": ["primary", *("standby" for _ in range(1, shards.replicas))]}


def repair_rows(report: dict, now: float) -> dict[str, Any]:
    """The repair report as the dashboard's table: one row per priority, and the ETA and age as labels."""
    rows = [{"priority": p, "candles": report["backlog"][p]["candles"], "units": report["backlog"][p]["units"],
             "drained_per_s": report["drained_per_s"][p]} for p in PRIORITIES]
    eta = report["eta_s"]
    return {
        "rows": rows, "total": sum(r["candles"] for r in rows),
        "eta": None if eta is None else age_label(eta), "age": age_label(now - report["updated_at"]),
        "requests": report["requests"], "budget_per_s": report["budget_per_s"],
    }


def _database_figures() -> dict[str, Any]:
    # Along the gap indexes (unfinished and unfillable gaps), not a pass over every filled gap ever recorded.
    summary = gap_summary()
    gaps = {"open": summary.open, "filling": summary.filling, "missing": summary.missing_candles,
            "unfillable": summary.unfillable}
    by_status = dict(
        Subscription.objects.filter(is_active=True).values_list("status").annotate(n=Count("pk")).order_by()
    )
    subscriptions = [(status, by_status.get(status, 0)) for status in SubscriptionStatus.values]
    subscriptions.append(("paused", Subscription.objects.filter(is_active=False).count()))
    return {"gaps": gaps, "subscriptions": subscriptions, "specs": bar_specs_by_code()}


def storage_rows(now: float) -> list[dict[str, Any]]:
    """Per bar with partitions: retention, horizon, next drop, partitions, size, rows (from the catalogue and
    statistics, no count) and the archive's files when the archive is installed."""
    moment = datetime.fromtimestamp(now, UTC)
    rows = []
    for bar in storage_by_bar(now=moment):
        overdue = bar.next_drop is not None and bar.next_drop <= moment
        rows.append({
            "bar": bar, "size": human_bytes(bar.bytes),
            "kept": retention_label(bar.retention),
            "next_drop": None if bar.next_drop is None
            else ("due now" if overdue else f"in {age_label((bar.next_drop - moment).total_seconds())}"),
            "overdue": overdue and bar.next_drop <= moment - STORAGE_OVERDUE_AFTER,
            "archive_size": None if bar.archive_bytes is None else human_bytes(bar.archive_bytes),
        })
    return rows


def _storage_figures(now: float) -> dict[str, Any]:
    try:
        with transaction.atomic():
            limit_statements()
            rows = storage_rows(now)
    except DatabaseError as exc:
        logger.warning("dashboard: storage figures unavailable: %s", exc)
        return {"storage": None, "storage_error": f"{type(exc).__name__}: {exc}"}
    return {"storage": rows, "storage_error": None,
            "storage_archive": any(row["bar"].archive_files is not None for row in rows)}


def dashboard_context(now: float | None = None) -> dict[str, Any]:
    """Everything the dashboard shows; Redis figures are replaced by a notice when Redis is unreachable.

    Its cost does not grow with the subscriptions: GROUP BYs in PostgreSQL, and in Redis the overview, the
    collectors, the head of each bar's last-confirmed ZSET and the repair report. It only reads Redis.
    """
    now = time.time() if now is None else now
    database = _database_figures()
    specs = database.pop("specs")
    context: dict[str, Any] = {"pipeline_error": None, **database, **_storage_figures(now)}
    try:
        context["pipeline"] = _redis_figures(screen_redis(), pipeline_keys(), now, specs)
    except REDIS_DOWN as exc:
        context["pipeline"] = None
        context["pipeline_error"] = redis_notice(exc)
    else:
        # Channels OKX refused: the health task marks their subscriptions "error".
        context["pipeline"]["channel_states"]["invalid"] = dict(context["subscriptions"])[SubscriptionStatus.ERROR]
    return context


# --- dead letters --------------------------------------------------------------------------------------


def dead_letters_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    """The newest dead letters with their raw frame and reason; POST re-ingests the selected ones."""
    can_reingest = request.user.has_perm("candles.add_candle")
    keys = pipeline_keys()
    if request.method == "POST":
        if not can_reingest:
            raise PermissionDenied
        ids = request.POST.getlist("letter")
        if not ids:
            messages.warning(request, "Select the dead letters to re-ingest.")
        else:
            try:
                result = dead_letters_reingest(redis=screen_redis(), keys=keys, ids=ids)
            except REDIS_DOWN as exc:
                messages.error(request, redis_notice(exc))
            else:
                level = messages.SUCCESS if not result.still_invalid else messages.WARNING
                reasons = "; ".join(dict.fromkeys(reason for _, reason in result.still_invalid[:5]))
                messages.add_message(request, level, f"{result}{': ' + reasons if reasons else ''}")
        return HttpResponseRedirect(request.get_full_path())

    try:
        offset = max(0, int(request.GET.get("offset", 0)))
    except ValueError:
        offset = 0
    context = {**site.each_context(request), "title": "Dead letters", "can_reingest": can_reingest,
               "offset": offset, "per_page": DEAD_LETTERS_PER_PAGE, "pipeline_error": None}
    try:
        redis = screen_redis()
        context["total"] = dead_letters_count(redis, keys)
        context["letters"] = dead_letters_newest(redis, keys, limit=DEAD_LETTERS_PER_PAGE, offset=offset)
    except REDIS_DOWN as exc:
        context.update(total=None, letters=[], pipeline_error=redis_notice(exc))
    total = context["total"] or 0
    context["first_shown"], context["last_shown"] = offset + 1, offset + len(context["letters"])
    context["newer_offset"] = max(0, offset - DEAD_LETTERS_PER_PAGE) if offset else None
    context["older_offset"] = offset + DEAD_LETTERS_PER_PAGE if offset + DEAD_LETTERS_PER_PAGE < total else None
    return TemplateResponse(request, "admin/pipeline/dead_letters.html", context)


def dashboard_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    context = {**site.each_context(request), "title": "Pipeline", **dashboard_context()}
    return TemplateResponse(request, "admin/pipeline/dashboard_page.html", context)


# --- mounting on the admin site ------------------------------------------------------------------------


def mount_pipeline_views(site: admin.AdminSite) -> None:
    """Add the pipeline pages to `site` and the dashboard to its index.

    Django's AdminSite offers no hook for site-level pages or index context short of replacing the site
    class, which would need settings and an AppConfig outside this app; so `get_urls` and `index` of this
    site instance are wrapped (the instance's own attributes, read when the URLconf is built). Idempotent.
    """
    if getattr(site, "_pipeline_views_mounted", False):
        return
    site_get_urls, site_index = site.get_urls, site.index

    def get_urls():
        return [
            path("pipeline/", site.admin_view(functools.partial(dashboard_view, site)), name="pipeline_dashboard"),
            path("pipeline/dead-letters/", site.admin_view(functools.partial(dead_letters_view, site)),
                 name="pipeline_dead_letters"),
            *site_get_urls(),
        ]

    @functools.wraps(site_index)
    def index(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return site_index(request, extra_context={**dashboard_context(), **(extra_context or {})})

    site.get_urls, site.index = get_urls, index
    site._pipeline_views_mounted = True


for model, model_admin in ((Subscription, PipelineSubscriptionAdmin), (Instrument, PipelineInstrumentAdmin),
                           (Gap, PipelineGapAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
mount_pipeline_views(admin.site)
