"""The simulated market: every candle of every instrument and bar, derived from the seed. Pure, no I/O.

A candle is a short path of sub-steps drawn from a hash of (seed, instId, bar, open time). The truth is the
aggregate of all sub-steps; the open candle at a moment is the aggregate of the sub-steps begun by then, so
every version stays inside the final high/low, volumes only grow, and the last version equals the truth.
Opens and closes follow a smooth per-currency price curve, so a candle opens where the previous one closed.
Mark-price and index candles (reference.py) derive from the same curve: `price="mark"` or `price="index"` in
`truth`, `truth_range`, `current` and `first_open` selects them.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from .bars import BARS, DAY_MS, Bar, substeps_of
from .decimals import scaled
from .instruments import SWAP_LOT_DECIMALS, Instrument, build_instruments, make_instrument, stable_hash, unit
from .reference import TRADE, Index, ReferencePrices, RowOf

if TYPE_CHECKING:
    from .config import SimulatorConfig

Clock = Callable[[], int]
__all__ = ["CandlePath", "Market", "substeps_of", "wall_clock_ms"]

# (period in ms, relative amplitude) of the waves that make up the price curve.
_WAVES: tuple[tuple[int, float], ...] = (
    (67_000, 0.0004), (431_000, 0.0012), (2_957_000, 0.004), (21_601_000, 0.012), (190_003_000, 0.035),
    (1_300_027_000, 0.08),
)
# Noise of the intra-candle path, relative to price, per square root of the candle's seconds.
_PATH_NOISE = 0.00005
ONE_SECOND_HISTORY_MS = 90 * DAY_MS
PRICE_TEXTS_MAX = 200_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CandlePath(NamedTuple):  # a NamedTuple: built once per candle, 10x cheaper than a frozen dataclass
    """Running aggregates after each sub-step j = 1..K (index j-1). Prices in ticks, volumes in lots."""

    open: int
    closes: tuple[int, ...]
    highs: tuple[int, ...]
    lows: tuple[int, ...]
    vols: tuple[int, ...]
    quote_vols: tuple[int, ...]  # Σ lots × price ticks


class Market:
    """Candles of the configured instruments and bars. `clock` returns epoch ms (tests pass a fake one)."""

    def __init__(self, config: SimulatorConfig, clock: Clock | None = None):
        self.config = config
        self.clock: Clock = clock or wall_clock_ms
        self.seed = config.seed
        list_time = config.list_time_ms
        if list_time is None:
            # Whole UTC days so that the listing moment does not move within a day of runs.
            list_time = (self.clock() - config.history_days * DAY_MS) // DAY_MS * DAY_MS
        self.list_time_ms: int = list_time
        self.instruments: dict[str, Instrument] = build_instruments(
            config.seed, config.instruments, swaps=config.swaps, quiet_fraction=config.quiet_fraction,
            list_time_ms=list_time, futures=config.futures, now_ms=self.clock(),
        )
        # Instruments no longer listed (expired futures, delisted ones): not in /public/instruments, not pushed,
        # refused on subscribe; their candles stay in the truth and on REST.
        self.gone: set[str] = set()
        self._next_expiry = self._earliest_expiry()
        unknown = [name for name in config.bars if name not in BARS]
        if unknown:
            raise ValueError(f"unknown bars {unknown}; known: {list(BARS)}")
        self.bars: dict[str, Bar] = {name: BARS[name] for name in config.bars}
        self._phases: dict[str, tuple[float, ...]] = {}
        # Room for the open and the next candle of every channel, and the REST truth asked for meanwhile.
        self._path = lru_cache(maxsize=max(65_536, 4 * len(self.instruments) * len(self.bars)))(self._compute_path)
        # A candle's close is the next one's open: the same curve point is asked for twice in a row, with
        # every other channel's points in between (two per 1s candle of each instrument each second).
        self._curve = lru_cache(maxsize=max(4_096, 8 * len(self.instruments)))(self._curve_ticks)
        self._lots: dict[str, float] = {}
        self._prices: dict[tuple[int, int], str] = {}
        self.reference = ReferencePrices(self)  # mark-price and index series

    # --- lookup -----------------------------------------------------------------------------------

    def instrument(self, inst_id: str) -> Instrument | None:
        return self.instruments.get(inst_id)

    @property
    def indices(self) -> dict[str, Index]:
        """The indices (index-candle instIds): every contract's `uly` and every spot pair's base-quote."""
        return self.reference.indices

    # --- listings ---------------------------------------------------------------------------------

    def _earliest_expiry(self) -> int | None:
        return min((inst.exp_time_ms for inst in self.instruments.values()
                    if inst.exp_time_ms is not None and inst.inst_id not in self.gone), default=None)

    def gone_at(self, now_ms: int) -> set[str]:
        """The instruments not listed at `now_ms`; futures join it when they expire. Cheap when none is due."""
        if self._next_expiry is not None and now_ms >= self._next_expiry:
            self.gone.update(inst.inst_id for inst in self.instruments.values()
                             if inst.exp_time_ms is not None and inst.exp_time_ms <= now_ms)
            self._next_expiry = self._earliest_expiry()
        return self.gone

    def is_listed(self, inst_id: str, now_ms: int) -> bool:
        return inst_id in self.instruments and inst_id not in self.gone_at(now_ms)

    def list_instrument(
        self, inst_id: str, *, list_time_ms: int | None = None, exp_time_ms: int | None = None, state: str = "live",
    ) -> Instrument:
        """List an instrument now (or at `list_time_ms`); its kind follows its instId (see make_instrument).

        Listing one that is gone lists it again, with its old candles (the market is a function of the seed)."""
        now = self.clock()
        listed = self.instruments.get(inst_id)
        if listed is None or list_time_ms is not None or exp_time_ms is not None:
            # Whole seconds: the first 1s candle is then the one that contains the listing moment exactly.
            listed = make_instrument(self.seed, inst_id, list_time_ms=now // 1000 * 1000 if list_time_ms is None
                                     else list_time_ms, exp_time_ms=exp_time_ms, state=state)
            self.instruments[inst_id] = listed
            self.reference.invalidate()
        self.gone.discard(inst_id)
        self._next_expiry = self._earliest_expiry()
        return listed

    def delist_instrument(self, inst_id: str) -> bool:
        """Stop listing and pushing an instrument (its candles stay in the truth); False if unknown or gone."""
        if inst_id not in self.instruments or inst_id in self.gone:
            return False
        self.gone.add(inst_id)
        self._next_expiry = self._earliest_expiry()
        return True

    def bar(self, name: str) -> Bar | None:
        return self.bars.get(name)

    def _get(self, inst_id: str, bar_name: str) -> tuple[Instrument, Bar]:
        inst, bar = self.instruments.get(inst_id), self.bars.get(bar_name)
        if inst is None:
            raise KeyError(f"unknown instrument {inst_id!r}")
        if bar is None:
            raise KeyError(f"unknown bar {bar_name!r}")
        return inst, bar

    def series(self, series_id: str, bar_name: str, price: str = TRADE) -> tuple[Bar, int, RowOf]:
        """(bar, open time of the first candle, row function `(open_ms, substep, confirmed) -> row`) of a series:
        an instrument's trade candles (9 fields), a swap's or future's mark-price candles or an index's candles
        (6 fields). KeyError when there is no such series (unknown id or bar, a spot pair's mark, 1s marks)."""
        if price != TRADE:
            return self.reference.series(series_id, bar_name, price)
        inst, bar = self._get(series_id, bar_name)

        def row_of(open_ms: int, substep: int, confirmed: bool) -> list[str]:
            return self.row(inst, bar, open_ms, substep, confirmed=confirmed)

        return bar, bar.floor(inst.list_time_ms), row_of

    def first_open(self, inst_id: str, bar_name: str, price: str = TRADE) -> int:
        """Open time of the first candle: the one containing the listing moment (an index: its first instrument's)."""
        return self.series(inst_id, bar_name, price)[1]

    # --- candles ----------------------------------------------------------------------------------

    def truth(self, inst_id: str, bar_name: str, open_ms: int, price: str = TRADE) -> list[str] | None:
        """Final row of a closed candle (confirm "1"); None if not closed yet, misaligned or before listing.

        `price`: "trade" (9-field rows), "mark" (inst_id a swap or future) or "index" (inst_id an index)."""
        bar, first_open, row_of = self.series(inst_id, bar_name, price)
        if not bar.is_aligned(open_ms) or open_ms < first_open:
            return None
        if bar.next_open(open_ms) > self.clock():
            return None
        return row_of(open_ms, substeps_of(bar), True)

    def truth_range(
        self, inst_id: str, bar_name: str, start_ms: int, end_ms: int, price: str = TRADE,
    ) -> list[list[str]]:
        """Closed candles with start <= ts <= end, oldest first (`price` as in `truth`)."""
        bar, first_open, row_of = self.series(inst_id, bar_name, price)
        now = self.clock()
        open_ms = max(first_open, bar.floor(start_ms))
        if open_ms < start_ms:
            open_ms = bar.next_open(open_ms)
        rows: list[list[str]] = []
        steps = substeps_of(bar)
        while open_ms <= end_ms:
            close_ms = bar.next_open(open_ms)
            if close_ms > now:
                break
            rows.append(row_of(open_ms, steps, True))
            open_ms = close_ms
        return rows

    def current(self, inst_id: str, bar_name: str, now_ms: int, price: str = TRADE) -> list[str]:
        """The open candle as of `now_ms` (confirm "0"; `price` as in `truth`)."""
        bar, first_open, row_of = self.series(inst_id, bar_name, price)
        open_ms = bar.floor(now_ms)
        if open_ms < first_open:
            raise ValueError(f"{inst_id} is not listed at {now_ms}")
        return row_of(open_ms, self.substep_at(bar, open_ms, now_ms), False)

    def prepare(self, inst_id: str, bar_name: str, open_ms: int, price: str = TRADE) -> None:
        """Compute the candle opened at `open_ms` ahead of its pushes (it is kept for them)."""
        if price == TRADE:
            self._path(inst_id, bar_name, open_ms)
        else:
            self.reference.prepare(price, inst_id, bar_name, open_ms)

    def path(self, inst_id: str, bar_name: str, open_ms: int) -> CandlePath:
        """The sub-steps of a trade candle (kept for its pushes)."""
        return self._path(inst_id, bar_name, open_ms)

    def index_price(self, index_id: str, moment_ms: int) -> str:
        """The index at a moment (what /market/index-tickers calls idxPx); KeyError for an unknown index."""
        index = self.indices[index_id]
        return self._price_text(self.reference.index_ticks(index_id, moment_ms), -index.tick_decimals)

    def substep_at(self, bar: Bar, open_ms: int, now_ms: int) -> int:
        """How many sub-steps of the candle opened at `open_ms` have begun at `now_ms` (1..K)."""
        steps = substeps_of(bar)
        duration = bar.next_open(open_ms) - open_ms
        return max(1, min(steps, (now_ms - open_ms) * steps // duration + 1))

    def confirm_omitted(self, inst_id: str, bar_name: str, open_ms: int, rate: float) -> bool:
        """Whether the confirm push of this candle is left out, decided by hash so every run agrees."""
        return rate > 0 and unit(self.seed, "omit", inst_id, bar_name, open_ms) < rate

    def row(self, inst: Instrument, bar: Bar, open_ms: int, substep: int, *, confirmed: bool) -> list[str]:
        """The 9-field row of the candle after `substep` sub-steps."""
        path = self._path(inst.inst_id, bar.name, open_ms)
        i = substep - 1
        tick = -inst.tick_decimals
        vol, quote = path.vols[i], path.quote_vols[i]
        if inst.is_contract:
            contracts = scaled(vol, -SWAP_LOT_DECIMALS)
            base = scaled(vol, inst.ct_val_exponent - SWAP_LOT_DECIMALS)
            quote_str = scaled(quote, inst.ct_val_exponent - SWAP_LOT_DECIMALS - inst.tick_decimals)
            volumes = (contracts, base, quote_str)
        else:
            quote_str = scaled(quote, -inst.lot_decimals - inst.tick_decimals)
            volumes = (scaled(vol, -inst.lot_decimals), quote_str, quote_str)
        price = self._price_text
        return [
            str(open_ms), price(path.open, tick), price(path.highs[i], tick), price(path.lows[i], tick),
            price(path.closes[i], tick), *volumes, "1" if confirmed else "0",
        ]

    def _price_text(self, ticks: int, exponent: int) -> str:
        # Prices repeat (four per row, within a few ticks of each other): formatting each once is a third of
        # the cost of a push. Volumes only grow, so they are not worth keeping.
        key = (ticks, exponent)
        text = self._prices.get(key)
        if text is None:
            if len(self._prices) >= PRICE_TEXTS_MAX:
                self._prices.clear()
            text = self._prices[key] = scaled(ticks, exponent)
        return text

    # --- generation -------------------------------------------------------------------------------

    def price_ticks(self, inst: Instrument, moment_ms: int) -> int:
        """The smooth price curve of the instrument's base currency, in ticks."""
        return self._curve(inst.inst_id, moment_ms)

    def _curve_ticks(self, inst_id: str, moment_ms: int) -> int:
        inst = self.instruments[inst_id]
        return max(1, round(inst.base_price * self.curve_factor(inst.base_ccy, moment_ms) * 10**inst.tick_decimals))

    def curve_factor(self, base_ccy: str, moment_ms: int) -> float:
        """The price curve of a base currency relative to its base price (trade candles' opens, the index)."""
        phases = self._phases.get(base_ccy)
        if phases is None:
            phases = tuple(unit(self.seed, "phase", base_ccy, k) * 2 * math.pi for k in range(len(_WAVES)))
            self._phases[base_ccy] = phases
        # Reduce the angle with integers first: exact, and no precision loss on huge arguments.
        x = sum(
            amplitude * math.sin(2 * math.pi * (moment_ms % period) / period + phase)
            for (period, amplitude), phase in zip(_WAVES, phases, strict=True)
        )
        return math.exp(x)

    def _lots_per_second(self, inst: Instrument) -> float:
        lots = self._lots.get(inst.inst_id)
        if lots is None:
            lots = self._lots[inst.inst_id] = self._compute_lots_per_second(inst)
        return lots

    def _compute_lots_per_second(self, inst: Instrument) -> float:
        turnover = 10 ** (2 + 3 * unit(self.seed, "turnover", inst.inst_id))  # 100 .. 100k USDT per second
        if inst.is_contract:
            contract_value = inst.base_price * 10**inst.ct_val_exponent
            return turnover / contract_value * 10**SWAP_LOT_DECIMALS
        return turnover / inst.base_price * 10**inst.lot_decimals

    def _compute_path(self, inst_id: str, bar_name: str, open_ms: int) -> CandlePath:
        inst, bar = self.instruments[inst_id], self.bars[bar_name]
        steps = substeps_of(bar)
        if inst.quiet:
            price = inst.base_price_ticks
            flat, zeros = (price,) * steps, (0,) * steps
            return CandlePath(price, flat, flat, flat, zeros, zeros)
        close_ms = bar.next_open(open_ms)
        first, last = self.price_ticks(inst, open_ms), self.price_ticks(inst, close_ms)
        seconds = (close_ms - open_ms) / 1000
        sigma = max(1.0, first * _PATH_NOISE * math.sqrt(seconds))
        step_sigma = sigma / math.sqrt(steps)
        # random.Random is seeded from a stable hash: same numbers in every process, and fast (C).
        rng = random.Random(stable_hash(self.seed, "path", inst_id, bar_name, open_ms))
        draws = [rng.random() for _ in range(5 * steps)]
        walk, position = [], 0.0
        for k in range(steps):
            position += (draws[k] + draws[steps + k] - 1.0) * step_sigma
            walk.append(position)
        # A bridge: pinned to the curve's price at both ends so consecutive candles join up.
        drift, end = (last - first) / steps, walk[-1] / steps
        prices = [max(1, round(first + drift * k + walk[k - 1] - end * k)) for k in range(1, steps)]
        prices.append(last)
        lots_per_step = self._lots_per_second(inst) * seconds / steps
        wick = step_sigma / 2
        closes, highs, lows, vols, quotes = prices, [], [], [], []
        high = low = previous = first
        vol = quote = 0
        for k, price in enumerate(prices):
            # Each sub-step trades between its two prices plus a small wick either side.
            top, bottom = (previous, price) if previous > price else (price, previous)
            top += int(draws[2 * steps + k] * wick)
            bottom = max(1, bottom - int(draws[3 * steps + k] * wick))
            if top > high:
                high = top
            if bottom < low:
                low = bottom
            lots = max(1, int(lots_per_step * (0.2 + 1.6 * draws[4 * steps + k])))
            vol += lots
            quote += lots * price
            highs.append(high)
            lows.append(low)
            vols.append(vol)
            quotes.append(quote)
            previous = price
        return CandlePath(first, tuple(closes), tuple(highs), tuple(lows), tuple(vols), tuple(quotes))
