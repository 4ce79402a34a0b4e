"""The system's health: what is observed, the rule that grades it, and the full status report.

The rule (also in docs/status-and-metrics.md):

* **unhealthy** when PostgreSQL or Redis is down (no answer to `SELECT 1` / `PING` within the probe timeout,
  or a read that failed right after);
* **degraded** when any of these holds:
  - the broker (CELERY_BROKER_URL, when it is Redis) does not answer: no task is scheduled or run;
  - no collector is alive while subscriptions are active;
  - the buffer holds more than BUFFER_ALARM_ENTRIES candles;
  - the last flush is older than FLUSH_STALE_INTERVALS × FLUSH_INTERVAL_S while the buffer is not empty
    (or no flush was ever recorded while it is not empty);
  - an active subscription is `stale` or `error` (as marked by the health task);
  - with COLLECTOR_REPLICAS > 1, a shard is held by fewer collectors than that while subscriptions are
    active (the hot standby is gone: one more death costs candles that REST must repair);
* **healthy** otherwise.

A check that cannot be evaluated because Redis or PostgreSQL is down is `unknown`; the system is unhealthy
then anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Sum
from redis import RedisError

from candles.models import Gap, GapState, SubscriptionStatus
from collectors.api.probes import (
    REUSED_CONNECTION_MAX_AGE_S,
    Probe,
    services_probe,
    services_probe_start,
    status_redis,
)
from collectors.api.status_queries import (
    BAR_SPECS,
    OTHER_GAPS,
    SUBSCRIPTION_COUNTS,
    UNFINISHED_GAPS,
    GapSummary,
    SubscriptionSummary,
    TroubledRow,
    gaps_of,
    series_name,
    statements_run,
    summary_of,
    troubled_examples,
)
from collectors.api.subscriptions import Lag, worst_lags
from collectors.monitoring.status import CollectorStatus, collector_statuses, pipeline_overview
from collectors.shared.connections import pipeline_keys

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
# A flush normally runs every FLUSH_INTERVAL_S; this many intervals without one (with work waiting) is a stall.
FLUSH_STALE_INTERVALS = 10
CHECK_NAMES = ("database", "redis", "broker", "collectors", "replicas", "buffer", "flush", "subscriptions")
TROUBLED = (SubscriptionStatus.STALE, SubscriptionStatus.ERROR)
EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # pass, fail or unknown
    impact: str  # what its failure makes the system: unhealthy or degraded
    message: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    now: float
    probes: dict[str, Probe]
    pipeline: dict[str, Any] | None  # pipeline_overview, None when Redis could not be read
    subscriptions: SubscriptionSummary | None  # None when PostgreSQL could not be read


@dataclass(frozen=True, slots=True)
class Health:
    status: str
    checks: dict[str, Check]

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if check.status == FAIL]


# --- observing ---------------------------------------------------------------------------------------------


def _failed(probe: Probe, exc: Exception) -> Probe:
    return replace(probe, up=False, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


def subscription_summary() -> SubscriptionSummary:
    """Active subscriptions by status, paused ones, and the first few stale or in error (one round trip)."""
    counts, examples = statements_run(SUBSCRIPTION_COUNTS, troubled_examples(TROUBLED, EXAMPLES))
    return summary_of(counts, examples, EXAMPLES)


def observe(*, now: float | None = None) -> Observation:
    """Probe the services, then read the pipeline (if Redis is up) and the subscriptions (if PostgreSQL is)."""
    probes = services_probe()
    now = time.time() if now is None else now
    pipeline = None
    if probes["redis"].up:
        try:
            pipeline = pipeline_overview(status_redis(), pipeline_keys(), now=now)
        except RedisError as exc:
            probes["redis"] = _failed(probes["redis"], exc)
    subscriptions = None
    if probes["database"].up:
        try:
            subscriptions = subscription_summary()
        except DatabaseError as exc:
            probes["database"] = _failed(probes["database"], exc)
    return Observation(now, probes, pipeline, subscriptions)


# --- the rule ----------------------------------------------------------------------------------------------


def _service_check(name: str, probe: Probe, impact: str) -> Check:
    if not probe.checked:
        return Check(name, PASS, impact, probe.error)
    if probe.up:
        return Check(name, PASS, impact, f"answered in {probe.latency_ms:g} ms")
    return Check(name, FAIL, impact, probe.error)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def health_evaluate(
    observation: Observation, *, buffer_alarm_entries: int | None = None, flush_interval_s: float | None = None,
) -> Health:
    """Grade an observation by the rule in this module's docstring."""
    alarm = settings.BUFFER_ALARM_ENTRIES if buffer_alarm_entries is None else buffer_alarm_entries
    interval = settings.FLUSH_INTERVAL_S if flush_interval_s is None else flush_interval_s
    probes, pipeline, subs = observation.probes, observation.pipeline, observation.subscriptions
    checks = [
        _service_check("database", probes["database"], UNHEALTHY),
        _service_check("redis", probes["redis"], UNHEALTHY),
        _service_check("broker", probes["broker"], DEGRADED),
    ]

    if pipeline is None or subs is None:
        checks.append(Check("collectors", UNKNOWN, DEGRADED, "needs Redis and PostgreSQL"))
    else:
        alive, total = pipeline["collectors"]["alive"], pipeline["collectors"]["total"]
        if subs.active and not alive:
            verb = "is" if subs.active == 1 else "are"
            checks.append(Check("collectors", FAIL, DEGRADED,
                                f"no collector is alive while {_plural(subs.active, 'subscription')} {verb} "
                                f"active ({total} registered)"))
        else:
            checks.append(Check("collectors", PASS, DEGRADED, f"{alive} alive of {total} registered"))

    checks.append(_replicas_check(pipeline, subs))

    if pipeline is None:
        checks.append(Check("buffer", UNKNOWN, DEGRADED, "needs Redis"))
        checks.append(Check("flush", UNKNOWN, DEGRADED, "needs Redis"))
    else:
        depth = pipeline["buffer"]["depth"]
        if depth > alarm:
            checks.append(Check("buffer", FAIL, DEGRADED,
                                f"{depth} candles buffered, above BUFFER_ALARM_ENTRIES ({alarm})"))
        else:
            checks.append(Check("buffer", PASS, DEGRADED, f"{depth} candles buffered (alarm above {alarm})"))
        checks.append(_flush_check(pipeline, depth, interval))

    if subs is None:
        checks.append(Check("subscriptions", UNKNOWN, DEGRADED, "needs PostgreSQL"))
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(subs.by_status.items()))
        troubled = sum(subs.by_status.get(s, 0) for s in TROUBLED)
        if troubled:
            checks.append(Check("subscriptions", FAIL, DEGRADED,
                                f"{troubled} of {subs.active} active stale or in error "
                                f"({'; '.join(subs.troubled)}{'; ...' if troubled > len(subs.troubled) else ''})"))
        else:
            checks.append(Check("subscriptions", PASS, DEGRADED,
                                f"{_plural(subs.active, 'active subscription')}" + (f": {counts}" if counts else "")))

    by_name = {check.name: check for check in checks}
    failing = [check for check in checks if check.status == FAIL]
    if any(check.impact == UNHEALTHY for check in failing):
        status = UNHEALTHY
    elif failing:
        status = DEGRADED
    else:
        status = HEALTHY
    return Health(status, by_name)


def _replicas_check(pipeline: dict[str, Any] | None, subs: SubscriptionSummary | None) -> Check:
    if pipeline is None or subs is None:
        return Check("replicas", UNKNOWN, DEGRADED, "needs Redis and PostgreSQL")
    shards = pipeline["shards"]
    wanted = shards.replicas
    if wanted == 1:
        return Check("replicas", PASS, DEGRADED, "one collector per shard (COLLECTOR_REPLICAS=1)")
    short = shards.short
    if not subs.active or not short:
        return Check("replicas", PASS, DEGRADED, f"every shard on {wanted} collectors" if subs.active
                     else "no active subscription")
    named = ", ".join(f"shard {shard} on {len(shards.holders[shard])}" for shard in short[:5])
    return Check("replicas", FAIL, DEGRADED,
                 f"{_plural(len(short), 'shard')} of {len(shards.holders)} below {wanted} collectors "
                 f"({named}{', ...' if len(short) > 5 else ''})")


def _flush_check(pipeline: dict[str, Any], depth: int, interval: float) -> Check:
    limit = FLUSH_STALE_INTERVALS * interval
    last = pipeline["last_flush"]
    age = None if last is None else last.get("age_s")
    if depth == 0:
        return Check("flush", PASS, DEGRADED, "nothing waits" + ("" if age is None else f"; last flush {age:g} s ago"))
    if age is None:
        return Check("flush", FAIL, DEGRADED, f"no flush recorded while {depth} candles wait")
    if age > limit:
        return Check("flush", FAIL, DEGRADED,
                     f"last flush {age:g} s ago (limit {limit:g} s) while {depth} candles wait")
    return Check("flush", PASS, DEGRADED, f"last flush {age:g} s ago")


# --- the full report: a summary whose size and cost do not grow with the subscriptions ---------------------


@dataclass(frozen=True, slots=True)
class Troubled:
    """Active subscriptions of one status: how many, and the first few with their messages."""

    count: int
    examples: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class SystemStatus:
    health: Health
    observation: Observation
    gaps: GapSummary | None
    collectors: list[CollectorStatus] | None
    subscriptions: dict[str, Any] | None  # counts by state ({"by_state", "active", "paused", "total"})
    worst_lags: list[Lag] | None
    problems: dict[str, Any]
    repair: dict | None


# How many troubled subscriptions and lagging channels the summary names; the rest are counted, and listed
# by GET /status/subscriptions?state=... page by page.
STATUS_EXAMPLES = 10


def gap_counts() -> dict[str, tuple[int, int]]:
    """(gaps, candles missing when found) by gap state, every state present (one query)."""
    counts = {state: (0, 0) for state in GapState.values}
    rows = Gap.objects.order_by().values("state").annotate(n=Count("pk"), m=Sum("missing"))
    for state, n, missing in rows.values_list("state", "n", "m"):
        counts[state] = (n, missing or 0)
    return counts


def gap_summary() -> GapSummary:
    """Gaps by state and unfinished gaps by priority (one round trip; see `status_queries`)."""
    return gaps_of(*statements_run(UNFINISHED_GAPS, OTHER_GAPS))


def troubled_of(status: str, count: int, rows: list[TroubledRow], limit: int = STATUS_EXAMPLES) -> Troubled:
    """`count` active subscriptions of `status`, named by the first `limit` of `rows` of that status."""
    examples = [{"symbol": r.symbol, "timeframe": r.timeframe, "price": r.price, "status_message": r.status_message}
                for r in rows if r.status == status][:limit]
    return Troubled(count, examples if count else [])


def troubled(status: str, count: int, limit: int = STATUS_EXAMPLES) -> Troubled:
    """The first `limit` active subscriptions of `status` (none read when `count` says there are none)."""
    if not count:
        return Troubled(0, [])
    [rows] = statements_run(troubled_examples([status], limit))
    return troubled_of(status, count, rows, limit)


def subscription_counts(summary: SubscriptionSummary) -> dict[str, Any]:
    by_state = {status: summary.by_status.get(status, 0) for status in SubscriptionStatus.values}
    by_state["paused"] = summary.paused
    return {"by_state": by_state, "active": summary.active, "paused": summary.paused,
            "total": summary.active + summary.paused}


def problems_list(subscriptions: dict[str, Any] | None, errors: Troubled | None, stale: Troubled | None,
                  gaps: GapSummary | None, pipeline: dict[str, Any] | None, lags: list[Lag] | None) -> list[str]:
    """The problems worth a look, most severe first, one line each."""
    lines: list[str] = []

    def named(t: Troubled) -> str:
        shown = "; ".join(series_name(e["symbol"], e["timeframe"], e["price"]) for e in t.examples[:3])
        return f" ({shown}{'; ...' if t.count > 3 else ''})" if shown else ""

    if pipeline is not None and subscriptions and subscriptions["active"] and not pipeline["collectors"]["alive"]:
        lines.append(f"no collector is alive while {subscriptions['active']} subscriptions are active")
    if errors and errors.count:
        lines.append(f"{_plural(errors.count, 'subscription')} in error{named(errors)}")
    if stale and stale.count:
        lines.append(f"{_plural(stale.count, 'subscription')} stale{named(stale)}")
    if gaps is not None:
        for name, figures in gaps.unfinished_by_priority.items():
            if figures["gaps"]:
                lines.append(f"{_plural(figures['gaps'], 'open gap')} of priority {name} "
                             f"({figures['missing_candles']:,} candles missing)")
    if pipeline is not None and pipeline["dead_letters"]:
        lines.append(f"{_plural(pipeline['dead_letters'], 'dead letter')} waiting")
    if lags:
        worst = lags[0]
        lines.append(f"worst confirmation lag {worst.lag_s:g} s ({worst.symbol} {worst.timeframe})")
    return lines


def _pipeline_read(now: float) -> tuple[dict[str, Any] | None, list[CollectorStatus] | None, RedisError | None]:
    """The pipeline overview and the collectors, as far as Redis answered, and the error that stopped it."""
    redis, keys = status_redis(), pipeline_keys()
    try:
        pipeline = pipeline_overview(redis, keys, now=now)
    except RedisError as exc:
        return None, None, exc
    try:
        return pipeline, collector_statuses(redis, keys, now=now), None
    except RedisError as exc:
        return pipeline, None, exc


def system_status(*, examples: int = STATUS_EXAMPLES) -> SystemStatus:
    """The health plus a bounded summary for GET /status: subscription counts by state, the worst lags, the
    top problems, gaps by state and priority, collectors, the pipeline and the repair backlog.

    The probes run while Redis is read (its client has short timeouts of its own); PostgreSQL's probe keeps
    its connection between calls (see `probes`). PostgreSQL is read once its probe answered, in one round
    trip (`status_queries`); then the worst lags, in one more to Redis.
    Nothing here reads every channel status, and nothing runs per subscription in Python.
    """
    collect_probes = services_probe_start(database_reuse_s=REUSED_CONNECTION_MAX_AGE_S)
    now = time.time()
    pipeline, collectors, redis_error = _pipeline_read(now)
    probes = collect_probes()
    if not probes["redis"].up:
        pipeline = collectors = None
    elif redis_error is not None:
        probes["redis"] = _failed(probes["redis"], redis_error)

    summary = gaps = errors = stale = None
    specs: dict[str, Any] = {}
    if probes["database"].up:
        try:
            counts, rows, unfinished, other, specs = statements_run(
                SUBSCRIPTION_COUNTS, troubled_examples(TROUBLED, max(examples, EXAMPLES)), UNFINISHED_GAPS,
                OTHER_GAPS, BAR_SPECS)
        except DatabaseError as exc:
            probes["database"] = _failed(probes["database"], exc)
        else:
            summary = summary_of(counts, rows, EXAMPLES)
            gaps = gaps_of(unfinished, other)
            errors = troubled_of(SubscriptionStatus.ERROR, summary.by_status.get(SubscriptionStatus.ERROR, 0), rows,
                                 examples)
            stale = troubled_of(SubscriptionStatus.STALE, summary.by_status.get(SubscriptionStatus.STALE, 0), rows,
                                examples)

    lags = None
    if pipeline is not None and collectors is not None and summary is not None:
        try:
            lags = worst_lags(status_redis(), pipeline_keys(), specs, now=now, limit=examples)
        except RedisError as exc:
            probes["redis"] = _failed(probes["redis"], exc)
            collectors = None
    observation = Observation(now, probes, pipeline, summary)
    counts = None if summary is None else subscription_counts(summary)
    problems = {
        "top": problems_list(counts, errors, stale, gaps, pipeline, lags),
        "error": errors, "stale": stale,
        "gaps_by_priority": None if gaps is None else gaps.unfinished_by_priority,
        "dead_letters": None if pipeline is None else pipeline["dead_letters"],
    }
    return SystemStatus(health_evaluate(observation), observation, gaps, collectors, counts, lags, problems,
                        None if pipeline is None else pipeline.get("repair"))
