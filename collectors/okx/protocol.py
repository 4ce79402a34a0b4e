"""OKX's candle vocabulary, shared by the WebSocket and REST code: the price kinds and their channel names, the
`Channel` (instrument, bar, price kind) and `ProtocolError`, which every parser raises for what is not valid OKX.
"""

from __future__ import annotations

# Price kinds: what a candle's prices are the prices of.
TRADE = "trade"  # trades on the instrument itself
MARK = "mark"  # the mark price of a derivative (SWAP, FUTURES, OPTION)
INDEX = "index"  # an index (instId such as BTC-USD, a derivative's `uly`)
PRICE_KINDS = (TRADE, MARK, INDEX)

CANDLE_PREFIX = "candle"
MARK_PRICE_CANDLE_PREFIX = "mark-price-candle"
INDEX_CANDLE_PREFIX = "index-candle"
# Channel name = prefix + bar.
CHANNEL_PREFIXES: dict[str, str] = {TRADE: CANDLE_PREFIX, MARK: MARK_PRICE_CANDLE_PREFIX, INDEX: INDEX_CANDLE_PREFIX}
# Bars only trade candles have: OKX's mark-price and index channels start at 1m.
TRADE_ONLY_BARS = frozenset({"1s"})


class Channel(tuple):
    """One candle channel: an instrument, a bar (case-sensitive, verbatim: `1m` ≠ `1M`) and a price kind.

    `Channel(inst_id, bar, price="trade")`; read it by name (`.inst_id`, `.bar`, `.price`). A trade channel is
    the pair `(inst_id, bar)`, as before price kinds existed: equal to that plain tuple, with the same hash,
    and it unpacks into two, so code keyed by `(inst_id, bar)` pairs keeps working for trade candles. A mark or
    index channel is the triple `(inst_id, bar, price)`, so it is never equal to the trade channel of the same
    instrument and bar.
    """

    __slots__ = ()

    def __new__(cls, inst_id: str, bar: str, price: str = TRADE) -> Channel:
        if price == TRADE:
            return tuple.__new__(cls, (inst_id, bar))
        if price not in PRICE_KINDS:
            raise ValueError(f"price must be one of {', '.join(PRICE_KINDS)}, not {price!r}")
        return tuple.__new__(cls, (inst_id, bar, price))

    def __getnewargs__(self) -> tuple[str, ...]:
        return tuple(self)

    @property
    def inst_id(self) -> str:
        return self[0]

    @property
    def bar(self) -> str:
        return self[1]

    @property
    def price(self) -> str:
        return self[2] if len(self) > 2 else TRADE

    @property
    def name(self) -> str:
        return CHANNEL_PREFIXES[self.price] + self.bar

    def arg(self) -> dict[str, str]:
        return {"channel": self.name, "instId": self.inst_id}

    def __repr__(self) -> str:
        return f"Channel(inst_id={self.inst_id!r}, bar={self.bar!r}, price={self.price!r})"

    def __str__(self) -> str:
        return f"{self.name}:{self.inst_id}"


def check_subscribable(channel: Channel) -> None:
    """Raise ValueError for a channel OKX has no such channel for (a 1s bar on mark-price or index candles)."""
    if channel.bar in TRADE_ONLY_BARS and channel.price != TRADE:
        raise ValueError(f"{channel}: {channel.bar} candles exist for trade prices only, not {channel.price}")



class ProtocolError(ValueError):
    """A frame that is not valid OKX. Carries the raw frame so it can go to a dead-letter list."""

    def __init__(self, reason: str, raw: str | bytes):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw

