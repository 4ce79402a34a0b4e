"""The pipeline dashboard: the admin index's figures (collectors, buffer, flush rate, lags, gaps, repair,
REST budgets, storage) and the /admin/pipeline/ page that shows them alone. Every figure is read; a view writes
nothing (the flush-rate sample is kept in this process's memory)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db import DatabaseError, transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from candles.admin_labels import age_label, retention_label
from candles.models import Subscription, SubscriptionStatus
from candles.retention import human_bytes
from candles.storage_stats import storage_by_bar
from collectors.admin_common import REDIS_DOWN, redis_notice, screen_redis
from collectors.api.subscriptions import bar_specs_by_code, limit_statements, worst_lags
from collectors.api.system import gap_summary
from collectors.monitoring.budgets import rest_budget_use
from collectors.monitoring.repair_report import PRIORITIES
from collectors.monitoring.replicas import ShardReplicas
from collectors.monitoring.status import (
    channel_counts,
    collector_statuses,
    pipeline_overview,
)
from collectors.repair.verify import verify_reports
from collectors.shared.connections import pipeline_keys
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

# The flush-rate sample is replaced once it is this old, so the rate covers the last minute or so of views.
FLUSH_SAMPLE_MAX_AGE_S = 60.0
FLUSH_SAMPLE_MIN_AGE_S = 1.0
VERIFY_REPORTS_SHOWN = 8

# --- the pipeline dashboard ----------------------------------------------------------------------------


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
        "channel_states": channel_counts(collectors),
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


def dashboard_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    context = {**site.each_context(request), "title": "Pipeline", **dashboard_context()}
    return TemplateResponse(request, "admin/pipeline/dashboard_page.html", context)
