"""Finding the instrument and bar a request names, with the API's error codes.

One rule for unknown names: named in the path, the resource is not there (404); named in a query or body, the
request is wrong (400). Unknown symbols are SYMBOL_NOT_FOUND, unknown bars INVALID_TIMEFRAMES (the code of
POST /subscribe too), so a client handles each with one code. Bars match exactly: `1m` is never `1M`.
"""

from __future__ import annotations

from candles.api.params import is_symbol, is_timeframe
from candles.models import Instrument, PriceKind, Timeframe
from candles.price_series import PriceSeriesError, price_series_id
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


def priced_series(symbol: str, price: str, bar_source: str) -> int | None:
    """The instrument row whose `price` candles the request reads: None for trade (the reads resolve the symbol
    themselves, in the same statement); the row's id for mark and index. The API's errors of
    `candles.price_series.price_series_id`."""
    if price == PriceKind.TRADE:
        return None
    try:
        return price_series_id(symbol, price, bar_source)
    except PriceSeriesError as exc:
        raise ApiError(str(exc), code=exc.code, status=404 if exc.not_found else 400, details=exc.details) from None
