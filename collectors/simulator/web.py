"""The simulator's plain HTTP side: OKX's REST paths with their rate budgets, and the /sim/ endpoints."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from . import rest
from .http import HttpRequest, encode_response
from .market import Market, wall_clock_ms
from .ratelimit import SlidingWindow
from .reference import PRICE_KINDS, TRADE

if TYPE_CHECKING:
    from .config import SimulatorConfig

BUSINESS_PATH = "/ws/v5/business"
PUBLIC_PATH = "/ws/v5/public"


def rest_limits(config: SimulatorConfig) -> dict[str, SlidingWindow]:
    """One budget per REST path (counted per client IP; instruments per client IP and instType)."""
    return {
        rest.CANDLES_PATH: SlidingWindow(*config.rest_candles_limit),
        rest.HISTORY_PATH: SlidingWindow(*config.rest_history_limit),
        rest.MARK_CANDLES_PATH: SlidingWindow(*config.rest_mark_candles_limit),
        rest.HISTORY_MARK_PATH: SlidingWindow(*config.rest_history_mark_limit),
        rest.INDEX_CANDLES_PATH: SlidingWindow(*config.rest_index_candles_limit),
        rest.HISTORY_INDEX_PATH: SlidingWindow(*config.rest_history_index_limit),
        rest.INDEX_TICKERS_PATH: SlidingWindow(*config.rest_index_tickers_limit),
        rest.INSTRUMENTS_PATH: SlidingWindow(*config.rest_instruments_limit),
    }


class HttpEndpoints:
    """The HTTP side of `Simulator` (a mixin: it shares the simulator's state)."""

    config: SimulatorConfig
    market: Market
    _stats: Counter[str]
    _rest_429_left: int
    _rest_delay: tuple[float, int]
    _rest_limits: dict[str, SlidingWindow]

    async def _http(self, request: HttpRequest, writer: asyncio.StreamWriter, peer: str) -> bool:
        """Answer one plain HTTP request; returns whether the connection stays open."""
        if request.path.startswith("/api/v5/"):
            status, body = await self._rest(request, peer)
        elif request.path.startswith("/sim/"):
            status, body = self._sim_endpoint(request)
        elif request.path in (BUSINESS_PATH, PUBLIC_PATH):
            status, body = 426, orjson.dumps({"msg": "Upgrade Required", "code": "426"})
        else:
            status, body = 404, orjson.dumps({"msg": "Not Found", "code": "404"})
        writer.write(encode_response(status, body, keep_alive=request.keep_alive))
        await writer.drain()
        return request.keep_alive

    async def _rest(self, request: HttpRequest, peer: str) -> rest.Answer:
        self._stats["rest_requests"] += 1
        if self._rest_429_left > 0:
            self._rest_429_left -= 1
            self._stats["rest_429s"] += 1
            return rest.TOO_MANY_REQUESTS
        delay, delays_left = self._rest_delay
        if delays_left > 0:
            self._rest_delay = (delay, delays_left - 1)
            await asyncio.sleep(delay)
        if request.method != "GET":
            return 405, orjson.dumps({"msg": "Method Not Allowed", "code": "405"})
        path, query = request.path, request.query
        limiter = self._rest_limits.get(path)
        if limiter is None:
            return 404, orjson.dumps({"msg": "Not Found", "code": "404"})
        key = (peer, query.get("instType", "")) if path == rest.INSTRUMENTS_PATH else peer
        if not limiter.allow(key, time.monotonic()):
            self._stats["rest_429s"] += 1
            return rest.TOO_MANY_REQUESTS
        if path == rest.INSTRUMENTS_PATH:
            return rest.instruments(self.market, query)
        if path == rest.INDEX_TICKERS_PATH:
            return rest.index_tickers(self.market, query, wall_clock_ms())
        return rest.candle_page(self.market, query, wall_clock_ms(), rest.CANDLE_ENDPOINTS[path])

    def _sim_endpoint(self, request: HttpRequest) -> rest.Answer:
        try:
            if request.path == "/sim/stats":
                return 200, orjson.dumps(self.stats())
            if request.path == "/sim/truth":
                return self._sim_truth(request.query)
            if request.path == "/sim/control":
                params: dict[str, Any] = dict(request.query)
                if request.body:
                    body = orjson.loads(request.body)
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                    params.update(body)
                action = params.pop("action", None)
                if not isinstance(action, str):
                    raise ValueError("action is required")
                params = {name: _coerce(value) for name, value in params.items()}
                return 200, orjson.dumps({"ok": True, "result": self.control(action, **params)})
        except (ValueError, TypeError, KeyError) as exc:
            return 400, orjson.dumps({"ok": False, "error": str(exc)})
        return 404, orjson.dumps({"ok": False, "error": f"no such endpoint {request.path}"})

    def _sim_truth(self, query: dict[str, str]) -> rest.Answer:
        """Closed candles, oldest first: `instId`, `bar`, `start`, `end`, and `price` (trade, mark or index)."""
        inst_id, bar, price = query.get("instId", ""), query.get("bar", "1m"), query.get("price") or TRADE
        if price not in PRICE_KINDS:
            raise ValueError(f"unknown price {price!r}; known: {', '.join(PRICE_KINDS)}")
        try:
            self.market.series(inst_id, bar, price)
        except KeyError:
            raise ValueError(f"no {price} candles for instId {inst_id!r} and bar {bar!r}") from None
        start = int(query.get("start") or 0)
        end = int(query.get("end") or wall_clock_ms())
        return 200, orjson.dumps({"data": self.market.truth_range(inst_id, bar, start, end, price)})


def _coerce(value: Any) -> Any:
    """Query-string values arrive as text: turn numbers and booleans back into what the methods expect."""
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
