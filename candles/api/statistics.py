"""Figures over stored candles: per-period statistics of one series, and the market overview.

Service functions only (SQL and exact arithmetic, no HTTP). Sums and extremes are computed by PostgreSQL on
`numeric`, ratios here with Decimal in a wide context; nothing passes through float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Context, Decimal

from django.db import connection

from candles.bars import datetime_to_ms
from candles.models import Instrument, InstrumentType, Timeframe

PERIODS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}

# Wide enough that sums of OKX volumes (≈ 20 significant digits) divide without losing digits we print.
_WIDE = Context(prec=40)
PERCENT = Decimal("0.0001")
COMPLETENESS = Decimal("0.01")
# Prices of some tokens are 1e-8 and smaller: VWAP keeps significant digits, not decimal places.
VWAP_DIGITS = 18
_SPOT_LIKE = {InstrumentType.SPOT, InstrumentType.MARGIN}


def plain(value: Decimal | None) -> str | None:
    """Exact digits in plain notation (str() would write 1E-8)."""
    return None if value is None else format(value, "f")


def percent_change(first: Decimal | None, last: Decimal | None) -> Decimal | None:
    if first is None or last is None or first == 0:
        return None
    return _WIDE.multiply(_WIDE.divide(_WIDE.subtract(last, first), first), Decimal(100)).quantize(PERCENT)


def significant(value: Decimal, digits: int) -> Decimal:
    """Rounded to `digits` significant digits, without trailing zeros (PostgreSQL's division pads them)."""
    return Context(prec=digits).plus(value).normalize()


_SERIES = """
WITH r AS MATERIALIZED (
    SELECT open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote FROM candles_candle
    WHERE instrument_id = %(instrument)s AND timeframe_id = %(timeframe)s
      AND open_time >= %(start)s AND open_time <= %(end)s
)
SELECT (SELECT open FROM r ORDER BY open_time ASC LIMIT 1),
       (SELECT close FROM r ORDER BY open_time DESC LIMIT 1),
       max(high), min(low), sum(vol), sum(vol_ccy),
       CASE WHEN count(*) = count(vol_ccy_quote) THEN sum(vol_ccy_quote) END,
       sum((high + low + close) / 3 * vol),
       count(*)
FROM r
"""


@dataclass(frozen=True, slots=True)
class SeriesStatistics:
    open: Decimal | None
    close: Decimal | None
    change: Decimal | None
    change_percent: Decimal | None
    high: Decimal | None
    low: Decimal | None
    volume: Decimal | None
    volume_currency: Decimal | None
    volume_quote: Decimal | None
    vwap: Decimal | None
    vwap_method: str | None
    candle_count: int
    expected_candles: int
    completeness_percent: Decimal | None

    def as_json(self) -> dict[str, object]:
        return {
            "open": plain(self.open), "close": plain(self.close), "change": plain(self.change),
            "change_percent": plain(self.change_percent), "high": plain(self.high), "low": plain(self.low),
            "volume": plain(self.volume), "volume_currency": plain(self.volume_currency),
            "volume_quote": plain(self.volume_quote), "vwap": plain(self.vwap), "vwap_method": self.vwap_method,
            "candle_count": self.candle_count, "expected_candles": self.expected_candles,
            "completeness_percent": plain(self.completeness_percent),
        }


def expected_candle_count(timeframe: Timeframe, start: datetime, end: datetime) -> int:
    """How many open times of the bar fall in [start, end] (without listing them: 30 days of 1s is 2.6 M)."""
    spec = timeframe.spec
    first, last = spec.ceil(datetime_to_ms(start)), spec.floor(datetime_to_ms(end))
    return spec.count(first, last)


def _vwap(instrument: Instrument, volume: Decimal | None, volume_currency: Decimal | None,
          volume_quote: Decimal | None, typical_sum: Decimal | None) -> tuple[Decimal | None, str | None]:
    # Spot: vol is base, volCcy quote. Derivatives: vol is contracts, volCcy base, volCcyQuote quote.
    if instrument.inst_type in _SPOT_LIKE:
        base, quote = volume, volume_currency
    else:
        base, quote = volume_currency, volume_quote
    if base and quote is not None:
        return significant(_WIDE.divide(quote, base), VWAP_DIGITS), "quote_volume"
    if volume and typical_sum is not None:
        return significant(_WIDE.divide(typical_sum, volume), VWAP_DIGITS), "typical_price"
    return None, None


def series_statistics(*, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime
                      ) -> SeriesStatistics:
    """Open, close, change, extremes, volumes, VWAP and completeness of one series over [start, end]."""
    with connection.cursor() as cursor:
        cursor.execute(_SERIES, {"instrument": instrument.pk, "timeframe": timeframe.pk, "start": start,
                                 "end": end})
        first, last, high, low, volume, volume_currency, volume_quote, typical_sum, count = cursor.fetchone()
    listed_from = max(start, instrument.listed_at) if instrument.listed_at else start
    expected = expected_candle_count(timeframe, listed_from, end)
    vwap, method = _vwap(instrument, volume, volume_currency, volume_quote, typical_sum)
    return SeriesStatistics(
        open=first, close=last,
        change=None if first is None else _WIDE.subtract(last, first),
        change_percent=percent_change(first, last),
        high=high, low=low, volume=volume, volume_currency=volume_currency, volume_quote=volume_quote,
        vwap=vwap, vwap_method=method, candle_count=count, expected_candles=expected,
        completeness_percent=(_WIDE.divide(Decimal(count * 100), Decimal(expected)).quantize(COMPLETENESS)
                              if expected else None),
    )


# The bar each subscribed symbol is summarised from: its shortest fixed-length bar of at least a minute
# (1440 candles a day), else its shortest bar.
_OVERVIEW = """
WITH pick AS (
    SELECT DISTINCT ON (s.instrument_id) s.instrument_id, s.timeframe_id, i.inst_id, t.code
    FROM candles_subscription s
    JOIN candles_instrument i ON i.id = s.instrument_id
    JOIN candles_timeframe t ON t.id = s.timeframe_id
    WHERE s.is_active
    ORDER BY s.instrument_id, t.months > 0, t.seconds < 60, t.seconds, t.months
)
SELECT p.inst_id, p.code, coalesce(recent.close, older.close), coalesce(recent.open_time, older.open_time),
       day.open, day.high, day.low, day.vol, day.quote
FROM pick p
-- The last candle is looked for in the last day first: that bound prunes every older partition of the table
-- when the statement is planned, where the bar alone (a column here, not a constant) prunes nothing until it
-- runs, and then each series would open an index scan on every leaf of its bar.
LEFT JOIN LATERAL (
    SELECT close, open_time FROM candles_candle c
    WHERE c.instrument_id = p.instrument_id AND c.timeframe_id = p.timeframe_id AND c.open_time >= %(since)s
    ORDER BY open_time DESC LIMIT 1
) recent ON true
LEFT JOIN LATERAL (
    SELECT close, open_time FROM candles_candle c
    WHERE c.instrument_id = p.instrument_id AND c.timeframe_id = p.timeframe_id AND c.open_time < %(since)s
    ORDER BY open_time DESC LIMIT 1
) older ON recent.open_time IS NULL
LEFT JOIN LATERAL (
    SELECT (SELECT open FROM candles_candle c
            WHERE c.instrument_id = p.instrument_id AND c.timeframe_id = p.timeframe_id AND c.open_time >= %(since)s
            ORDER BY open_time ASC LIMIT 1) AS open,
           max(high) AS high, min(low) AS low, sum(vol) AS vol,
           CASE WHEN count(*) = count(vol_ccy_quote) THEN sum(vol_ccy_quote) END AS quote
    FROM candles_candle c
    WHERE c.instrument_id = p.instrument_id AND c.timeframe_id = p.timeframe_id AND c.open_time >= %(since)s
) day ON true
ORDER BY p.inst_id
"""


def market_overview(*, now: datetime) -> list[dict[str, object]]:
    """One line per symbol with an active subscription: last price, 24 h open/change/high/low/volumes."""
    with connection.cursor() as cursor:
        cursor.execute(_OVERVIEW, {"since": now - timedelta(hours=24)})
        rows = cursor.fetchall()
    return [
        {
            "symbol": symbol, "timeframe": code, "last_price": plain(last), "last_time": last_time,
            "open_24h": plain(day_open), "change_24h_percent": plain(percent_change(day_open, last)),
            "high_24h": plain(high), "low_24h": plain(low), "volume_24h": plain(volume),
            "volume_quote_24h": plain(quote),
        }
        for symbol, code, last, last_time, day_open, high, low, volume, quote in rows
    ]
