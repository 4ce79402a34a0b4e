"""The open times of a series: ranges of them (`Range`, cut and subtracted), an instrument's lifetime in them
(from the candle containing its listing to the one containing its expiry or delisting), which ones a bar has
between two moments (UTC+8 alignment, calendar months), and which of them have no stored candle, as runs.
Detection, repair, verification and the backfill command all take these from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.db import connection

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.models import Instrument, Timeframe


@dataclass(frozen=True, slots=True)
class Range:
    start_ms: int  # first open time
    end_ms: int  # last open time, inclusive
    reason: str | None = None  # why REST cannot serve it; None when it can

    def fmt(self) -> str:
        return f"{ms_to_datetime(self.start_ms).isoformat()} to {ms_to_datetime(self.end_ms).isoformat()}"


def split(spec: BarSpec, rng: Range, size: int) -> Iterator[Range]:
    """`rng` cut into consecutive ranges of at most `size` open times."""
    start = rng.start_ms
    while start <= rng.end_ms:
        last = min(rng.end_ms, spec.advance(start, size - 1))
        yield Range(start, last, rng.reason)
        start = spec.following(last)


def subtract(spec: BarSpec, rng: Range, covered: Sequence[tuple[int, int]]) -> Iterator[Range]:
    """The parts of `rng` outside the `covered` ranges (sorted by start)."""
    current = rng.start_ms
    for start, end in covered:
        if end < current:
            continue
        if start > rng.end_ms:
            break
        if start > current:
            yield Range(current, spec.floor(start - 1), rng.reason)
        current = max(current, spec.ceil(end + 1))
        if current > rng.end_ms:
            return
    if current <= rng.end_ms:
        yield Range(current, rng.end_ms, rng.reason)


def open_containing(spec: BarSpec, moment: datetime) -> int:
    """The open time of the candle that contains `moment`."""
    return spec.floor(datetime_to_ms(moment))


def listing_open_ms(spec: BarSpec, instrument: Instrument) -> int | None:
    """The first open time OKX has: the candle containing the listing moment."""
    return None if instrument.listed_at is None else open_containing(spec, instrument.listed_at)


def final_open_ms(spec: BarSpec, instrument: Instrument) -> int | None:
    """The last open time an instrument can have: the candle containing its expiry or delisting, if any."""
    ends = [datetime_to_ms(moment) for moment in (instrument.expires_at, instrument.delisted_at) if moment]
    return spec.floor(min(ends)) if ends else None


def expected_open_times(timeframe: Timeframe, start: datetime, end: datetime) -> list[datetime]:
    """Every open time of `timeframe` in [start, end], knowing UTC+8 alignment and calendar months."""
    spec = timeframe.spec
    return [ms_to_datetime(ms) for ms in spec.open_times(datetime_to_ms(start), datetime_to_ms(end))]


class MissingRange(NamedTuple):
    start: datetime  # first missing open time
    end: datetime  # last missing open time (inclusive)
    count: int


# Runs of expected open times without a stored candle: the expected times (a series for fixed bars, a list for
# calendar ones), then islands of misses.
_MISSING_RUNS = """
WITH expected AS (
    SELECT g AS open_time, n FROM {expected} WITH ORDINALITY AS e(g, n)
), missing AS (
    SELECT open_time, n - row_number() OVER (ORDER BY n) AS island
    FROM expected e
    -- A lateral probe of the primary key per expected time. A plain NOT EXISTS lets the planner pick a join
    -- from table statistics, and for a series the statistics do not know yet (new, or freshly loaded) it
    -- compared every expected time with every stored row: 10 s instead of 32 ms for 18k 1s candles.
    LEFT JOIN LATERAL (
        SELECT true AS found FROM candles_candle c
        WHERE c.instrument_id = %(instrument)s AND c.timeframe_id = %(timeframe)s AND c.open_time = e.open_time
          AND (c.confirmed OR NOT %(confirmed_only)s)
        LIMIT 1
    ) hit ON true
    WHERE hit.found IS NULL
)
SELECT min(open_time), max(open_time), count(*) FROM missing GROUP BY island ORDER BY 1
"""
_FIXED_GAPS = _MISSING_RUNS.format(
    expected="generate_series(%(first)s::timestamptz, %(last)s::timestamptz, %(step)s * interval '1 second')")
_LISTED_GAPS = _MISSING_RUNS.format(expected="unnest(%(times)s::timestamptz[])")


def candle_missing_ranges(
    *, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime, confirmed_only: bool = True
) -> list[MissingRange]:
    """Runs of expected open times in [start, end] without a stored candle, oldest first.

    With `confirmed_only` (the default) an unconfirmed row counts as missing too: for a closed candle it is a
    version that never got final (its collector died before the confirm push) and must come from REST.
    """
    spec = timeframe.spec
    first_ms = spec.ceil(datetime_to_ms(start))
    last_ms = spec.floor(datetime_to_ms(end))
    if first_ms > last_ms:
        return []
    params: dict[str, object] = {"instrument": instrument_id, "timeframe": timeframe.pk,
                                 "confirmed_only": confirmed_only}
    if timeframe.is_calendar:
        sql = _LISTED_GAPS
        params["times"] = [ms_to_datetime(ms) for ms in spec.open_times(first_ms, last_ms)]
    else:
        sql = _FIXED_GAPS
        params.update(first=ms_to_datetime(first_ms), last=ms_to_datetime(last_ms), step=timeframe.seconds)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [MissingRange(*row) for row in cur.fetchall()]
