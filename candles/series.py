"""The open times of a series: which ones a bar has between two moments (UTC+8 alignment, calendar months), and
which of them have no stored candle, as runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from django.db import connection

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Timeframe


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
