"""GET /status's answer as plain data: the JSON StatusSerializer gives, built without DRF's field machinery.

`status_document` gathers a report's parts under the answer's names (objects, epoch seconds, datetimes);
StatusSerializer turns that into JSON and stays the contract: the OpenAPI schema is made from it, and a test
renders both for full and for degraded reports and compares the bytes. `status_body` turns the same
document into the same values directly: DRF deep-copies and walks about a hundred field objects per answer
(some 5 ms of CPU here), more than the rest of the view once PostgreSQL is read in one round trip.

Each function mirrors one serializer, field for field and in its order (JSON keeps it): FloatField gives
float(), IntegerField int(), a date-time ISO 8601 in the current time zone with Z for UTC, and any null
stays null.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from collectors.api.subscriptions import Lag, epoch_s_to_datetime
from collectors.api.system import CHECK_NAMES, Check, SystemStatus, Troubled
from collectors.monitoring.repair_report import PRIORITIES, REPORT_ENDPOINTS
from collectors.monitoring.status import CollectorStatus

PRIORITY_KEYS = ("confirm", "outage", "history", "old")  # GapsByPrioritySerializer's fields
STATE_KEYS = ("live", "stale", "error", "pending", "paused")  # SubscriptionStatesSerializer's fields


def status_document(report: SystemStatus, *, detail_url: str) -> dict[str, Any]:
    """The report's parts under the answer's names: StatusSerializer's input, and `status_body`'s."""
    probes, pipeline = report.observation.probes, report.observation.pipeline
    subscriptions = report.subscriptions
    health = report.health
    return {
        "status": health.status, "timestamp": timezone.now(), "checks": health.checks, "failing": health.failing,
        "services": {
            "database": probes["database"], "redis": probes["redis"], "broker": probes["broker"],
            "collectors": None if pipeline is None else pipeline["collectors"],
        },
        "pipeline": None if pipeline is None else {
            **pipeline, "buffer": {**pipeline["buffer"], "alarm_entries": settings.BUFFER_ALARM_ENTRIES},
            "shards": pipeline["shards"].as_dict(),
        },
        "gaps": report.gaps,
        "collectors": report.collectors,
        "subscriptions": None if subscriptions is None else {**subscriptions, "detail": detail_url},
        "worst_lags": report.worst_lags,
        "problems": report.problems,
        "repair": report.repair,
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = moment.astimezone(timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _epoch_iso(value: Any) -> str | None:
    return _iso(epoch_s_to_datetime(value) if isinstance(value, int | float) else value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _check(check: Check) -> dict[str, Any]:
    return {"status": check.status, "impact": check.impact, "message": str(check.message)}


def _probe(probe: Any) -> dict[str, Any]:
    return {"up": bool(probe.up), "latency_ms": _float(probe.latency_ms), "error": str(probe.error),
            "checked": bool(probe.checked)}


def _services(services: dict[str, Any]) -> dict[str, Any]:
    collectors = services["collectors"]
    return {
        "database": _probe(services["database"]), "redis": _probe(services["redis"]),
        "broker": _probe(services["broker"]),
        "collectors": None if collectors is None else {"alive": int(collectors["alive"]),
                                                       "total": int(collectors["total"])},
    }


def _pipeline(pipeline: dict[str, Any] | None) -> dict[str, Any] | None:
    if pipeline is None:
        return None
    buffer, flush = pipeline["buffer"], pipeline["last_flush"]
    return {
        "buffer": {name: int(buffer[name]) for name in ("live", "taken", "depth", "alarm_entries")},
        "dead_letters": int(pipeline["dead_letters"]),
        "rest_needed": int(pipeline["rest_needed"]),
        "last_flush": None if flush is None else {
            "at": _epoch_iso(flush.get("at")), "age_s": _float(flush.get("age_s")), "rows": _int(flush.get("rows")),
            "written": _int(flush.get("written")), "rejected": _int(flush.get("rejected")),
            "duration_ms": _float(flush.get("duration_ms")),
        },
        "counters": dict(pipeline["counters"]),
        "shards": _shards(pipeline["shards"]),
    }


def _shards(shards: dict[str, Any]) -> dict[str, Any]:
    return {"replicas": int(shards["replicas"]), "shards": int(shards["shards"]),
            "short": [int(n) for n in shards["short"]],
            "holders": [[{"slot": int(h["slot"]), "collector": str(h["collector"]), "host": _str(h["host"])}
                         for h in held] for held in shards["holders"]]}


def _by_priority(figures: dict[str, dict[str, int]] | None) -> dict[str, Any] | None:
    if figures is None:
        return None
    return {name: {"gaps": int(figures[name]["gaps"]), "missing_candles": int(figures[name]["missing_candles"])}
            for name in PRIORITY_KEYS}


def _gaps(gaps: Any) -> dict[str, Any] | None:
    if gaps is None:
        return None
    return {"open": int(gaps.open), "filling": int(gaps.filling), "filled": int(gaps.filled),
            "unfillable": int(gaps.unfillable), "expired": int(gaps.expired),
            "missing_candles": int(gaps.missing_candles),
            "unfinished_by_priority": _by_priority(gaps.unfinished_by_priority)}


def _collector(c: CollectorStatus) -> dict[str, Any]:
    return {
        "id": str(c.id), "alive": bool(c.alive), "heartbeat_at": _epoch_iso(c.heartbeat_at), "host": _str(c.host),
        "pid": _int(c.pid), "started_at": _epoch_iso(c.started_at), "shards": [int(s) for s in c.shards],
        "channels": int(c.channels), "messages": int(c.messages), "reconnects": int(c.reconnects),
        "errors": int(c.errors),
        "connections": [{
            "shard": int(n.shard), "state": str(n.state), "conn_id": _str(n.conn_id), "channels": int(n.channels),
            "subscribed": int(n.subscribed), "messages": int(n.messages), "reconnects": int(n.reconnects),
            "errors": int(n.errors), "last_message_at": _epoch_iso(n.last_message_at), "detail": str(n.detail),
        } for n in c.connections],
        "details_missing": bool(c.details_missing),
    }


def _subscriptions(counts: dict[str, Any] | None) -> dict[str, Any] | None:
    if counts is None:
        return None
    return {"by_state": {state: int(counts["by_state"][state]) for state in STATE_KEYS},
            "active": int(counts["active"]), "paused": int(counts["paused"]), "total": int(counts["total"]),
            "detail": str(counts["detail"])}


def _lag(lag: Lag) -> dict[str, Any]:
    return {"symbol": str(lag.symbol), "timeframe": str(lag.timeframe), "lag_s": float(lag.lag_s),
            "last_confirmed_open_time": _iso(lag.last_confirmed_open_time), "price": str(lag.price)}


def _troubled(troubled: Troubled | None) -> dict[str, Any] | None:
    if troubled is None:
        return None
    return {"count": int(troubled.count), "examples": [
        {"symbol": str(e["symbol"]), "timeframe": str(e["timeframe"]), "status_message": str(e["status_message"]),
         "price": str(e.get("price", "trade"))}
        for e in troubled.examples]}


def _problems(problems: dict[str, Any]) -> dict[str, Any]:
    dead_letters = problems["dead_letters"]
    return {"top": [str(line) for line in problems["top"]], "error": _troubled(problems["error"]),
            "stale": _troubled(problems["stale"]), "gaps_by_priority": _by_priority(problems["gaps_by_priority"]),
            "dead_letters": _int(dead_letters)}


def _repair(repair: dict[str, Any] | None) -> dict[str, Any] | None:
    if repair is None:
        return None
    return {
        "updated_at": _epoch_iso(repair["updated_at"]),
        "backlog": {p: {"candles": int(repair["backlog"][p]["candles"]), "units": int(repair["backlog"][p]["units"])}
                    for p in PRIORITIES},
        "drained_per_s": {p: float(repair["drained_per_s"][p]) for p in PRIORITIES},
        "eta_s": _float(repair["eta_s"]),
        "requests": {e: int(repair["requests"][e]) for e in REPORT_ENDPOINTS},
        "budget_per_s": {e: float(repair["budget_per_s"][e]) for e in REPORT_ENDPOINTS},
    }


def status_body(document: dict[str, Any]) -> dict[str, Any]:
    """The document as StatusSerializer(document).data would have it (plain dicts, lists, str, int, float)."""
    collectors, lags = document["collectors"], document["worst_lags"]
    return {
        "status": document["status"],
        "timestamp": _iso(document["timestamp"]),
        "checks": {name: _check(document["checks"][name]) for name in CHECK_NAMES},
        "failing": list(document["failing"]),
        "services": _services(document["services"]),
        "pipeline": _pipeline(document["pipeline"]),
        "gaps": _gaps(document["gaps"]),
        "collectors": None if collectors is None else [_collector(c) for c in collectors],
        "subscriptions": _subscriptions(document["subscriptions"]),
        "worst_lags": None if lags is None else [_lag(lag) for lag in lags],
        "problems": _problems(document["problems"]),
        "repair": _repair(document["repair"]),
    }
