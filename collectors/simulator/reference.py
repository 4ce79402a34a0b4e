"""Mark-price and index series beside the trade candles: what liquidations use, and the spot basket behind it.

Indices are named like OKX's: the `uly` of every swap and future (`BTC-USDT`, `BTC-USD` for inverse futures)
and the base-quote of every spot pair, so `BTC-USDT` is both a spot instId and an index. Pure, no I/O.

- **Index**: the smooth price curve of the base currency (the trade candles' curve without their intra-candle
  noise: a smoothed spot price), times a fixed factor within ±5 bp for quotes other than USDT.
- **Mark** of a swap or future: index × (1 + basis), clamped to ±MARK_BAND of the instrument's trade price at
  the same moment. Futures carry a contango that decays linearly to nothing at expiry; swaps a premium that
  builds up and decays to nothing at each 8-hour funding time.

A candle samples its series at the same moments as a trade candle's sub-steps (open, then each sub-step's end;
the last one is the close), so every version stays inside the final high/low, the last one equals the truth,
and a candle opens where the previous one closed. Quiet instruments have flat marks and indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from .bars import DAY_MS, HONG_KONG_OFFSET_MS, Bar, substeps_of
from .instruments import Instrument, unit

if TYPE_CHECKING:
    from .market import Market

TRADE, MARK, INDEX = "trade", "mark", "index"
PRICE_KINDS = (TRADE, MARK, INDEX)
NO_SECOND_BARS = frozenset({"1s"})  # mark and index candles start at 1m
MARK_BAND = 0.005  # the mark stays within ±0.5 % of the trade price
FUTURES_ANNUAL_BASIS = 0.03  # contango of a future, per year left to expiry
SWAP_PREMIUM_MAX = 0.0006  # a swap's premium peaks between fundings at up to ±6 bp
FUNDING_PERIOD_MS = 8 * 3_600_000
YEAR_MS = 365 * DAY_MS
INDEX_QUOTE_SPREAD = 0.0005  # an index quoted in USD (USDC, ...) sits within ±5 bp of the USDT one
TICKER_STEP_MS = 15 * 60_000  # index-tickers' 24 h high and low sample the index every 15 minutes

RowOf = Callable[[int, int, bool], list[str]]  # (open_ms, substep, confirmed) -> row


@dataclass(frozen=True, slots=True)
class Index:
    inst_id: str  # "BTC-USDT", "BTC-USD"
    base_ccy: str
    quote_ccy: str
    tick_decimals: int
    base_price: float
    list_time_ms: int  # the earliest listing among the instruments it serves
    quiet: bool = False

    @property
    def base_price_ticks(self) -> int:
        return max(1, round(self.base_price * 10**self.tick_decimals))


class RefPath(NamedTuple):
    """Running aggregates after each sub-step j = 1..K (index j-1), in ticks."""

    open: int
    closes: tuple[int, ...]
    highs: tuple[int, ...]
    lows: tuple[int, ...]


def index_id_of(inst: Instrument) -> str:
    """The index an instrument follows: its `uly` (contracts) or its own base-quote (spot)."""
    return f"{inst.base_ccy}-{inst.quote_ccy}"


def has_mark(inst: Instrument) -> bool:
    return inst.is_contract  # SWAP and FUTURES (the simulator lists no options)


def build_indices(instruments: Iterable[Instrument]) -> dict[str, Index]:
    """Every index the instruments name, in the order they first name it."""
    indices: dict[str, Index] = {}
    for inst in instruments:
        index_id = index_id_of(inst)
        known = indices.get(index_id)
        if known is None:
            indices[index_id] = Index(index_id, inst.base_ccy, inst.quote_ccy, inst.tick_decimals, inst.base_price,
                                      inst.list_time_ms, inst.quiet)
        elif inst.list_time_ms < known.list_time_ms:
            indices[index_id] = Index(index_id, known.base_ccy, known.quote_ccy, known.tick_decimals,
                                      known.base_price, inst.list_time_ms, known.quiet)
    return indices


class ReferencePrices:
    """The mark and index series of a market (built lazily, rebuilt when its instruments change)."""

    def __init__(self, market: Market):
        self.market = market
        self._indices: dict[str, Index] | None = None
        size = max(65_536, 4 * len(market.instruments) * len(market.bars))
        self._path = lru_cache(maxsize=size)(self._compute_path)
        self._index_at = lru_cache(maxsize=size)(self._index_ticks)

    @property
    def indices(self) -> dict[str, Index]:
        if self._indices is None:
            self._indices = build_indices(list(self.market.instruments.values()))
        return self._indices

    def invalidate(self) -> None:
        """The instruments changed (a listing): indices are named again, paths computed again."""
        self._indices = None
        self._path.cache_clear()
        self._index_at.cache_clear()

    # --- series -----------------------------------------------------------------------------------

    def series(self, series_id: str, bar_name: str, price: str) -> tuple[Bar, int, RowOf]:
        """(bar, open time of the first candle, row function) of a mark or index series; KeyError if none."""
        if price not in (MARK, INDEX):
            raise ValueError(f"unknown price {price!r}; known: {', '.join(PRICE_KINDS)}")
        bar = self.market.bars.get(bar_name)
        if bar is None or bar_name in NO_SECOND_BARS:
            raise KeyError(f"no {price} candles of bar {bar_name!r}")
        if price == INDEX:
            index = self.indices.get(series_id)
            if index is None:
                raise KeyError(f"unknown index {series_id!r}")
            list_time = index.list_time_ms
        else:
            inst = self.market.instruments.get(series_id)
            if inst is None or not has_mark(inst):
                raise KeyError(f"{series_id!r} is not a swap or future: it has no mark price")
            list_time = inst.list_time_ms

        def row_of(open_ms: int, substep: int, confirmed: bool) -> list[str]:
            return self.row(price, series_id, bar, open_ms, substep, confirmed=confirmed)

        return bar, bar.floor(list_time), row_of

    def row(self, price: str, series_id: str, bar: Bar, open_ms: int, substep: int, *, confirmed: bool) -> list[str]:
        """The six-field row `[ts, o, h, l, c, confirm]` of the candle after `substep` sub-steps."""
        path = self._path(price, series_id, bar.name, open_ms)
        exponent = -self._decimals(price, series_id)
        text = self.market._price_text
        i = substep - 1
        return [
            str(open_ms), text(path.open, exponent), text(path.highs[i], exponent), text(path.lows[i], exponent),
            text(path.closes[i], exponent), "1" if confirmed else "0",
        ]

    def prepare(self, price: str, series_id: str, bar_name: str, open_ms: int) -> None:
        self._path(price, series_id, bar_name, open_ms)

    def _decimals(self, price: str, series_id: str) -> int:
        if price == INDEX:
            return self.indices[series_id].tick_decimals
        return self.market.instruments[series_id].tick_decimals

    def _compute_path(self, price: str, series_id: str, bar_name: str, open_ms: int) -> RefPath:
        bar = self.market.bars[bar_name]
        steps = substeps_of(bar)
        close_ms = bar.next_open(open_ms)
        moments = [open_ms + (close_ms - open_ms) * k // steps for k in range(steps + 1)]
        if price == INDEX:
            samples = [self._index_at(series_id, moment) for moment in moments]
        else:
            inst = self.market.instruments[series_id]
            trade = self.market.path(series_id, bar_name, open_ms)
            trades = (trade.open, *trade.closes)
            samples = [self.mark_ticks(inst, moment, traded) for moment, traded in zip(moments, trades, strict=True)]
        highs, lows = [], []
        high = low = samples[0]
        for sample in samples[1:]:
            high, low = max(high, sample), min(low, sample)
            highs.append(high)
            lows.append(low)
        return RefPath(samples[0], tuple(samples[1:]), tuple(highs), tuple(lows))

    # --- prices at a moment -----------------------------------------------------------------------

    def index_value(self, index: Index, moment_ms: int) -> float:
        """The index at a moment, in its quote currency (not rounded)."""
        if index.quiet:
            return index.base_price
        factor = 1.0
        if index.quote_ccy != "USDT":
            factor += (2 * unit(self.market.seed, "index-quote", index.quote_ccy) - 1) * INDEX_QUOTE_SPREAD
        return index.base_price * self.market.curve_factor(index.base_ccy, moment_ms) * factor

    def _index_ticks(self, index_id: str, moment_ms: int) -> int:
        index = self.indices[index_id]
        if index.quiet:
            return index.base_price_ticks
        return max(1, round(self.index_value(index, moment_ms) * 10**index.tick_decimals))

    def index_ticks(self, index_id: str, moment_ms: int) -> int:
        return self._index_at(index_id, moment_ms)

    def basis(self, inst: Instrument, moment_ms: int) -> float:
        """Relative premium of the mark over the index: a future's decaying contango, a swap's funding premium."""
        if inst.exp_time_ms is not None:
            return FUTURES_ANNUAL_BASIS * max(0, inst.exp_time_ms - moment_ms) / YEAR_MS
        amplitude = (2 * unit(self.market.seed, "premium", inst.inst_id) - 1) * SWAP_PREMIUM_MAX
        return amplitude * math.sin(math.pi * (moment_ms % FUNDING_PERIOD_MS) / FUNDING_PERIOD_MS)

    def mark_ticks(self, inst: Instrument, moment_ms: int, trade_ticks: int) -> int:
        """The mark at a moment when the instrument trades at `trade_ticks`, in its ticks."""
        if inst.quiet:
            return inst.base_price_ticks
        index = self.indices[index_id_of(inst)]
        raw = self.index_value(index, moment_ms) * (1 + self.basis(inst, moment_ms)) * 10**inst.tick_decimals
        clamped = min(max(raw, trade_ticks * (1 - MARK_BAND)), trade_ticks * (1 + MARK_BAND))
        return max(1, round(clamped))

    # --- index tickers ----------------------------------------------------------------------------

    def index_ticker(self, index_id: str, now_ms: int) -> dict[str, str]:
        """A row of /market/index-tickers: the index now, its 24 h high, low and open, its UTC and UTC+8 day opens."""
        index = self.indices[index_id]
        exponent = -index.tick_decimals
        text = self.market._price_text
        at = self.index_ticks
        day_ago = now_ms - DAY_MS
        first_sample = -(-day_ago // TICKER_STEP_MS) * TICKER_STEP_MS
        window = [at(index_id, day_ago), at(index_id, now_ms)]
        window += [at(index_id, moment) for moment in range(first_sample, now_ms, TICKER_STEP_MS)]
        day_utc = now_ms // DAY_MS * DAY_MS
        day_hong_kong = (now_ms + HONG_KONG_OFFSET_MS) // DAY_MS * DAY_MS - HONG_KONG_OFFSET_MS
        # Key order of OKX's documented example.
        return {
            "instId": index_id,
            "idxPx": text(at(index_id, now_ms), exponent),
            "high24h": text(max(window), exponent),
            "sodUtc0": text(at(index_id, day_utc), exponent),
            "open24h": text(window[0], exponent),
            "low24h": text(min(window), exponent),
            "sodUtc8": text(at(index_id, day_hong_kong), exponent),
            "ts": str(now_ms),
        }
