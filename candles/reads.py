"""The candle reads that must be fast: keyset-paged range lists (`candle_list_text`, OKX's exact texts straight
from PostgreSQL), the versions a stream client replays, and a series' newest open time.

Every read serves one shape, `ServedCandle` (candles/candle_shape.py): numbers as the stored numeric's exact text.
Code that computes reads the model (`Candle`), whose numeric columns come back as Decimals.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from candles import bar_catalog
from candles.bars import datetime_to_ms, ms_to_datetime


@dataclass(frozen=True, slots=True)
class CandlePage:
    candles: list  # ServedCandle-shaped tuples (candles/candle_shape.py)
    # Opaque; pass back as `cursor` for the next page. None on the last page.
    next_cursor: str | None


class InvalidCursor(ValueError):
    pass


def _encode_cursor(open_time: datetime | int, descending: bool) -> str:
    ms = open_time if isinstance(open_time, int) else datetime_to_ms(open_time)
    raw = f"{'d' if descending else 'a'}{ms}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, descending: bool) -> datetime:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, after = raw[0], ms_to_datetime(int(raw[1:]))
    except (ValueError, IndexError, UnicodeDecodeError, OverflowError):
        raise InvalidCursor(f"cursor {cursor!r} is not one this server issued") from None
    if direction != ("d" if descending else "a"):
        raise InvalidCursor("cursor was issued for the other sort order")
    return after


def _list_query(
    columns: str, *, instrument: int | str, timeframe: int, start: datetime | None, end: datetime | None,
    confirmed: bool | None, descending: bool, limit: int, cursor: str | None,
) -> tuple[str, list[object]]:
    """The instrument is given by id, or by inst_id resolved in the same statement; the bar always by id.

    The bar must be a constant for PostgreSQL to prune the other bars' partitions when it plans: by a subquery,
    planning alone took 35 ms (docs/storage-design.md §1.6). Parameters reach the server as literals.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    where = [
        "instrument_id = %s" if isinstance(instrument, int)
        else "instrument_id = (SELECT id FROM candles_instrument WHERE inst_id = %s AND price = 'trade')",
        "timeframe_id = %s",
    ]
    params: list[object] = [instrument, timeframe]
    if start is not None:
        where.append("open_time >= %s")
        params.append(start)
    if end is not None:
        where.append("open_time <= %s")
        params.append(end)
    if confirmed is not None:
        where.append("confirmed = %s")
        params.append(confirmed)
    if cursor is not None:
        where.append("open_time < %s" if descending else "open_time > %s")
        params.append(_decode_cursor(cursor, descending))
    order = "DESC" if descending else "ASC"
    sql = f"SELECT {columns} FROM candles_candle WHERE {' AND '.join(where)} ORDER BY open_time {order} LIMIT %s"
    params.append(limit + 1)
    return sql, params


# Everything is text or integers made by PostgreSQL: numeric::text writes the stored digits as they are (never
# exponent notation), and no timestamptz or numeric value is parsed in Python (Django's timestamptz loader is
# pure Python and cost more than the rest of a 1000-candle page).
_TEXT_COLUMNS = (
    "to_char(open_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
    "|| CASE WHEN date_part('milliseconds', open_time)::int %% 1000 = 0 THEN 'Z' "
    "ELSE to_char(open_time AT TIME ZONE 'UTC', '.MS\"Z\"') END, "
    "(extract(epoch FROM open_time) * 1000)::bigint, open::text, high::text, low::text, close::text, "
    "vol::text, vol_ccy::text, vol_ccy_quote::text, confirmed"
)


# The newest open time this process served per series: where the next newest page's first read may start.
# Only a hint (a stale one costs a second read, never a wrong page); bounded, and cleared when full.
_newest_seen: dict[tuple[int | str, int], int] = {}
_NEWEST_SEEN_MAX = 50_000


def candle_list_text(
    *,
    instrument_id: int | None = None,
    timeframe_id: int | None = None,
    inst_id: str | None = None,
    bar: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    confirmed: bool | None = None,
    descending: bool = False,
    limit: int = 100,
    cursor: str | None = None,
) -> CandlePage:
    """Candles of one series with start ≤ open time ≤ end, keyset-paginated by open time: plain tuples shaped as
    `ServedCandle` (candles/candle_shape.py), no Decimal or datetime made in Python.

    The series is given by ids, or by names (`inst_id`, `bar`, exact): the instrument is resolved in the same
    statement, which saves a round trip, and the bar from this process's map of bars; unknown names simply
    give an empty page. The API builds its JSON and CSV rows
    from these tuples directly.
    """
    instrument = instrument_id if instrument_id is not None else inst_id
    if instrument is None or (timeframe_id is None and bar is None):
        raise ValueError("give instrument_id or inst_id, and timeframe_id or bar")
    timeframe = timeframe_id if timeframe_id is not None else bar_catalog.timeframe_id(bar)
    if timeframe is None:
        if cursor is not None:
            _decode_cursor(cursor, descending)
        return CandlePage(candles=[], next_cursor=None)
    newest_page = descending and start is None and end is None and cursor is None
    series = (instrument, timeframe)
    rows = _list_rows(_TEXT_COLUMNS, instrument=instrument, timeframe=timeframe, start=start, end=end,
                      confirmed=confirmed, descending=descending, limit=limit, cursor=cursor,
                      newest_hint=_newest_seen.get(series) if newest_page else None)
    if newest_page and rows:
        if len(_newest_seen) >= _NEWEST_SEEN_MAX:
            _newest_seen.clear()
        _newest_seen[series] = rows[0][1]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1][1], descending) if more else None
    return CandlePage(candles=rows, next_cursor=next_cursor)


def candle_versions_text(*, instrument_id: int, timeframe_id: int, start_ms: int, limit: int) -> list[tuple]:
    """Up to `limit` candles of one series from `start_ms` on, ascending: ServedCandle-shaped tuples followed by
    each row's version (the live stream's replay, which must not send a version older than one it sent)."""
    rows = _list_rows(_TEXT_COLUMNS + ", version", instrument=instrument_id, timeframe=timeframe_id,
                      start=ms_to_datetime(start_ms), end=None, confirmed=None, descending=False, limit=limit,
                      cursor=None)
    return rows[:limit]


def candle_newest_ms(*, instrument_id: int, timeframe_id: int) -> int | None:
    """Open time (ms) of the series' newest stored candle; None when it has none."""
    rows = _list_rows("(extract(epoch FROM open_time) * 1000)::bigint", instrument=instrument_id,
                      timeframe=timeframe_id, start=None, end=None, confirmed=None, descending=True, limit=1,
                      cursor=None)
    return rows[0][0] if rows else None


def _list_rows(
    columns: str, *, instrument: int | str, timeframe: int, start: datetime | None, end: datetime | None,
    confirmed: bool | None, descending: bool, limit: int, cursor: str | None, newest_hint: int | None = None,
) -> list[tuple]:
    """Up to `limit` + 1 rows of the page, read first within the span `limit` + 1 bars can fill from where the
    page starts, then, only when that span held fewer (a gap, or the end of the data), beyond it.

    A page open at its far end (`start` without `end` ascending, the reverse descending) would otherwise plan
    and open every leaf of the bar from its start onwards (20 daily leaves of `1s` for a page three weeks back:
    1.1 ms more planning and 0.5 ms more execution than the one leaf the page reads, a seventh of a 1,000-candle
    page's time). Calendar bars, whose leaves are years, are read as they are.
    """
    after = None if cursor is None else _decode_cursor(cursor, descending)
    known = [t for t in ((end, after) if descending else (start, after)) if t is not None]
    length_ms = bar_catalog.fixed_length_ms(timeframe)
    if descending and not known and length_ms is not None and newest_hint is not None:
        # The newest page again: from the newest open time this process last saw, the first read plans the leaves
        # from there on only, not every leaf of the bar (planning all 24 monthly leaves of 1m cost 1.2 ms of a
        # 100-candle page). Rows newer than the hint are read all the same (the read has no upper bound).
        known = [ms_to_datetime(newest_hint + length_ms)]
    bound = None
    if known and length_ms is not None:
        # Whole milliseconds, as open times and cursors are: the two reads below meet exactly at the bound.
        near_ms = datetime_to_ms(min(known) if descending else max(known))
        span_ms = (limit + 2) * length_ms
        bound = ms_to_datetime(near_ms - span_ms if descending else near_ms + span_ms)
        far = start if descending else end
        if far is not None and (far >= bound if descending else far <= bound):
            bound = None  # the caller's own range is the shorter one
    sql, params = _list_query(columns, instrument=instrument, timeframe=timeframe,
                              start=bound if descending and bound is not None else start,
                              end=bound if not descending and bound is not None else end,
                              confirmed=confirmed, descending=descending, limit=limit, cursor=cursor)
    rows = _fetch(sql, params)
    if len(rows) > limit or bound is None:
        return rows
    # Fewer than a page inside the span (a gap, or the end of the data): the rest lies beyond it, or nowhere.
    sql, params = _list_query(columns, instrument=instrument, timeframe=timeframe, start=start, end=end,
                              confirmed=confirmed, descending=descending, limit=max(1, limit - len(rows)),
                              cursor=_encode_cursor(bound, descending))
    return rows + _fetch(sql, params)


def _fetch(sql: str, params: list[object]) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()

