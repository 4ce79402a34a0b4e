"""Bar arithmetic for OKX candles: open time of the candle containing a moment, and its neighbours.

Independent of candles/bars.py on purpose: the simulator is a second, separate reading of PROTOCOL.md, so
a mistake shared by both sides cannot hide.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
HONG_KONG_OFFSET_MS = 8 * HOUR_MS
# 1970-01-01 was a Thursday: the first Monday is four days later.
FIRST_MONDAY_MS = 4 * DAY_MS

# Every bar of PROTOCOL.md, in its order.
ALL_BARS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1H", "2H", "4H", "6H", "12H", "1D", "2D", "3D", "5D", "1W", "1M",
    "3M", "6Hutc", "12Hutc", "1Dutc", "2Dutc", "3Dutc", "5Dutc", "1Wutc", "1Mutc", "3Mutc",
)


@dataclass(frozen=True, slots=True)
class Bar:
    """One timeframe. Fixed bars have `duration_ms`; calendar bars (1M, 3M) have `months` instead.

    `zone_offset_ms` is +8 h for bars of 6H and longer without `utc` (they open on Hong Kong boundaries).
    """

    name: str
    duration_ms: int = 0
    months: int = 0
    zone_offset_ms: int = 0
    anchor_ms: int = 0  # local time of an open (epoch days: 0; weeks: the first Monday)

    @property
    def is_calendar(self) -> bool:
        return self.months > 0

    def floor(self, moment_ms: int) -> int:
        """Open time of the candle containing `moment_ms`."""
        if self.is_calendar:
            local = datetime.fromtimestamp((moment_ms + self.zone_offset_ms) // 1000, UTC)
            month0 = (local.month - 1) // self.months * self.months
            return self._month_start(local.year, month0)
        shift = self.zone_offset_ms - self.anchor_ms
        return (moment_ms + shift) // self.duration_ms * self.duration_ms - shift

    def next_open(self, open_ms: int) -> int:
        """Open time of the following candle (= close time of this one)."""
        if self.is_calendar:
            local = datetime.fromtimestamp((open_ms + self.zone_offset_ms) // 1000, UTC)
            return self._month_start(local.year, local.month - 1 + self.months)
        return open_ms + self.duration_ms

    def prev_open(self, open_ms: int) -> int:
        return self.floor(open_ms - 1)

    def is_aligned(self, moment_ms: int) -> bool:
        return self.floor(moment_ms) == moment_ms

    def _month_start(self, year: int, month0: int) -> int:
        year += month0 // 12
        month0 %= 12
        return calendar.timegm((year, month0 + 1, 1, 0, 0, 0)) * 1000 - self.zone_offset_ms


def _build_bars() -> dict[str, Bar]:
    fixed = {
        "1s": SECOND_MS, "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
        "30m": 30 * MINUTE_MS, "1H": HOUR_MS, "2H": 2 * HOUR_MS, "4H": 4 * HOUR_MS,
        "6H": 6 * HOUR_MS, "12H": 12 * HOUR_MS, "1D": DAY_MS, "2D": 2 * DAY_MS, "3D": 3 * DAY_MS, "5D": 5 * DAY_MS,
    }
    bars: dict[str, Bar] = {}
    for name, duration in fixed.items():
        # Bars shorter than 6H divide 8 h, so the Hong Kong offset would not move them: keep them on UTC.
        offset = HONG_KONG_OFFSET_MS if duration >= 6 * HOUR_MS else 0
        bars[name] = Bar(name, duration_ms=duration, zone_offset_ms=offset)
        if duration >= 6 * HOUR_MS:
            bars[name + "utc"] = Bar(name + "utc", duration_ms=duration)
    bars["1W"] = Bar("1W", duration_ms=WEEK_MS, zone_offset_ms=HONG_KONG_OFFSET_MS, anchor_ms=FIRST_MONDAY_MS)
    bars["1Wutc"] = Bar("1Wutc", duration_ms=WEEK_MS, anchor_ms=FIRST_MONDAY_MS)
    for months in (1, 3):
        bars[f"{months}M"] = Bar(f"{months}M", months=months, zone_offset_ms=HONG_KONG_OFFSET_MS)
        bars[f"{months}Mutc"] = Bar(f"{months}Mutc", months=months)
    assert set(bars) == set(ALL_BARS)
    return {name: bars[name] for name in ALL_BARS}


BARS: dict[str, Bar] = _build_bars()


def substeps_of(bar: Bar) -> int:
    """Sub-steps of a candle's path: 1s candles change every 200 ms; longer ones in 12 steps (every 5 s for 1m).
    More steps cost CPU."""
    return 5 if bar.duration_ms == 1000 else 12
