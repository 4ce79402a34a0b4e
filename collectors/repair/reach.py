"""What OKX REST can serve: which bars, from when (listing, retention), and through which endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from candles.bars import BarSpec
from candles.models import Instrument, Timeframe
from candles.series import Range, listing_open_ms
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


def rest_serves(timeframe: Timeframe, price: str = TRADE) -> bool:
    """Whether OKX REST has `price` candles of this bar (mark-price and index candles start at 1m)."""
    if price != TRADE and timeframe.code in TRADE_ONLY_BARS:
        return False
    return timeframe.code not in WEBSOCKET_ONLY_BARS and (timeframe.rest_candles or timeframe.rest_history)


def not_served_reason(timeframe: Timeframe, price: str = TRADE) -> str:
    if price != TRADE and timeframe.code in TRADE_ONLY_BARS:
        return f"OKX has no {timeframe.code} {price} candles (they start at 1m)"
    return f"OKX REST does not serve {timeframe.code} candles (WebSocket only)"


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
