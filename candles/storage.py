"""The one write path for candles, and the reads that must be fast.

`candles_upsert` is the only code that writes the candles table: live data, backfill and the admin all
call it. A batch is copied into a temporary staging table and merged with one
`INSERT … SELECT … ON CONFLICT DO UPDATE`, inside one transaction. The database enforces the rules:

* a row is validated in SQL (known instrument and bar, decimal numbers, high ≥ max(open, close),
  low ≤ min(open, close), volumes ≥ 0, open time on the bar's boundary); an invalid row is reported
  with its index and reason, and the valid rows of the batch still land;
* a confirmed candle is never replaced by an unconfirmed one;
* otherwise only a newer version (receipt time) replaces the stored one, so a retried flush of an older
  batch cannot undo a newer write;
* open candles from REST are not stored (REST caches lag; the open candle comes from the WebSocket);
* within one batch, the same key keeps the winner by those same rules.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from django.db import connection, transaction

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Timeframe

logger = logging.getLogger(__name__)

Number = Decimal | str


class CandleRow(NamedTuple):
    """One parsed candle, as every producer hands it to `candles_upsert`.

    Field order is the staging table's column order, so a row is copied without being rebuilt.
    Prices and volumes are Decimals or OKX's decimal strings, never floats.
    """

    inst_id: str
    bar: str
    open_time_ms: int
    open: Number
    high: Number
    low: Number
    close: Number
    vol: Number
    vol_ccy: Number
    vol_ccy_quote: Number | None
    confirmed: bool
    source: str  # "ws" or "rest"
    version: int  # receipt time in microseconds since the epoch; newer wins


@dataclass(frozen=True, slots=True)
class RejectedRow:
    index: int
    row: CandleRow
    reason: str

    def __str__(self) -> str:
        r = self.row
        return f"row {self.index} ({r.inst_id} {r.bar} {r.open_time_ms}): {self.reason}"


@dataclass(slots=True)
class UpsertResult:
    received: int = 0
    inserted: int = 0
    updated: int = 0
    # Valid rows that changed nothing: older than the stored version, unconfirmed over confirmed,
    # or a duplicate key within the batch that lost to its twin.
    unchanged: int = 0
    # Open candles from REST, which are never stored.
    skipped_open_rest: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.inserted + self.updated


_STAGING_COLUMNS = (
    "inst_id, bar, open_time_ms, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, source, version"
)

# Temporary and dropped at commit: nothing survives a pooled connection, and no WAL is written for it.
_CREATE_STAGING = f"""
CREATE TEMPORARY TABLE candle_staging (
    seq integer GENERATED ALWAYS AS IDENTITY (MINVALUE 0 START WITH 0),
    inst_id text, bar text, open_time_ms bigint,
    open text, high text, low text, close text, vol text, vol_ccy text, vol_ccy_quote text,
    confirmed boolean, source text, version bigint
) ON COMMIT DROP
"""
_COPY_STAGING = f"COPY candle_staging ({_STAGING_COLUMNS}) FROM STDIN"

_SIGNED = r"'^-?[0-9]+(\.[0-9]+)?$'"
_UNSIGNED = r"'^[0-9]+(\.[0-9]+)?$'"

# The first failing rule names the row's reason; CASE stops at it, so later casts never see bad text.
_MERGE = f"""
WITH checked AS MATERIALIZED (
    SELECT s.seq, s.open_time_ms, s.confirmed, s.source, s.version,
           s.open, s.high, s.low, s.close, s.vol, s.vol_ccy, NULLIF(s.vol_ccy_quote, '') AS vol_ccy_quote,
           i.id AS instrument_id, t.id AS timeframe_id,
           CASE
               WHEN i.id IS NULL THEN 'unknown instrument ' || coalesce(quote_literal(s.inst_id), 'NULL')
               WHEN t.id IS NULL THEN 'unknown bar ' || coalesce(quote_literal(s.bar), 'NULL')
               WHEN s.open_time_ms IS NULL THEN 'open time is missing'
               WHEN s.confirmed IS NULL THEN 'confirmed flag is missing'
               WHEN s.version IS NULL THEN 'version is missing'
               WHEN s.source IS NULL OR s.source NOT IN ('ws', 'rest') THEN 'source must be ws or rest'
               WHEN s.open IS NULL OR s.open !~ {_SIGNED} THEN 'open is not a decimal number'
               WHEN s.high IS NULL OR s.high !~ {_SIGNED} THEN 'high is not a decimal number'
               WHEN s.low IS NULL OR s.low !~ {_SIGNED} THEN 'low is not a decimal number'
               WHEN s.close IS NULL OR s.close !~ {_SIGNED} THEN 'close is not a decimal number'
               WHEN s.vol IS NULL OR s.vol !~ {_UNSIGNED} THEN 'vol is not a non-negative decimal number'
               WHEN s.vol_ccy IS NULL OR s.vol_ccy !~ {_UNSIGNED}
                   THEN 'vol_ccy is not a non-negative decimal number'
               WHEN NULLIF(s.vol_ccy_quote, '') !~ {_UNSIGNED}
                   THEN 'vol_ccy_quote is not a non-negative decimal number'
               WHEN s.high::numeric < greatest(s.open::numeric, s.close::numeric, s.low::numeric)
                   THEN 'high is below open, close or low'
               WHEN s.low::numeric > least(s.open::numeric, s.close::numeric) THEN 'low is above open or close'
               WHEN NOT candles_is_open_time(s.open_time_ms, t.seconds, t.months, t.utc_offset_hours, t.anchor)
                   THEN 'open time is not on a ' || t.code || ' boundary'
           END AS reason
    FROM candle_staging s
    LEFT JOIN candles_instrument i ON i.inst_id = s.inst_id
    LEFT JOIN candles_timeframe t ON t.code = s.bar
),
merged AS (
    INSERT INTO candles_candle AS c (
        instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote,
        confirmed, source, version, updated_at
    )
    SELECT DISTINCT ON (instrument_id, timeframe_id, open_time_ms)
           instrument_id, timeframe_id, timestamptz 'epoch' + open_time_ms * interval '1 millisecond',
           open::numeric, high::numeric, low::numeric, close::numeric,
           vol::numeric, vol_ccy::numeric, vol_ccy_quote::numeric,
           confirmed, source, version, now()
    FROM checked
    WHERE reason IS NULL AND (confirmed OR source = 'ws')
    ORDER BY instrument_id, timeframe_id, open_time_ms, confirmed DESC, version DESC
    ON CONFLICT (instrument_id, timeframe_id, open_time) DO UPDATE SET
        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
        vol = EXCLUDED.vol, vol_ccy = EXCLUDED.vol_ccy, vol_ccy_quote = EXCLUDED.vol_ccy_quote,
        confirmed = EXCLUDED.confirmed, source = EXCLUDED.source, version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at
    WHERE EXCLUDED.version > c.version AND (EXCLUDED.confirmed OR NOT c.confirmed)
    RETURNING (xmax = 0) AS inserted
)
SELECT
    (SELECT count(*) FILTER (WHERE inserted) FROM merged),
    (SELECT count(*) FILTER (WHERE NOT inserted) FROM merged),
    (SELECT count(*) FROM checked WHERE reason IS NULL),
    (SELECT count(*) FROM checked WHERE reason IS NULL AND NOT confirmed AND source = 'rest'),
    (SELECT coalesce(json_agg(json_build_array(seq, reason) ORDER BY seq), '[]') FROM checked
     WHERE reason IS NOT NULL)
"""


def candles_upsert(*, rows: Sequence[CandleRow]) -> UpsertResult:
    """Write a batch of candles in one transaction; see the module docstring for the rules.

    Invalid rows come back in `result.rejected` (and are logged); database errors propagate and roll the
    whole batch back, so a caller that keeps the batch on failure loses nothing.
    """
    result = UpsertResult(received=len(rows))
    if not rows:
        return result
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CREATE_STAGING)
        with cursor.copy(_COPY_STAGING) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(_MERGE)
        inserted, updated, valid, skipped_open_rest, rejected = cursor.fetchone()
    result.inserted = inserted
    result.updated = updated
    result.skipped_open_rest = skipped_open_rest
    result.unchanged = valid - skipped_open_rest - inserted - updated
    result.rejected = [RejectedRow(index, rows[index], reason) for index, reason in rejected]
    for item in result.rejected[:20]:
        logger.warning("candle rejected: %s", item)
    if len(result.rejected) > 20:
        logger.warning("candle batch: %d more rows rejected", len(result.rejected) - 20)
    return result


# --- reads --------------------------------------------------------------------------------------


class CandleOut(NamedTuple):
    open_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    vol: Decimal
    vol_ccy: Decimal
    vol_ccy_quote: Decimal | None
    confirmed: bool
    source: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CandlePage:
    candles: list[CandleOut]
    # Opaque; pass back as `cursor` for the next page. None on the last page.
    next_cursor: str | None


class InvalidCursor(ValueError):
    pass


def _encode_cursor(open_time: datetime, descending: bool) -> str:
    raw = f"{'d' if descending else 'a'}{datetime_to_ms(open_time)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, descending: bool) -> datetime:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, ms = raw[0], int(raw[1:])
    except (ValueError, IndexError, UnicodeDecodeError):
        raise InvalidCursor(f"cursor {cursor!r} is not one this server issued") from None
    if direction != ("d" if descending else "a"):
        raise InvalidCursor("cursor was issued for the other sort order")
    return ms_to_datetime(ms)


_LIST_COLUMNS = (
    "open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, source, updated_at"
)


def candle_list(
    *,
    instrument_id: int,
    timeframe_id: int,
    start: datetime | None = None,
    end: datetime | None = None,
    confirmed: bool | None = None,
    descending: bool = False,
    limit: int = 100,
    cursor: str | None = None,
) -> CandlePage:
    """Candles of one series with start ≤ open time ≤ end, keyset-paginated by open time."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    where = ["instrument_id = %s", "timeframe_id = %s"]
    params: list[object] = [instrument_id, timeframe_id]
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
    sql = (
        f"SELECT {_LIST_COLUMNS} FROM candles_candle WHERE {' AND '.join(where)} "
        f"ORDER BY open_time {order} LIMIT %s"
    )
    params.append(limit + 1)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = [CandleOut(*r) for r in cur.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1].open_time, descending) if more else None
    return CandlePage(candles=rows, next_cursor=next_cursor)


# --- expected open times and gaps ------------------------------------------------------------------


def expected_open_times(timeframe: Timeframe, start: datetime, end: datetime) -> list[datetime]:
    """Every open time of `timeframe` in [start, end], knowing UTC+8 alignment and calendar months."""
    spec = timeframe.spec
    return [ms_to_datetime(ms) for ms in spec.open_times(datetime_to_ms(start), datetime_to_ms(end))]


class MissingRange(NamedTuple):
    start: datetime  # first missing open time
    end: datetime  # last missing open time (inclusive)
    count: int


_FIXED_GAPS = """
WITH expected AS (
    SELECT g AS open_time, n
    FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, %(step)s * interval '1 second')
         WITH ORDINALITY AS e(g, n)
), missing AS (
    SELECT open_time, n - row_number() OVER (ORDER BY n) AS island
    FROM expected e
    WHERE NOT EXISTS (
        SELECT 1 FROM candles_candle c
        WHERE c.instrument_id = %(instrument)s AND c.timeframe_id = %(timeframe)s AND c.open_time = e.open_time
    )
)
SELECT min(open_time), max(open_time), count(*) FROM missing GROUP BY island ORDER BY 1
"""

_LISTED_GAPS = """
WITH expected AS (
    SELECT g AS open_time, n FROM unnest(%(times)s::timestamptz[]) WITH ORDINALITY AS e(g, n)
), missing AS (
    SELECT open_time, n - row_number() OVER (ORDER BY n) AS island
    FROM expected e
    WHERE NOT EXISTS (
        SELECT 1 FROM candles_candle c
        WHERE c.instrument_id = %(instrument)s AND c.timeframe_id = %(timeframe)s AND c.open_time = e.open_time
    )
)
SELECT min(open_time), max(open_time), count(*) FROM missing GROUP BY island ORDER BY 1
"""


def candle_missing_ranges(
    *, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> list[MissingRange]:
    """Runs of expected open times in [start, end] that have no stored candle, oldest first."""
    spec = timeframe.spec
    first_ms = spec.ceil(datetime_to_ms(start))
    last_ms = spec.floor(datetime_to_ms(end))
    if first_ms > last_ms:
        return []
    params: dict[str, object] = {"instrument": instrument_id, "timeframe": timeframe.pk}
    if timeframe.is_calendar:
        sql = _LISTED_GAPS
        params["times"] = [ms_to_datetime(ms) for ms in spec.open_times(first_ms, last_ms)]
    else:
        sql = _FIXED_GAPS
        params.update(first=ms_to_datetime(first_ms), last=ms_to_datetime(last_ms), step=timeframe.seconds)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [MissingRange(*row) for row in cur.fetchall()]
