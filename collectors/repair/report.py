"""The repair backlog as operators see it: candles waiting by priority, how fast they drain, and an ETA.

Each scheduler run writes one JSON document to `Keys.repair_backlog`; status, the admin dashboard and /metrics
read it, so none of them counts the backlog again. The drain rate is an exponentially weighted mean over runs,
so one idle or busy run does not swing the ETA.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.db import connection

from candles.models import RepairPriority
from collectors.monitoring.repair_report import repair_report_read
from collectors.repair.reach import LANE_ENDPOINTS, LANES
from okxproject.keys import Keys

PRIORITY_NAMES = {RepairPriority.CONFIRM: "confirm", RepairPriority.OUTAGE: "outage",
                  RepairPriority.HISTORY: "history", RepairPriority.OLD: "old"}
# Requests per second each endpoint's budget allows, by lane (trade, mark-price and index candles each have two).
BUDGET_PER_S = {lane: LANE_ENDPOINTS[lane].limit / LANE_ENDPOINTS[lane].period_s for lane in LANES}
# Weight of the newest run in the drain rate.
RATE_WEIGHT = 0.3

# Through the partial index of unfinished gaps: its size is the backlog, not the history of all gaps.
_GAP_BACKLOG = """
SELECT g.priority, count(*), coalesce(sum(g.missing), 0)
FROM candles_gap g JOIN candles_subscription s ON s.id = g.subscription_id
WHERE g.state IN ('open', 'filling') AND s.is_active
GROUP BY g.priority
"""


def gap_backlog() -> dict[int, tuple[int, int]]:
    """(gaps, candles) of unfinished gaps of active subscriptions, by priority."""
    with connection.cursor() as cursor:
        cursor.execute(_GAP_BACKLOG)
        return {priority: (gaps, int(candles)) for priority, gaps, candles in cursor.fetchall()}


def repair_report_write(
    *, redis: Any, keys: Keys, confirm_candles: int, confirm_units: int, gaps: dict[int, tuple[int, int]],
    repaired: dict[int, int], requests: dict[str, int], queued: dict[str, int] | None = None,
    left: dict[str, int] | None = None, now_s: float | None = None,
) -> dict[str, Any]:
    """Write the run's report (`Keys.repair_backlog`) and return it; `repaired` is candles by priority; `requests`,
    `queued` (units the run handed to an endpoint's lane) and `left` (those it did not reach) by endpoint."""
    now_s = time.time() if now_s is None else now_s
    previous = repair_report_read(redis=redis, keys=keys) or {}
    elapsed = now_s - float(previous.get("updated_at", now_s))
    backlog = {"confirm": {"candles": confirm_candles, "units": confirm_units}}
    for priority, name in PRIORITY_NAMES.items():
        if priority != RepairPriority.CONFIRM:
            count, candles = gaps.get(priority, (0, 0))
            backlog[name] = {"candles": candles, "units": count}
    rates: dict[str, float] = {}
    for priority, name in PRIORITY_NAMES.items():
        before = float(previous.get("drained_per_s", {}).get(name, 0.0))
        if elapsed > 0:
            now_rate = repaired.get(priority, 0) / elapsed
            rates[name] = round(before + RATE_WEIGHT * (now_rate - before), 3) if previous else round(now_rate, 3)
        else:
            rates[name] = before
    waiting = sum(entry["candles"] for entry in backlog.values())
    draining = sum(rates.values())
    eta = 0.0 if waiting == 0 else (round(waiting / draining, 1) if draining > 0 else None)
    report = {
        "updated_at": now_s, "backlog": backlog, "drained_per_s": rates, "eta_s": eta,
        "requests": {lane: int(requests.get(lane, 0)) for lane in LANES}, "budget_per_s": BUDGET_PER_S,
        "queued": {lane: int((queued or {}).get(lane, 0)) for lane in LANES},
        "left": {lane: int((left or {}).get(lane, 0)) for lane in LANES},
        "repaired": {PRIORITY_NAMES[p]: n for p, n in repaired.items()},
    }
    redis.set(keys.repair_backlog, json.dumps(report))
    return report
