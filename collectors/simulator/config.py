"""Settings of one simulator run (the public contract other engineers code against)."""

from __future__ import annotations

from dataclasses import dataclass

from .bars import ALL_BARS


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 1
    instruments: int = 10  # spot instruments: BTC, ETH, SOL, XRP, DOGE, then SYN5, SYN6, ... (all -USDT)
    swaps: bool | int = False  # True: a -USDT-SWAP per spot instrument; a number: that many swaps (first bases)
    futures: int = 0  # FUTURES contracts: BTC-USDT-YYMMDD, BTC-USD-YYMMDD, ... (8 per underlying, see instruments)
    bars: tuple[str, ...] = ALL_BARS
    push_interval: float = 1.0  # seconds between pushes of the open candle on each subscribed channel
    confirm_omit_rate: float = 0.0  # fraction of closes whose confirm push is left out
    quiet_fraction: float = 0.0  # fraction of instruments with flat zero-volume candles
    idle_timeout: float = 30.0  # close 4004 when no frame went either way for this long
    max_channels_per_connection: int = 0  # 0 = unlimited, else close 4008 when exceeded
    requests_per_hour: int = 480  # subscribe + unsubscribe requests per connection; over it: error 60014
    new_connections_per_second: int = 3  # WebSocket handshakes per client IP; over it: HTTP 429
    rest_candles_limit: tuple[int, float] = (40, 2.0)  # requests per period (s) per client IP
    rest_history_limit: tuple[int, float] = (20, 2.0)
    rest_instruments_limit: tuple[int, float] = (20, 2.0)  # per client IP and instType
    # Mark-price and index candles, and the index list: budgets of their own, apart from the trade candles'.
    rest_mark_candles_limit: tuple[int, float] = (20, 2.0)
    rest_history_mark_limit: tuple[int, float] = (20, 2.0)
    rest_index_candles_limit: tuple[int, float] = (20, 2.0)
    rest_history_index_limit: tuple[int, float] = (10, 2.0)
    rest_index_tickers_limit: tuple[int, float] = (20, 2.0)
    history_days: int = 30  # candles exist from listTime = now - history_days (whole UTC days)
    list_time_ms: int | None = None  # fixes listTime instead of deriving it from the clock
    write_buffer_limit: int = 16 * 2**20  # bytes queued for a slow reader before closing it with 4005
    close_timeout: float = 2.0  # seconds to wait for the client's close frame before dropping the TCP link

    def __post_init__(self) -> None:
        if isinstance(self.bars, str):
            object.__setattr__(self, "bars", tuple(b for b in self.bars.split(",") if b))
        else:
            object.__setattr__(self, "bars", tuple(self.bars))
        if self.push_interval <= 0:
            raise ValueError("push_interval must be positive")
        if self.instruments < 0:
            raise ValueError("instruments must not be negative")
        if self.swaps is not True and self.swaps is not False and int(self.swaps) < 0:
            raise ValueError("swaps must be a bool or a count that is not negative")
        if self.futures < 0:
            raise ValueError("futures must not be negative")

    @property
    def swap_count(self) -> int:
        """How many SWAP instruments: one per spot one with swaps=True, else the count given."""
        if self.swaps is True:
            return self.instruments
        return max(0, int(self.swaps))
