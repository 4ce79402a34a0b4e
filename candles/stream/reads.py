"""What the stream reads from the database (run in a worker thread by the consumer): the series a client names,
and its candles from an open time on, as /data serves them."""

from __future__ import annotations

from dataclasses import dataclass

from candles.bars import BarSpec, ms_to_datetime
from candles.candle_shape import candle_dicts
from candles.derived import DerivedBar, NotDerivable, derived_list_text, resolve
from candles.models import Timeframe
from candles.price_series import PriceSeriesError, price_series_id
from candles.reads import candle_newest_ms, candle_versions_text
from candles.stream.protocol import INVALID_TIMEFRAMES, ProtocolError, StreamArg


@dataclass(frozen=True, slots=True)
class Series:
    symbol: str
    timeframe: str
    instrument_id: int
    source_id: int  # the stored bar the candles come from: the bar itself, or what a derived bar is built from
    spec: BarSpec  # the served bar's open-time arithmetic
    derived: DerivedBar | None

    @property
    def source_key(self) -> tuple[int, int]:
        """The key of the feed rows that change this series."""
        return self.instrument_id, self.source_id


def resolve_series(arg: StreamArg) -> Series:
    """The series an arg names; ProtocolError with the REST API's code when the symbol or bar does not exist, or the
    price kind does not apply (as /data's price parameter: INVALID_PRICE, mark and index from 1m)."""
    try:
        derived = resolve(arg.timeframe)
    except NotDerivable as exc:
        raise ProtocolError(INVALID_TIMEFRAMES, str(exc), arg.echo()) from None
    try:
        instrument_id = price_series_id(arg.symbol, arg.price, derived.source if derived else arg.timeframe)
    except PriceSeriesError as exc:
        raise ProtocolError(exc.code, str(exc), arg.echo()) from None
    if derived is not None:
        return Series(arg.symbol, arg.timeframe, instrument_id, derived.source_id, derived.spec, derived)
    timeframe = Timeframe.objects.get(code=arg.timeframe)
    return Series(arg.symbol, arg.timeframe, instrument_id, timeframe.pk, timeframe.spec, None)


def newest_open_ms(series: Series) -> int | None:
    """Open time of the series' newest candle (for a derived bar, the bucket of its newest source candle)."""
    newest = candle_newest_ms(instrument_id=series.instrument_id, timeframe_id=series.source_id)
    if newest is None or series.derived is None:
        return newest
    return series.spec.floor(newest)


@dataclass(frozen=True, slots=True)
class Page:
    candles: list[dict]  # in /data's shape, ascending
    keys: list  # per candle: its version (stored bars) or its whole content (derived bars), for de-duplication
    open_times: list[int]
    confirmed: list[bool]
    next_ms: int | None  # where the following page starts; None: this page reached the end


def read_page(series: Series, start_ms: int, limit: int, end_ms: int | None = None) -> Page:
    """Up to `limit` candles with start_ms ≤ open time (≤ end_ms), ascending."""
    if series.derived is None:
        rows = candle_versions_text(instrument_id=series.instrument_id, timeframe_id=series.source_id,
                                    start_ms=start_ms, limit=limit)
        if end_ms is not None:
            rows = [row for row in rows if row[1] <= end_ms]
        candles = candle_dicts(row[:10] for row in rows)
        more = len(rows) == limit and (end_ms is None or rows[-1][1] < end_ms)
        return Page(candles, [row[10] for row in rows], [row[1] for row in rows], [row[9] for row in rows],
                    rows[-1][1] + 1 if more else None)
    page = derived_list_text(bar=series.derived, instrument_id=series.instrument_id, start=ms_to_datetime(start_ms),
                             end=None if end_ms is None else ms_to_datetime(end_ms), limit=limit)
    candles = candle_dicts(page.candles)
    for candle, (present, expected) in zip(candles, page.coverage, strict=True):
        candle["constituents"] = present
        candle["expected"] = expected
    keys = [tuple(candle.values()) for candle in candles]
    next_ms = page.candles[-1][1] + 1 if page.next_cursor is not None and page.candles else None
    return Page(candles, keys, [row[1] for row in page.candles], [row[9] for row in page.candles], next_ms)


def feed_candle(row: list) -> dict:
    """A feed row (candles/stream/feed.py) in /data's shape."""
    _, _, ms, iso, o, h, lo, c, v, vc, vq, ok, _ = row
    return {"timestamp": iso, "open_time_ms": ms, "open": o, "high": h, "low": lo, "close": c, "volume": v,
            "volume_currency": vc, "volume_quote": vq, "confirm": ok}
