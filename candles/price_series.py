"""Which instrument row serves a (symbol, price kind, bar): the one answer the REST reads and the stream share.

docs/price-kinds.md: a series is an Instrument row of one price kind (trade, mark, index) and a bar.
"""

from __future__ import annotations

from collections.abc import Iterable

from candles.models import MARK_PRICE_TYPES, Instrument, PriceKind

# Bars mark-price and index candles do not come in: OKX's start at 1m.
TRADE_ONLY_BARS = frozenset({"1s"})


class PriceSeriesError(ValueError):
    """Why a (symbol, price, bar) names no series; `code` is the API's error code, `not_found` its 404 kind."""

    def __init__(self, code: str, message: str, details: dict, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.details = details
        self.not_found = not_found


def price_bars_check(price: str, bars: Iterable[str]) -> None:
    """PriceSeriesError INVALID_TIMEFRAMES when `price` candles do not come in some of `bars` (1s: trade only)."""
    refused = [bar for bar in dict.fromkeys(bars) if bar in TRADE_ONLY_BARS] if price != PriceKind.TRADE else []
    if refused:
        raise PriceSeriesError("INVALID_TIMEFRAMES", f"OKX has no {', '.join(refused)} {price} candles: mark-price "
                               "and index candles start at 1m.", {"invalid_timeframes": refused, "price": price})


def price_series_id(symbol: str, price: str, bar_source: str) -> int:
    """The id of the row whose `price` candles `symbol` has, for a bar stored as (or built from) `bar_source`.

    PriceSeriesError: INVALID_TIMEFRAMES for 1s with mark or index; INVALID_PRICE when the symbol exists but
    cannot have that price's candles (an instrument id with index, a spot pair with mark); SYMBOL_NOT_FOUND
    (not_found) when nothing of that name, or no such series yet, exists.
    """
    details = {"symbol": symbol, "price": price}
    price_bars_check(price, [bar_source])
    rows = dict(Instrument.objects.filter(inst_id=symbol).values_list("price", "id"))
    if price in rows:
        return rows[price]
    if not rows or price == PriceKind.TRADE:
        raise PriceSeriesError("SYMBOL_NOT_FOUND", f"No instrument {symbol!r}; symbols are OKX instrument ids, "
                               "exact (BTC-USDT).", {"symbol": symbol}, not_found=True)
    trade_type = Instrument.objects.filter(inst_id=symbol, price=PriceKind.TRADE).values_list(
        "inst_type", flat=True).first()
    if price == PriceKind.INDEX:
        reason = (f"{symbol!r} is an instrument, not an index: index ids are underlyings such as BTC-USD "
                  "(GET /api/v1/instruments?type=INDEX lists them).")
    elif trade_type not in MARK_PRICE_TYPES:
        reason = f"{symbol!r} is {trade_type or 'an index'}: OKX publishes mark prices for SWAP, FUTURES and OPTION."
    else:
        raise PriceSeriesError("SYMBOL_NOT_FOUND", f"No mark-price series for {symbol!r} is known yet (it appears "
                               "with the next instrument sync).", details, not_found=True)
    raise PriceSeriesError("INVALID_PRICE", reason, details)
