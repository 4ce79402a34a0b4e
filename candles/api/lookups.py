"""Finding the instrument and bar a request names, with the API's error codes.

One rule for unknown names: named in the path, the resource is not there (404); named in a query or body, the
request is wrong (400). Unknown symbols are SYMBOL_NOT_FOUND, unknown bars INVALID_TIMEFRAMES (the code of
POST /subscribe too), so a client handles each with one code. Bars match exactly: `1m` is never `1M`.
"""

from __future__ import annotations

from candles.api.params import is_symbol, is_timeframe
from candles.models import MARK_PRICE_TYPES, Instrument, PriceKind, Timeframe
from okxproject.api_errors import ApiError


def symbol_not_found(symbol: str) -> ApiError:
    return ApiError(f"No instrument {symbol!r}; symbols are OKX instrument ids, exact (BTC-USDT).",
                    code="SYMBOL_NOT_FOUND", status=404, details={"symbol": symbol})


def unknown_timeframe(code: str, *, status: int) -> ApiError:
    return ApiError(f"No timeframe {code!r}; bars are case-sensitive (1m is a minute, 1M a month).",
                    code="INVALID_TIMEFRAMES", status=status, details={"invalid_timeframes": [code]})


def instrument_or_404(symbol: str) -> Instrument:
    try:
        if is_symbol(symbol):
            return Instrument.objects.get(inst_id=symbol, price=PriceKind.TRADE)
    except Instrument.DoesNotExist:
        pass
    raise symbol_not_found(symbol)


def timeframe_or_error(code: str, *, status: int = 404) -> Timeframe:
    """Any bar that exists, active or not: candles of a bar no longer collected can still be read."""
    try:
        if is_timeframe(code):
            return Timeframe.objects.get(code=code)
    except Timeframe.DoesNotExist:
        pass
    raise unknown_timeframe(code, status=status)


PRICES = ("trade", "mark", "index")
# Bars that mark-price and index candles exist in: OKX's from 1m up (no 1s).
_NO_MARK_OR_INDEX_BARS = frozenset({"1s"})


def priced_series(symbol: str, price: str, bar_source: str) -> int | None:
    """The instrument row whose `price` candles the request reads: None for trade (the reads resolve the symbol
    themselves, in the same statement); the row's id for mark and index.

    400 INVALID_PRICE when the symbol exists but cannot have that price's candles (an instrument id with
    price=index, a spot pair with price=mark), or the bar is below OKX's 1m for those kinds; 404 SYMBOL_NOT_FOUND
    when nothing of that name exists.
    """
    if price == PriceKind.TRADE:
        return None
    if bar_source in _NO_MARK_OR_INDEX_BARS:
        raise ApiError(f"OKX has no {bar_source} {price} candles: mark-price and index candles start at 1m.",
                       code="INVALID_TIMEFRAMES", status=400,
                       details={"invalid_timeframes": [bar_source], "price": price})
    rows = dict(Instrument.objects.filter(inst_id=symbol).values_list("price", "id"))
    if price in rows:
        return rows[price]
    if not rows:
        raise symbol_not_found(symbol)
    trade_type = Instrument.objects.filter(inst_id=symbol, price=PriceKind.TRADE).values_list(
        "inst_type", flat=True).first()
    if price == PriceKind.INDEX:
        reason = (f"{symbol!r} is an instrument, not an index: index ids are underlyings such as BTC-USD "
                  "(GET /api/v1/instruments?type=INDEX lists them).")
    elif trade_type not in MARK_PRICE_TYPES:
        reason = f"{symbol!r} is {trade_type or 'an index'}: OKX publishes mark prices for SWAP, FUTURES and OPTION."
    else:
        raise ApiError(f"No mark-price series for {symbol!r} is known yet (it appears with the next instrument "
                       "sync).", code="SYMBOL_NOT_FOUND", status=404, details={"symbol": symbol, "price": price})
    raise ApiError(reason, code="INVALID_PRICE", status=400, details={"symbol": symbol, "price": price})
