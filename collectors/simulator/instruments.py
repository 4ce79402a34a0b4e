"""The simulated instrument universe: names, tick/lot sizes, base prices, quiet flags, listing time."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

# (base currency, price, tick decimals, spot lot decimals), like the real listings.
MAJORS: tuple[tuple[str, float, int, int], ...] = (
    ("BTC", 60_000.0, 1, 8), ("ETH", 3_000.0, 2, 6), ("SOL", 150.0, 2, 6), ("XRP", 0.5, 4, 6), ("DOGE", 0.15, 5, 6),
)
QUOTE = "USDT"
# An extra live-but-odd instrument: clients must accept states they do not know.
REBASE_BASE = "REBASE"
REBASE_STATE = "rebase"
# Swap contracts are traded in lots of 0.01 contract.
SWAP_LOT_DECIMALS = 2


def stable_hash(*parts: object) -> int:
    """64-bit hash of `parts` that is the same in every process (unlike hash())."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def unit(*parts: object) -> float:
    """A deterministic number in [0, 1) derived from `parts`."""
    return stable_hash(*parts) / 2**64


@dataclass(frozen=True, slots=True)
class Instrument:
    inst_id: str
    inst_type: str  # SPOT or SWAP
    base_ccy: str
    quote_ccy: str
    tick_decimals: int  # tickSz = 10**-tick_decimals
    lot_decimals: int  # lotSz = 10**-lot_decimals (base currency for spot, contracts for swaps)
    base_price: float
    list_time_ms: int
    quiet: bool = False
    state: str = "live"
    ct_val_exponent: int = 0  # swaps: ctVal = 10**ct_val_exponent base currency per contract

    @property
    def is_swap(self) -> bool:
        return self.inst_type == "SWAP"

    @property
    def base_price_ticks(self) -> int:
        return max(1, round(self.base_price * 10**self.tick_decimals))


def spot_names(count: int) -> list[str]:
    """Base currencies of the first `count` spot instruments."""
    return [major[0] for major in MAJORS[:count]] + [f"SYN{index}" for index in range(len(MAJORS), count)]


def _synthetic_price(seed: int, base: str) -> float:
    # Log-uniform between 0.01 and 1000 so tick sizes vary like on the real exchange.
    return 10 ** (unit(seed, "price", base) * 5 - 2)


def _tick_decimals(price: float) -> int:
    # About five significant digits, like OKX's tick sizes.
    return max(0, 4 - math.floor(math.log10(price)))


def _spot_lot_decimals(price: float) -> int:
    return min(8, max(0, math.floor(math.log10(price)) + 4))


def _ct_val_exponent(price: float) -> int:
    # One contract is worth between 100 and 1000 USDT.
    return 2 - math.floor(math.log10(price))


def build_instruments(
    seed: int, spot_count: int, *, swaps: bool, quiet_fraction: float, list_time_ms: int
) -> dict[str, Instrument]:
    """Spot instruments (plus swaps if asked) keyed by instId, then one extra instrument in state `rebase`."""
    names = spot_names(spot_count)
    quiet_count = round(max(0.0, min(1.0, quiet_fraction)) * len(names))
    by_quietness = sorted(names, key=lambda base: stable_hash(seed, "quiet", base))
    quiet = set(by_quietness[:quiet_count])
    instruments: dict[str, Instrument] = {}

    def add(base: str, state: str) -> None:
        major = next((m for m in MAJORS if m[0] == base), None)
        if major is None:
            price = _synthetic_price(seed, base)
            tick, lot = _tick_decimals(price), _spot_lot_decimals(price)
        else:
            _, price, tick, lot = major
        spot = Instrument(f"{base}-{QUOTE}", "SPOT", base, QUOTE, tick, lot, price, list_time_ms, base in quiet, state)
        instruments[spot.inst_id] = spot
        if swaps:
            swap = Instrument(
                f"{base}-{QUOTE}-SWAP", "SWAP", base, QUOTE, tick, SWAP_LOT_DECIMALS, price,
                list_time_ms, base in quiet, state, _ct_val_exponent(price),
            )
            instruments[swap.inst_id] = swap

    for base in names:
        add(base, "live")
    add(REBASE_BASE, REBASE_STATE)
    return instruments
