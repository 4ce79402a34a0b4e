"""Reads the repair scheduler's last report (`Keys.repair_backlog`) for /status, the admin dashboard and /metrics.

The scheduler writes one JSON string on every run (the contract):

    {"updated_at": <epoch s>, "backlog": {"confirm"|"outage"|"history"|"old": {"candles": int, "units": int}},
     "drained_per_s": {<priority>: float}, "eta_s": float | null,
     "requests": {<endpoint>: int}, "budget_per_s": {<endpoint>: float},
     "queued": {<endpoint>: int}, "left": {<endpoint>: int}}

Endpoints are named one by one, each with its own budget: "candles" and "history" (trade candles' /candles and
/history-candles), then "mark-price-candles", "history-mark-price-candles", "index-candles" and
"history-index-candles" (docs/price-kinds.md). `queued` is the units the run handed to an endpoint's lane (its
share of the backlog, up to what its budget serves in a run), `left` those it did not reach before its deadline.

This module only reads it. A missing key is "no report yet" (None, silently: the scheduler may not run);
a value that does not parse or lacks the shape is None with a warning, so a status page never fails on it.
Missing priorities and endpoints read as zero, so readers can always show every row.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from collectors.monitoring.parsing import json_object
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

PRIORITIES = ("confirm", "outage", "history", "old")
# The trade candles' endpoints: the /status API's repair section names these two.
ENDPOINTS = ("candles", "history")
# The mark-price and index candles' endpoints, each a budget of its own.
PRICE_ENDPOINTS = ("mark-price-candles", "history-mark-price-candles", "index-candles", "history-index-candles")
REPORT_ENDPOINTS = ENDPOINTS + PRICE_ENDPOINTS


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} is not a finite number: {value!r}")
    return value


def _section(data: dict, name: str) -> dict:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ValueError(f"{name} is not an object")
    return section


def repair_report_parse(raw: bytes | str) -> dict:
    """The report in its contract shape, every priority and endpoint present. Raises ValueError."""
    data = json_object(raw, ValueError)
    backlog_raw, drained_raw = _section(data, "backlog"), _section(data, "drained_per_s")
    requests_raw, budget_raw = _section(data, "requests"), _section(data, "budget_per_s")
    queued_raw, left_raw = _section(data, "queued"), _section(data, "left")
    backlog = {}
    for priority in PRIORITIES:
        entry = backlog_raw.get(priority, {})
        if not isinstance(entry, dict):
            raise ValueError(f"backlog.{priority} is not an object")
        backlog[priority] = {name: int(_number(entry.get(name, 0), f"backlog.{priority}.{name}"))
                             for name in ("candles", "units")}
    eta = data.get("eta_s")
    return {
        "updated_at": float(_number(data.get("updated_at"), "updated_at")),
        "backlog": backlog,
        "drained_per_s": {p: float(_number(drained_raw.get(p, 0), f"drained_per_s.{p}")) for p in PRIORITIES},
        "eta_s": None if eta is None else float(_number(eta, "eta_s")),
        "requests": {e: int(_number(requests_raw.get(e, 0), f"requests.{e}")) for e in REPORT_ENDPOINTS},
        "budget_per_s": {e: float(_number(budget_raw.get(e, 0), f"budget_per_s.{e}")) for e in REPORT_ENDPOINTS},
        "queued": {e: int(_number(queued_raw.get(e, 0), f"queued.{e}")) for e in REPORT_ENDPOINTS},
        "left": {e: int(_number(left_raw.get(e, 0), f"left.{e}")) for e in REPORT_ENDPOINTS},
    }


def repair_report_read(*, redis: Any, keys: Keys) -> dict | None:
    """The scheduler's last report, or None when there is none or it does not parse (logged)."""
    raw = redis.get(keys.repair_backlog)
    if raw is None:
        return None
    return repair_report_decode(raw)


def repair_report_decode(raw: bytes | str | None) -> dict | None:
    """`repair_report_parse` for a value read by the caller (in its own pipeline); None when absent or garbled."""
    if raw is None:
        return None
    try:
        return repair_report_parse(raw)
    except ValueError as exc:
        logger.warning("ignored the repair report at %s: %s", "repair:backlog", exc)
        return None
