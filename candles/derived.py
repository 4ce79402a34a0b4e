"""Bars OKX does not offer (`7m`, `8H`, `10Dutc`, `2W`, `6M`, …), aggregated in SQL from a stored bar.

Grammar: `<n><unit>[utc]`, n from 1 to 9999 without a leading zero, unit `s`, `m`, `H`, `D`, `W` or `M` (calendar
months), `utc` only after H, D, W and M. A name OKX offers is a stored bar and never reaches this module.

Alignment follows OKX's own bars of the same unit (docs/api.md, "Derived bars"):

* seconds, minutes and hours below 6H open at `epoch + k × length`, in UTC (as 1m … 4H do);
* 6H and longer, days, weeks and months follow Hong Kong time (UTC+8) unless the name ends in `utc` (as 6H, 1D,
  1W, 1M do against 6Hutc, 1Dutc, 1Wutc, 1Mutc); `utc` on a bar below 6H changes nothing, those are UTC already;
* the cycle starts at the epoch's first day in the bar's zone (1970-01-01 00:00, at 16:00 UTC the day before for
  UTC+8), weeks on the first Monday (1970-01-05) and months in January 1970: the anchors the seeded multi-day
  bars use (candles/migrations/0002), so `2D` derived from `1D` would equal the stored `2D`.

Source: among the stored bars whose every open time is an open time of the derived bar's grid too (its length
divides the derived length and its anchor lies on that grid), the **coarsest**. Every such bar gives the same,
exact answer (a bucket is a whole number of its candles), so the only difference is how many rows are read: `8H`
from `4H` reads two rows a bucket where `1H` reads eight. Active bars are preferred, as an inactive bar is not
collected any more and would show gaps that a finer, collected bar does not have.

Values are exact: open of the first candle of the bucket, close of the last, max high, min low, sums of the
volumes, all numeric and written as text by PostgreSQL. `confirmed` holds when every candle the bucket needs is
stored and confirmed; `constituents` and `expected` say how many were there and how many it needs, so a gap shows.
A bucket with no stored candle is not served, as /data serves no row for a candle never stored.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection

from candles import bar_catalog
from candles.bars import HOUR_MS, BarSpec, datetime_to_ms, ms_to_datetime
from candles.models import Timeframe
from candles.reads import CandlePage, _decode_cursor, _encode_cursor

DERIVED_PATTERN = r"([1-9][0-9]{0,3})(s|m|H|D|W|M)(utc)?"
_DERIVED = re.compile(DERIVED_PATTERN)
_UNIT_MS = {"s": 1000, "m": 60_000, "H": HOUR_MS, "D": 24 * HOUR_MS, "W": 7 * 24 * HOUR_MS}
HONG_KONG_HOURS = 8
FIRST_MONDAY_MS = 4 * 24 * HOUR_MS  # 1970-01-05, the Monday weekly bars count from
# Source rows one page may aggregate: a page of a bar with more candles a bucket (`100s` from `1s`) is shortened
# so that a request costs at most about as much as this many rows; its `next` link goes on from there.
MAX_SOURCE_ROWS = 100_000
# The stored bars' anchors are editable in the admin; an edit reaches this process within this time.
_SOURCES_TTL_S = 60.0

GRAMMAR_HELP = ("<n><unit> with n from 1 to 9999 and unit s, m, H, D, W or M (calendar months), and utc after "
                "H, D, W or M for UTC alignment instead of Hong Kong's (e.g. 7m, 45m, 8H, 10Hutc, 4D, 2W, 6M)")


class NotDerivable(ValueError):
    """A bar name that is neither stored nor derivable; the message says why."""


@dataclass(frozen=True, slots=True)
class DerivedBar:
    code: str
    spec: BarSpec  # the derived bar's own open-time arithmetic
    source: str  # the stored bar it is aggregated from
    source_id: int
    ratio: int  # source candles in one bucket (`expected`)


@dataclass(frozen=True, slots=True)
class DerivedPage(CandlePage):
    # (constituents, expected) of each row of `candles`, in the same order. Kept apart from the rows so the
    # rows keep the ServedCandle shape every renderer of /data unpacks.
    coverage: list = None  # type: ignore[assignment]


def derived_spec(code: str) -> BarSpec:
    """The open-time arithmetic of a derived bar name; NotDerivable when the name is not of the grammar."""
    match = _DERIVED.fullmatch(code)
    if match is None:
        raise NotDerivable(f"{code!r} is not a bar name: {GRAMMAR_HELP}")
    n, unit, utc = int(match[1]), match[2], match[3] is not None
    if utc and unit in ("s", "m"):
        raise NotDerivable(f"{code!r}: utc applies to H, D, W and M only (seconds and minutes are always UTC)")
    if unit == "M":
        offset = 0 if utc else HONG_KONG_HOURS
        return BarSpec(code, 0, n, offset, -offset * HOUR_MS)
    length_ms = n * _UNIT_MS[unit]
    hong_kong = not utc and length_ms >= 6 * HOUR_MS
    offset = HONG_KONG_HOURS if hong_kong else 0
    base = FIRST_MONDAY_MS if unit == "W" else 0
    return BarSpec(code, length_ms // 1000, 0, offset, base - offset * HOUR_MS)


_lock = threading.Lock()
_sources: list[tuple[Timeframe, BarSpec]] = []
_sources_at = float("-inf")


def _stored_bars() -> list[tuple[Timeframe, BarSpec]]:
    global _sources, _sources_at
    if time.monotonic() - _sources_at > _SOURCES_TTL_S:
        bars = [(tf, tf.spec) for tf in Timeframe.objects.all()]
        with _lock:
            _sources, _sources_at = bars, time.monotonic()
    return _sources


def derived_forget() -> None:
    """Read the stored bars again on next use (tests that change the table of bars)."""
    global _sources_at
    with _lock:
        _sources_at = float("-inf")


def _divides(source: BarSpec, derived: BarSpec) -> int | None:
    """How many `source` candles make one `derived` bucket, when every source open time is a derived-grid
    boundary or inside a bucket that starts on one (the source grid refines the derived grid); else None."""
    if derived.months:
        if not source.months or source.utc_offset_hours != derived.utc_offset_hours:
            return None
        if derived.months % source.months:
            return None
        # The source cycle must start on a derived bucket's first month: its anchor is a derived open time.
        return derived.months // source.months if derived.is_open_time(source.anchor_ms) else None
    if source.months:
        return None
    if derived.seconds % source.seconds or (derived.anchor_ms - source.anchor_ms) % (source.seconds * 1000):
        return None
    return derived.seconds // source.seconds


def derived_bar(code: str) -> DerivedBar:
    """The derived bar `code` and the stored bar it is aggregated from; NotDerivable when there is none."""
    spec = derived_spec(code)
    best: tuple[tuple, Timeframe, int] | None = None
    for tf, source in _stored_bars():
        ratio = _divides(source, spec)
        if ratio is None:
            continue
        # Active first, then the fewest candles a bucket, then the code, so the choice never depends on order.
        rank = (not tf.is_active, ratio, tf.code)
        if best is None or rank < best[0]:
            best = (rank, tf, ratio)
    if best is None:
        raise NotDerivable(f"no stored bar divides {code!r}: none of its length opens on its boundaries")
    _, tf, ratio = best
    return DerivedBar(code=code, spec=spec, source=tf.code, source_id=tf.pk, ratio=ratio)


def resolve(code: str) -> DerivedBar | None:
    """None for a stored bar (served as it is), the DerivedBar for any other bar; NotDerivable when neither."""
    if bar_catalog.timeframe_id(code) is not None:
        return None
    return derived_bar(code)


# --- the read -----------------------------------------------------------------------------------------------


def _bucket_sql(spec: BarSpec) -> tuple[str, list[object]]:
    """SQL for the open time of the bucket holding source open time `open_time`, and its parameters."""
    if not spec.months:
        return "date_bin(%s::interval, open_time, %s::timestamptz)", [
            timedelta(seconds=spec.seconds), ms_to_datetime(spec.anchor_ms)]
    # Month index in the bar's zone, floored to the cycle of `months` counted from January 1970; back to UTC.
    offset = timedelta(hours=spec.utc_offset_hours)
    local = "(open_time AT TIME ZONE 'UTC' + %s::interval)"
    index = f"(extract(year FROM {local})::int * 12 + extract(month FROM {local})::int - 1)"
    first = f"({index} - (({index} - {1970 * 12}) %% %s + %s) %% %s)"
    sql = f"(make_timestamp({first} / 12, {first} %% 12 + 1, 1, 0, 0, 0) - %s::interval) AT TIME ZONE 'UTC'"
    one = [offset, offset, offset, offset, spec.months, spec.months, spec.months]
    return sql, one + one + [offset]


_ISO = ("to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        "|| CASE WHEN date_part('milliseconds', bucket)::int %% 1000 = 0 THEN 'Z' "
        "ELSE to_char(bucket AT TIME ZONE 'UTC', '.MS\"Z\"') END")

# The inner read takes the source rows in open-time order with a row limit: at most `ratio` rows fall in one
# bucket, so (k + 1) × ratio rows span at least k + 1 buckets and only the farthest can be cut short. The bar is a
# constant timeframe_id and the range is bounded where the caller knows a bound, so leaves prune when planned.
_PAGE = """
SELECT {iso}, (extract(epoch FROM bucket) * 1000)::bigint,
       (array_agg(open ORDER BY open_time))[1]::text, max(high)::text, min(low)::text,
       (array_agg(close ORDER BY open_time DESC))[1]::text, sum(vol)::text, sum(vol_ccy)::text,
       -- One candle without a quote volume leaves the sum unknown, not smaller.
       CASE WHEN count(vol_ccy_quote) = count(*) THEN sum(vol_ccy_quote)::text END,
       bool_and(confirmed) AND count(*) = %s, count(*)::int
FROM (
    SELECT {bucket} AS bucket, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed
    FROM candles_candle
    WHERE {where}
    ORDER BY open_time {order}
    LIMIT %s
) s
GROUP BY bucket
ORDER BY bucket {order}
"""


def _read(bar: DerivedBar, instrument: int | str, lo: int | None, hi: int | None, descending: bool,
          row_limit: int) -> list[tuple]:
    """Buckets of the source rows with lo ≤ open time < hi (ms), up to `row_limit` rows from the near end."""
    where = ["instrument_id = %s" if isinstance(instrument, int)
             else "instrument_id = (SELECT id FROM candles_instrument WHERE inst_id = %s AND price = 'trade')",
             "timeframe_id = %s"]
    where_params: list[object] = [instrument, bar.source_id]
    if lo is not None:
        where.append("open_time >= %s")
        where_params.append(ms_to_datetime(lo))
    if hi is not None:
        where.append("open_time < %s")
        where_params.append(ms_to_datetime(hi))
    bucket, bucket_params = _bucket_sql(bar.spec)
    order = "DESC" if descending else "ASC"
    sql = _PAGE.format(iso=_ISO, bucket=bucket, where=" AND ".join(where), order=order)
    # Parameters reach the server as literals (client-side binding), so the bar and range are plan-time constants.
    with connection.cursor() as cur:
        cur.execute(sql, [bar.ratio, *bucket_params, *where_params, row_limit])
        return cur.fetchall()


def page_size(bar: DerivedBar, limit: int) -> int:
    """`limit`, shortened for bars of many candles a bucket so a page reads at most about MAX_SOURCE_ROWS."""
    return max(1, min(limit, MAX_SOURCE_ROWS // bar.ratio - 2))


def derived_list_text(
    *, bar: DerivedBar, inst_id: str | None = None, instrument_id: int | None = None,
    start: datetime | None = None, end: datetime | None = None, confirmed: bool | None = None,
    descending: bool = False, limit: int = 100, cursor: str | None = None,
) -> DerivedPage:
    """A page of the derived bar, shaped as `candle_list_text`'s: same filters and cursors (by bucket open time),
    rows shaped as ServedCandle, and each row's (constituents, expected) in `coverage`.

    start/end bound bucket open times (inclusive); `confirmed` filters on the bucket's own confirm; a page may hold
    fewer than `limit` rows for bars of many source candles a bucket (see `page_size`), with a `next` link.
    """
    instrument = instrument_id if instrument_id is not None else inst_id
    if instrument is None:
        raise ValueError("give instrument_id or inst_id")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    spec = bar.spec
    limit = page_size(bar, limit)
    # Bucket open times the page may hold, inclusive; None: unbounded on that side.
    first = None if start is None else spec.ceil(datetime_to_ms(start))
    last = None if end is None else spec.floor(datetime_to_ms(end))
    if cursor is not None:
        after = datetime_to_ms(_decode_cursor(cursor, descending))
        if descending:
            last = spec.floor(after - 1) if last is None else min(last, spec.floor(after - 1))
        else:
            first = spec.ceil(after + 1) if first is None else max(first, spec.ceil(after + 1))
    if first is not None and last is not None and first > last:
        return DerivedPage(candles=[], next_cursor=None, coverage=[])
    # The source range, lo ≤ open time < hi: whole buckets only.
    lo = first
    hi = None if last is None else spec.following(last)
    rows: list[tuple] = []
    clip = True
    # More rows a bucket than the ratio can only come from candles off the source grid (an anchor edited in the
    # admin after they were stored); reading more rows then keeps a bucket from being cut forever.
    slack = 1
    while len(rows) <= limit:
        need = limit + 1 - len(rows)
        window_lo, window_hi = lo, hi
        clipped = False
        # The near end known, the first read covers only the span the page can fill: a page open at its far end
        # would otherwise plan every later leaf of the source bar (as reads._list_rows explains).
        if clip and (hi if descending else lo) is not None:
            if descending:
                near_lo = spec.advance(hi, -(need + 1))
                if lo is None or near_lo > lo:
                    window_lo, clipped = near_lo, True
            else:
                near_hi = spec.advance(lo, need + 1)
                if hi is None or near_hi < hi:
                    window_hi, clipped = near_hi, True
        clip = False
        # One bucket more than the window holds: a window read whole is never taken for one the limit cut short.
        row_limit = (need + 2) * bar.ratio * slack
        buckets = _read(bar, instrument, window_lo, window_hi, descending, row_limit)
        read = sum(b[-1] for b in buckets)
        cut = read >= row_limit
        if cut and len(buckets) < 2:
            slack *= 2
            continue
        if cut:
            # The row limit may have split the farthest bucket: leave it for the next read, which starts at it.
            far_ms = buckets.pop()[1]
            if descending:
                hi = spec.following(far_ms)
            else:
                lo = far_ms
        elif clipped:
            if descending:
                hi = window_lo
            else:
                lo = window_hi
        rows.extend(b for b in buckets if confirmed is None or b[9] is confirmed)
        if not cut and not clipped:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    return DerivedPage(
        candles=[r[:10] for r in rows],
        next_cursor=_encode_cursor(rows[-1][1], descending) if more else None,
        coverage=[(r[10], bar.ratio) for r in rows],
    )
