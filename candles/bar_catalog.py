"""The bars (timeframes) as this process knows them: code → id, and each bar's retention.

Every query of the partitioned candle table must name its bar as a constant `timeframe_id`, or PostgreSQL
cannot prune partitions when it plans (docs/storage-design.md §1.6: 35 ms of planning instead of 2). A
bar's id never changes, so the 27 rows are read once per process and again only when a code is not found.

Retention is editable in the admin, so it is re-read after `RETENTION_TTL_S`; and a caller about to drop
rows as expired asks for `fresh=True`, so that a retention an operator just lengthened never loses a row.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from candles.bars import datetime_to_ms
from candles.models import Timeframe

RETENTION_TTL_S = 60.0
# A code nobody knows (a typo in an API call) re-reads the table at most this often.
_MISS_REFRESH_S = 1.0

_lock = threading.Lock()
_bars: dict[str, Timeframe] = {}
_loaded_at = float("-inf")


def _load() -> dict[str, Timeframe]:
    global _bars, _loaded_at
    bars = {tf.code: tf for tf in Timeframe.objects.only("id", "code", "retention", "seconds", "months")}
    with _lock:
        _bars, _loaded_at = bars, time.monotonic()
    return bars


def _current(*, max_age_s: float) -> dict[str, Timeframe]:
    # Never read yet: whatever the age asked for (inf − inf is not above inf).
    if _loaded_at == float("-inf") or time.monotonic() - _loaded_at > max_age_s:
        return _load()
    return _bars


def timeframe_id(code: str) -> int | None:
    """The id of the bar with this exact (case-sensitive) code; None when there is no such bar."""
    bar = _bars.get(code)
    if bar is None:
        bar = _current(max_age_s=_MISS_REFRESH_S).get(code)
    return None if bar is None else bar.pk


def timeframe_ids() -> dict[str, int]:
    """Every bar's id by code."""
    return {code: bar.pk for code, bar in _current(max_age_s=float("inf")).items()}


def fixed_length_ms(timeframe_id: int) -> int | None:
    """The length of a bar of fixed length (every bar but the calendar months) in milliseconds; None for a
    calendar bar or an unknown id."""
    for bar in _current(max_age_s=float("inf")).values():
        if bar.pk == timeframe_id:
            return None if bar.months else bar.seconds * 1000
    return None


def horizons_ms(now: datetime, *, fresh: bool = False) -> dict[str, int]:
    """The retention horizon (`Timeframe.horizon`) of each bar that has one, in epoch milliseconds."""
    bars = _load() if fresh else _current(max_age_s=RETENTION_TTL_S)
    horizons = {}
    for code, bar in bars.items():
        horizon = bar.horizon(now)
        if horizon is not None:
            horizons[code] = datetime_to_ms(horizon)
    return horizons


def bar_catalog_forget() -> None:
    """Read the bars again on next use (tests that change retention or the table of bars)."""
    global _loaded_at
    with _lock:
        _loaded_at = float("-inf")
