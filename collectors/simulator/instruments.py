"""The simulated instrument universe: names, tick/lot sizes, base prices, quiet flags, listing time."""

from __future__ import annotations

import datetime
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
# Swap and futures contracts are traded in lots of 0.01 contract.
SWAP_LOT_DECIMALS = 2
# Futures: each underlying lists USDT-margined (linear) and USD-margined (inverse) contracts, each expiring this
# week, next week, this quarter and next quarter, at 08:00 UTC on a Friday, like OKX's.
FUTURES_SETTLEMENTS = ("USDT", "USD")
FUTURES_EXPIRIES = ("this_week", "next_week", "quarter", "next_quarter")
FUTURES_PER_UNDERLYING = len(FUTURES_SETTLEMENTS) * len(FUTURES_EXPIRIES)
EXPIRY_HOUR_MS = 8 * 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_FRIDAY = 4  # date.weekday()


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
    inst_type: str  # SPOT, SWAP or FUTURES
    base_ccy: str
    quote_ccy: str
    tick_decimals: int  # tickSz = 10**-tick_decimals
    lot_decimals: int  # lotSz = 10**-lot_decimals (base currency for spot, contracts for swaps)
    base_price: float
    list_time_ms: int
    quiet: bool = False
    state: str = "live"
    ct_val_exponent: int = 0  # contracts: ctVal = 10**ct_val_exponent base currency per contract
    exp_time_ms: int | None = None  # futures: the moment it expires (stops being listed and pushed)

    @property
    def is_swap(self) -> bool:
        return self.inst_type == "SWAP"

    @property
    def is_contract(self) -> bool:
        """Swaps and futures: volumes in contracts, lots of 0.01 contract."""
        return self.inst_type in ("SWAP", "FUTURES")

    @property
    def is_inverse(self) -> bool:
        """A USD-margined (coin-settled) future. Its candles keep the linear volume shape: the listing differs."""
        return self.inst_type == "FUTURES" and self.quote_ccy == "USD"

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


def _pricing(seed: int, base: str) -> tuple[float, int, int]:
    """(price, tick decimals, spot lot decimals) of a base currency: the majors' real ones, else synthetic."""
    major = next((m for m in MAJORS if m[0] == base), None)
    if major is not None:
        return major[1], major[2], major[3]
    price = _synthetic_price(seed, base)
    return price, _tick_decimals(price), _spot_lot_decimals(price)


def expiry_of(inst_id: str) -> int:
    """The expiry of a futures instId (BASE-QUOTE-YYMMDD): 08:00 UTC on that day, epoch ms."""
    stamp = inst_id.rsplit("-", 1)[1]
    if len(stamp) != 6 or not stamp.isdigit():
        raise ValueError(f"{inst_id!r} does not end in a YYMMDD expiry")
    day = datetime.date(2000 + int(stamp[:2]), int(stamp[2:4]), int(stamp[4:]))
    return _day_ms(day) + EXPIRY_HOUR_MS


def _day_ms(day: datetime.date) -> int:
    return (day - datetime.date(1970, 1, 1)).days * DAY_MS


def _last_friday(year: int, month: int) -> datetime.date:
    following = datetime.date(year + month // 12, month % 12 + 1, 1)
    day = following - datetime.timedelta(days=1)
    return day - datetime.timedelta(days=(day.weekday() - _FRIDAY) % 7)


def futures_expiries(now_ms: int) -> dict[str, int]:
    """The expiries OKX lists at `now_ms`: this and next week's Friday, this and next quarter's last Friday.

    A quarter whose contract would expire within two weeks is already the next one (OKX rolls the quarterly
    when the bi-weekly takes over its expiry).
    """
    today = datetime.date(1970, 1, 1) + datetime.timedelta(days=now_ms // DAY_MS)
    friday = today + datetime.timedelta(days=(_FRIDAY - today.weekday()) % 7)
    this_week = _day_ms(friday) + EXPIRY_HOUR_MS
    if this_week <= now_ms:
        this_week += WEEK_MS
    next_week = this_week + WEEK_MS
    quarters: list[int] = []
    year, month = today.year, (today.month - 1) // 3 * 3 + 3
    while len(quarters) < 2:
        expiry = _day_ms(_last_friday(year, month)) + EXPIRY_HOUR_MS
        if expiry > next_week:
            quarters.append(expiry)
        year, month = (year + 1, 3) if month == 12 else (year, month + 3)
    return {"this_week": this_week, "next_week": next_week, "quarter": quarters[0], "next_quarter": quarters[1]}


def futures_inst_id(base: str, settle: str, exp_time_ms: int) -> str:
    day = datetime.datetime.fromtimestamp(exp_time_ms / 1000, tz=datetime.UTC)
    return f"{base}-{settle}-{day:%y%m%d}"


def make_instrument(
    seed: int, inst_id: str, *, list_time_ms: int, quiet: bool = False, state: str = "live",
    exp_time_ms: int | None = None,
) -> Instrument:
    """One instrument from its instId alone: BASE-USDT (SPOT), BASE-USDT-SWAP, BASE-USDT-YYMMDD or
    BASE-USD-YYMMDD (FUTURES, expiring at 08:00 UTC that day unless `exp_time_ms` says otherwise)."""
    parts = inst_id.split("-")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"{inst_id!r} is not an instId like BTC-USDT, BTC-USDT-SWAP or BTC-USD-261225")
    base, quote = parts[0], parts[1]
    price, tick, lot = _pricing(seed, base)
    if len(parts) == 2:
        return Instrument(inst_id, "SPOT", base, quote, tick, lot, price, list_time_ms, quiet, state)
    if parts[2] == "SWAP":
        return Instrument(inst_id, "SWAP", base, quote, tick, SWAP_LOT_DECIMALS, price, list_time_ms, quiet, state,
                          _ct_val_exponent(price))
    expiry = expiry_of(inst_id) if exp_time_ms is None else exp_time_ms
    return Instrument(inst_id, "FUTURES", base, quote, tick, SWAP_LOT_DECIMALS, price, list_time_ms, quiet, state,
                      _ct_val_exponent(price), expiry)


def build_instruments(
    seed: int, spot_count: int, *, swaps: bool | int, quiet_fraction: float, list_time_ms: int,
    futures: int = 0, now_ms: int | None = None,
) -> dict[str, Instrument]:
    """Spot instruments, swaps and futures keyed by instId, then one extra spot instrument in state `rebase`.

    `swaps` is True for a -USDT-SWAP per spot instrument, or a count (the first ones'). Futures take the
    underlyings in the spot order, FUTURES_PER_UNDERLYING contracts each, expiring as `futures_expiries(now_ms)`.
    """
    names = spot_names(spot_count)
    swap_count = len(names) if swaps is True else max(0, int(swaps))
    underlyings = spot_names(max(spot_count, swap_count, -(-futures // FUTURES_PER_UNDERLYING)))
    quiet_count = round(max(0.0, min(1.0, quiet_fraction)) * len(underlyings))
    by_quietness = sorted(underlyings, key=lambda base: stable_hash(seed, "quiet", base))
    quiet = set(by_quietness[:quiet_count])
    instruments: dict[str, Instrument] = {}

    def add(inst_id: str, base: str, state: str = "live", exp_time_ms: int | None = None) -> None:
        instruments[inst_id] = make_instrument(seed, inst_id, list_time_ms=list_time_ms, quiet=base in quiet,
                                               state=state, exp_time_ms=exp_time_ms)

    for index, base in enumerate(names):
        add(f"{base}-{QUOTE}", base)
        if index < swap_count:
            add(f"{base}-{QUOTE}-SWAP", base)
    for base in underlyings[len(names):swap_count]:
        add(f"{base}-{QUOTE}-SWAP", base)
    if futures > 0:
        expiries = futures_expiries(list_time_ms if now_ms is None else now_ms)
        for index in range(futures):
            base = underlyings[index // FUTURES_PER_UNDERLYING]
            settle = FUTURES_SETTLEMENTS[index % FUTURES_PER_UNDERLYING // len(FUTURES_EXPIRIES)]
            expiry = expiries[FUTURES_EXPIRIES[index % len(FUTURES_EXPIRIES)]]
            add(futures_inst_id(base, settle, expiry), base, exp_time_ms=expiry)
    add(f"{REBASE_BASE}-{QUOTE}", REBASE_BASE, REBASE_STATE)
    if swaps is True:  # one swap per spot instrument, the odd one included (as before swap counts existed)
        add(f"{REBASE_BASE}-{QUOTE}-SWAP", REBASE_BASE, REBASE_STATE)
    return instruments
