"""The console's status line: what an operator watching `make run` needs every few seconds, on one line.

    status  collectors 1/1 · channels 54 (0 pending) · updates 12.5/s · flushed 11.0/s · flush lag 0.4 s
            · buffer 3 · open gaps 0 (0 candles) · REST 5% (history-candles 1/20)

A reading costs the same at 27,000 channels as at 10: one Redis round trip for the overview, one per collector
for its connection counts, one pipeline over the REST budgets, and the gap counts along their partial index.
Rates come from the difference between two readings, so the first line has none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from redis import RedisError

from collectors.api.system import gap_summary
from collectors.monitoring.budgets import BudgetUse, rest_budget_use
from collectors.monitoring.status import channel_counts, collector_statuses, pipeline_overview
from okxproject.keys import Keys


@dataclass(frozen=True, slots=True)
class GapCounts:
    open: int  # open and filling
    missing: int  # candles missing in them


@dataclass(frozen=True, slots=True)
class StatusReading:
    at: float
    collectors_alive: int
    collectors_total: int
    subscribed: int
    pending: int
    messages: int  # the shared counter of candle rows received in pushes
    flushed: int  # the shared counter of candle rows written by flushes
    flush_age_s: float | None  # since the last flush; None before the first
    buffer: int
    budget: BudgetUse | None  # the budget nearest its limit; None when none is in use
    gaps: GapCounts | None  # None when PostgreSQL did not answer
    gaps_error: str | None = None


def status_reading(redis: Any, keys: Keys, now: float | None = None) -> StatusReading:
    """Read the figures of one status line. Raises RedisError (and OSError) when Redis is away; PostgreSQL
    being away only blanks the gap figures."""
    now = time.time() if now is None else now
    overview = pipeline_overview(redis, keys, now=now)
    channels = channel_counts(collector_statuses(redis, keys, now=now))
    budgets = [b for b in rest_budget_use(redis, keys) if b.used]
    counters = overview["counters"]
    last_flush = overview["last_flush"]
    gaps, gaps_error = None, None
    try:
        summary = gap_summary()
        gaps = GapCounts(open=summary.open + summary.filling, missing=summary.missing_candles)
    except DatabaseError as exc:
        gaps_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return StatusReading(
        at=now,
        collectors_alive=overview["collectors"]["alive"],
        collectors_total=overview["collectors"]["total"],
        subscribed=channels["subscribed"],
        pending=channels["pending"],
        messages=int(counters.get("messages", 0)),
        flushed=int(counters.get("candles_flushed", 0)),
        flush_age_s=None if not last_flush else last_flush.get("age_s"),
        buffer=overview["buffer"]["depth"],
        budget=max(budgets, key=lambda b: b.used / b.limit) if budgets else None,
        gaps=gaps,
        gaps_error=gaps_error,
    )


def _rate(now: StatusReading, before: StatusReading | None, field: str) -> str:
    if before is None or now.at <= before.at:
        return "–"
    grown = getattr(now, field) - getattr(before, field)
    if grown < 0:  # the counters were reset (a new Redis): no rate this once
        return "–"
    return f"{grown / (now.at - before.at):,.1f}"


def status_line(reading: StatusReading, before: StatusReading | None = None) -> str:
    """The reading as one line; rates are per second since `before`."""
    lag = "none yet" if reading.flush_age_s is None else f"{reading.flush_age_s:,.1f} s"
    if reading.gaps is not None:
        gaps = f"open gaps {reading.gaps.open:,} ({reading.gaps.missing:,} candles)"
    else:
        gaps = f"open gaps ? (PostgreSQL: {reading.gaps_error})"
    budget = reading.budget
    rest = "REST idle" if budget is None else f"REST {budget.percent}% ({budget.name} {budget.used}/{budget.limit})"
    return " · ".join([
        f"collectors {reading.collectors_alive}/{reading.collectors_total}",
        f"channels {reading.subscribed:,} ({reading.pending:,} pending)",
        f"updates {_rate(reading, before, 'messages')}/s",
        f"flushed {_rate(reading, before, 'flushed')}/s",
        f"flush lag {lag}",
        f"buffer {reading.buffer:,}",
        gaps,
        rest,
    ])


REDIS_DOWN = (RedisError, OSError)
