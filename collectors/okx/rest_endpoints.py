"""OKX's REST endpoints for candles, indices and instruments, with the rate budget OKX keeps for each, and what
each serves: which bars, how far back, which error codes are final and which a retry may fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.okx.protocol import INDEX, MARK, PRICE_KINDS, TRADE


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    limit: int  # requests per period, per IP
    period_s: float
    max_rows: int | None = None  # OKX's cap on `limit` where a page must not ask for more

    @property
    def budget(self) -> str:
        """The rate limiter's key for this endpoint's requests: OKX keeps one budget per endpoint."""
        return self.path


CANDLES = Endpoint("/api/v5/market/candles", 40, 2.0)
HISTORY_CANDLES = Endpoint("/api/v5/market/history-candles", 20, 2.0)
# Mark-price and index candles: six-field rows, at most 100 a page, budgets apart from the trade candles'.
MARK_PRICE_CANDLES = Endpoint("/api/v5/market/mark-price-candles", 20, 2.0, max_rows=100)
HISTORY_MARK_PRICE_CANDLES = Endpoint("/api/v5/market/history-mark-price-candles", 20, 2.0, max_rows=100)
INDEX_CANDLES = Endpoint("/api/v5/market/index-candles", 20, 2.0, max_rows=100)
HISTORY_INDEX_CANDLES = Endpoint("/api/v5/market/history-index-candles", 10, 2.0, max_rows=100)
# The list of indices (`quoteCcy` USD, USDT, USDC or BTC).
INDEX_TICKERS = Endpoint("/api/v5/market/index-tickers", 20, 2.0)
# OKX counts this budget per instrument type, so the limiter key carries the type.
INSTRUMENTS = Endpoint("/api/v5/public/instruments", 20, 2.0)

# (latest candles, older candles) by price kind.
CANDLE_ENDPOINTS: dict[str, tuple[Endpoint, Endpoint]] = {
    TRADE: (CANDLES, HISTORY_CANDLES),
    MARK: (MARK_PRICE_CANDLES, HISTORY_MARK_PRICE_CANDLES),
    INDEX: (INDEX_CANDLES, HISTORY_INDEX_CANDLES),
}
# Every candle endpoint's rate budget, by a short name (as an operator would look for it).
CANDLE_BUDGETS: dict[str, Endpoint] = {endpoint.path.rsplit("/", 1)[1]: endpoint
                                       for pair in CANDLE_ENDPOINTS.values() for endpoint in pair}


def candle_endpoint(price: str = TRADE, *, history: bool = False) -> Endpoint:
    """The endpoint serving `price` candles: the latest 1,440, or with `history` the older ones."""
    try:
        recent, older = CANDLE_ENDPOINTS[price]
    except KeyError:
        raise ValueError(f"price must be one of {', '.join(PRICE_KINDS)}, not {price!r}") from None
    return older if history else recent

# /candles serves only the latest 1,440 candles (the open one included).
RECENT_CANDLES = 1440
# Candles of margin below that depth, so clock skew or a lagging cache never leaves a hole at the edge.
RECENT_MARGIN = 10

_SECOND, _MINUTE, _HOUR, _DAY = 1000, 60_000, 3_600_000, 86_400_000
# Shortest length of each REST bar in ms. Calendar bars take their shortest month or quarter, so the
# /candles horizon computed from them is never further back than OKX's.
BAR_MS: dict[str, int] = {
    "1s": _SECOND, "1m": _MINUTE, "3m": 3 * _MINUTE, "5m": 5 * _MINUTE, "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE, "1H": _HOUR, "2H": 2 * _HOUR, "4H": 4 * _HOUR,
    "6H": 6 * _HOUR, "12H": 12 * _HOUR, "1D": _DAY, "2D": 2 * _DAY, "3D": 3 * _DAY, "1W": 7 * _DAY,
    "1M": 28 * _DAY, "3M": 89 * _DAY,
    "6Hutc": 6 * _HOUR, "12Hutc": 12 * _HOUR, "1Dutc": _DAY, "2Dutc": 2 * _DAY, "3Dutc": 3 * _DAY,
    "1Wutc": 7 * _DAY, "1Mutc": 28 * _DAY, "3Mutc": 89 * _DAY,
}
WEBSOCKET_ONLY_BARS = frozenset({"5D", "5Dutc"})
HISTORY_ONLY_BARS = frozenset({"1s"})
# Bars the recent mark-price and index endpoints serve but their history endpoints do not (the documented
# history bars stop at 1M/1Mutc). /candles holds 1,440 of them, centuries, so the walk never needs history.
RECENT_ONLY_PRICE_BARS = frozenset({"3M", "3Mutc"})

PERMANENT_CODES = frozenset({"51000", "51001"})  # bad parameter, instrument doesn't exist
RATE_LIMIT_CODE = "50011"
# Rate limited, busy, unavailable, system error.
TRANSIENT_CODES = frozenset({RATE_LIMIT_CODE, "50013", "50001", "50026"})
