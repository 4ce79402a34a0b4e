"""What OKX REST can serve: which bars, from when (listing, retention), and through which endpoint."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.models import Instrument, Timeframe
from collectors.okx.protocol import TRADE, TRADE_ONLY_BARS
from collectors.okx.rest_endpoints import (
    CANDLE_ENDPOINTS,
    HISTORY_ONLY_BARS,
    RECENT_CANDLES,
    RECENT_MARGIN,
    WEBSOCKET_ONLY_BARS,
    Endpoint,
)

# How long OKX REST keeps candles of a bar, where it does not keep them for years.
REST_RETENTION: dict[str, timedelta] = {"1s": timedelta(days=90)}

# The budgets a repair draws on, one lane per endpoint. The trade candles' two keep their short names (the repair
# report's contract); mark-price and index candles have their own endpoints and budgets, named as OKX names them.
CANDLES_LANE = "candles"
HISTORY_LANE = "history"
# (latest candles, older candles) lanes by price kind.
PRICE_LANES: dict[str, tuple[str, str]] = {
    TRADE: (CANDLES_LANE, HISTORY_LANE),
    **{price: tuple(endpoint.path.rsplit("/", 1)[1] for endpoint in pair)
       for price, pair in CANDLE_ENDPOINTS.items() if price != TRADE},
}
LANES: tuple[str, ...] = tuple(lane for pair in PRICE_LANES.values() for lane in pair)
# The endpoint (and so the rate budget) behind each lane.
LANE_ENDPOINTS: dict[str, Endpoint] = {
    lane: endpoint for price, pair in PRICE_LANES.items()
    for lane, endpoint in zip(pair, CANDLE_ENDPOINTS[price], strict=True)
}
ENDPOINT_LANES: dict[str, str] = {endpoint.path: lane for lane, endpoint in LANE_ENDPOINTS.items()}
# Candles one request returns: /candles pages hold 300; /history-candles 100 in OKX's older documentation and
# some SDKs (300 in the current one), so a unit meant for it never asks for more than 100. The mark-price and
# index endpoints cap their pages at 100.
PAGE_CANDLES: dict[str, int] = {
    lane: 300 if lane == CANDLES_LANE else 100 if lane == HISTORY_LANE else LANE_ENDPOINTS[lane].max_rows or 100
    for lane in LANES
}


@dataclass(frozen=True, slots=True)
class Range:
    start_ms: int  # first open time
    end_ms: int  # last open time, inclusive
    reason: str | None = None  # why REST cannot serve it; None when it can

    def fmt(self) -> str:
        return f"{ms_to_datetime(self.start_ms).isoformat()} to {ms_to_datetime(self.end_ms).isoformat()}"


def split(spec: BarSpec, rng: Range, size: int) -> Iterator[Range]:
    """`rng` cut into consecutive ranges of at most `size` open times."""
    start = rng.start_ms
    while start <= rng.end_ms:
        last = min(rng.end_ms, spec.advance(start, size - 1))
        yield Range(start, last, rng.reason)
        start = spec.following(last)


def subtract(spec: BarSpec, rng: Range, covered: Sequence[tuple[int, int]]) -> Iterator[Range]:
    """The parts of `rng` outside the `covered` ranges (sorted by start)."""
    current = rng.start_ms
    for start, end in covered:
        if end < current:
            continue
        if start > rng.end_ms:
            break
        if start > current:
            yield Range(current, spec.floor(start - 1), rng.reason)
        current = max(current, spec.ceil(end + 1))
        if current > rng.end_ms:
            return
    if current <= rng.end_ms:
        yield Range(current, rng.end_ms, rng.reason)


def rest_serves(timeframe: Timeframe, price: str = TRADE) -> bool:
    """Whether OKX REST has `price` candles of this bar (mark-price and index candles start at 1m)."""
    if price != TRADE and timeframe.code in TRADE_ONLY_BARS:
        return False
    return timeframe.code not in WEBSOCKET_ONLY_BARS and (timeframe.rest_candles or timeframe.rest_history)


def not_served_reason(timeframe: Timeframe, price: str = TRADE) -> str:
    if price != TRADE and timeframe.code in TRADE_ONLY_BARS:
        return f"OKX has no {timeframe.code} {price} candles (they start at 1m)"
    return f"OKX REST does not serve {timeframe.code} candles (WebSocket only)"


def listing_open_ms(spec: BarSpec, instrument: Instrument) -> int | None:
    """The first open time OKX has: the candle containing the listing moment."""
    return None if instrument.listed_at is None else spec.floor(datetime_to_ms(instrument.listed_at))


def final_open_ms(spec: BarSpec, instrument: Instrument) -> int | None:
    """The last open time an instrument can have: the candle containing its expiry or delisting, if any."""
    ends = [datetime_to_ms(moment) for moment in (instrument.expires_at, instrument.delisted_at) if moment]
    return spec.floor(min(ends)) if ends else None


def reach_limits(timeframe: Timeframe, instrument: Instrument, now_ms: int) -> list[tuple[int, str]]:
    """(boundary, reason): REST has no candle opening before `boundary`, for that reason."""
    spec = timeframe.spec
    limits: list[tuple[int, str]] = []
    listing = listing_open_ms(spec, instrument)
    if listing is not None:
        listed = instrument.listed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        limits.append((listing, f"before {instrument.inst_id} was listed ({listed}); OKX has no candles there"))
    retention = REST_RETENTION.get(timeframe.code)
    if retention is not None:
        limits.append((spec.ceil(now_ms - int(retention.total_seconds() * 1000)),
                       f"OKX REST serves {timeframe.code} candles of the last {retention.days} days only"))
    return sorted(limits)


def partition(spec: BarSpec, rng: Range, limits: Sequence[tuple[int, str]]) -> list[Range]:
    """Split `rng` at the boundaries: each part below a boundary carries the reason of the lowest one above it."""
    parts: list[Range] = []
    current = rng.start_ms
    for boundary, reason in limits:
        if current > rng.end_ms:
            break
        if current < boundary:
            last = min(rng.end_ms, spec.previous(spec.ceil(boundary)))
            parts.append(Range(current, last, reason))
            current = spec.following(last)
    if current <= rng.end_ms:
        parts.append(Range(current, rng.end_ms, None))
    return parts


def lane_for(spec: BarSpec, start_ms: int, now_ms: int, price: str = TRADE) -> str:
    """The endpoint whose budget a request for `price` candles from `start_ms` on draws: the latest-candles one
    holds the latest 1,440 candles of a bar (less a margin, as the client reckons it), never `1s`. Calendar bars
    go there too: 1,440 of them are centuries (and `RECENT_ONLY_PRICE_BARS`, all calendar bars, are only there)."""
    recent, history = PRICE_LANES[price]
    if spec.code in HISTORY_ONLY_BARS or spec.months:
        return history if spec.code in HISTORY_ONLY_BARS else recent
    horizon = now_ms - (RECENT_CANDLES - RECENT_MARGIN) * spec.length_ms
    return recent if start_ms >= horizon else history
