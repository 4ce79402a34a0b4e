"""Open-time arithmetic of OKX bars, in integer epoch milliseconds.

Fixed-length bars open at `anchor + k × length`. Calendar bars (1M, 3M and their utc variants) open on
the first day of a month in the bar's time zone, every `months` months counted from the anchor's month.
Bars of 6H and longer without the `utc` suffix follow Hong Kong time (UTC+8), which is what the anchor
encodes; the functions here never assume UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HOUR_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: open times are UTC instants")
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _month_index(ms: int) -> int:
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.year * 12 + moment.month - 1


def _month_start_ms(index: int) -> int:
    year, month0 = divmod(index, 12)
    return datetime_to_ms(datetime(year, month0 + 1, 1, tzinfo=UTC))


@dataclass(frozen=True, slots=True)
class BarSpec:
    code: str
    seconds: int
    months: int
    utc_offset_hours: int
    anchor_ms: int

    @property
    def length_ms(self) -> int:
        if self.months:
            raise ValueError(f"{self.code} is a calendar bar with no fixed length")
        return self.seconds * 1000

    def floor(self, ms: int) -> int:
        """The open time of the bar containing instant `ms`."""
        if not self.months:
            length = self.seconds * 1000
            return ms - (ms - self.anchor_ms) % length
        offset = self.utc_offset_hours * HOUR_MS
        index = _month_index(ms + offset)
        index -= (index - _month_index(self.anchor_ms + offset)) % self.months
        return _month_start_ms(index) - offset

    def is_open_time(self, ms: int) -> bool:
        return self.floor(ms) == ms

    def following(self, open_ms: int) -> int:
        """The open time of the bar after the one opening at `open_ms`."""
        if not self.months:
            return open_ms + self.seconds * 1000
        offset = self.utc_offset_hours * HOUR_MS
        return _month_start_ms(_month_index(open_ms + offset) + self.months) - offset

    def ceil(self, ms: int) -> int:
        """The first open time at or after `ms`."""
        floor = self.floor(ms)
        return floor if floor == ms else self.following(floor)

    def open_times(self, start_ms: int, end_ms: int) -> Iterator[int]:
        """Every open time t with start ≤ t ≤ end, in order."""
        current = self.ceil(start_ms)
        while current <= end_ms:
            yield current
            current = self.following(current)

    def previous(self, open_ms: int) -> int:
        """The open time of the bar before the one opening at `open_ms`."""
        return self.floor(open_ms - 1)

    def count(self, start_ms: int, end_ms: int) -> int:
        """How many open times lie in [start, end] (both open times); 0 when end is before start."""
        if end_ms < start_ms:
            return 0
        if not self.months:
            return (end_ms - start_ms) // (self.seconds * 1000) + 1
        offset = self.utc_offset_hours * HOUR_MS
        return (_month_index(end_ms + offset) - _month_index(start_ms + offset)) // self.months + 1

    def advance(self, open_ms: int, bars: int) -> int:
        """The open time `bars` bars after `open_ms`."""
        if not self.months:
            return open_ms + bars * self.seconds * 1000
        offset = self.utc_offset_hours * HOUR_MS
        return _month_start_ms(_month_index(open_ms + offset) + bars * self.months) - offset

    def last_closed(self, moment_ms: int) -> int:
        """The newest open time whose candle had closed at `moment_ms` (the one containing it is still open)."""
        return self.previous(self.floor(moment_ms))
