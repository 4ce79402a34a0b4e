"""The stream's messages, in OKX's style: parsing what a client sends, and the frames the server answers with.

Client → server (text frames, JSON; or the text `ping`, answered `pong`, as OKX does):

    {"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "since": "2026-12-01T00:00:00Z"}]}
    {"op": "unsubscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m"}]}

Server → client: `{"event": "subscribe", "arg": {...}}` per accepted arg, then data frames
`{"arg": {"symbol", "timeframe"}, "data": [candle, ...]}` with candles in /data's shape, and errors
`{"event": "error", "error_code", "message", "arg"?}`. Pure: no Django, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

# The API's own shapes of names (candles/api/params.py), repeated here to keep this module free of Django.
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIMEFRAME = re.compile(r"[0-9]{1,4}[A-Za-z]{1,7}")
_EPOCH_MS = re.compile(r"-?[0-9]{1,16}")
MAX_MESSAGE_BYTES = 64 * 1024
MAX_ARGS = 100

# Error codes: the REST API's where the same thing went wrong (SYMBOL_NOT_FOUND, INVALID_TIMEFRAMES).
INVALID_REQUEST = "INVALID_REQUEST"
SYMBOL_NOT_FOUND = "SYMBOL_NOT_FOUND"
INVALID_TIMEFRAMES = "INVALID_TIMEFRAMES"
INVALID_SINCE = "INVALID_SINCE"
TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
AUTHENTICATION_REQUIRED = "AUTHENTICATION_REQUIRED"
INTERNAL_ERROR = "INTERNAL_ERROR"

# Close codes (4000–4999 are the application's).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_SLOW_CONSUMER = 4008
CLOSE_GOING_AWAY = 1001


class ProtocolError(ValueError):
    def __init__(self, code: str, message: str, arg: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.arg = arg


PRICES = ("trade", "mark", "index")
INVALID_PRICE = "INVALID_PRICE"


@dataclass(frozen=True, slots=True)
class StreamArg:
    symbol: str
    timeframe: str
    since_ms: int | None = None
    price: str = "trade"  # trade, mark or index candles (as /data's price parameter)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.symbol, self.timeframe, self.price

    def echo(self) -> dict:
        # Trade args echo exactly what a trade subscription always echoed; the others say their price.
        if self.price == "trade":
            return {"symbol": self.symbol, "timeframe": self.timeframe}
        return {"symbol": self.symbol, "timeframe": self.timeframe, "price": self.price}


@dataclass(frozen=True, slots=True)
class Request:
    op: str  # "subscribe" or "unsubscribe"
    args: list[StreamArg]


def parse_since(value: object) -> int:
    """Epoch milliseconds from ISO 8601 text (naive means UTC) or epoch milliseconds (number or digits)."""
    if isinstance(value, bool):
        raise ValueError("is not a date-time")
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise ValueError("is not an ISO 8601 date-time or epoch milliseconds")
    text = value.strip()
    if _EPOCH_MS.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time or epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def _arg(raw: object, op: str) -> StreamArg:
    if not isinstance(raw, dict):
        raise ProtocolError(INVALID_REQUEST, "each arg is an object with symbol and timeframe")
    symbol, timeframe = raw.get("symbol"), raw.get("timeframe")
    echo = {k: raw[k] for k in ("symbol", "timeframe") if isinstance(raw.get(k), str)}
    if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
        raise ProtocolError(SYMBOL_NOT_FOUND if isinstance(symbol, str) else INVALID_REQUEST,
                            f"symbol must be an OKX instrument id such as BTC-USDT, not {symbol!r}", echo)
    if not isinstance(timeframe, str) or not _TIMEFRAME.fullmatch(timeframe):
        raise ProtocolError(INVALID_TIMEFRAMES if isinstance(timeframe, str) else INVALID_REQUEST,
                            f"timeframe must be a bar such as 1m, 1H or 7m, not {timeframe!r}", echo)
    unknown = sorted(set(raw) - {"symbol", "timeframe", "since", "price"})
    if unknown:
        raise ProtocolError(INVALID_REQUEST, f"unknown field(s) {', '.join(unknown)}; an arg has symbol, "
                                             "timeframe, price and (subscribe only) since", echo)
    price = raw.get("price", "trade")
    if price not in PRICES:
        raise ProtocolError(INVALID_PRICE, f"price must be trade, mark or index, not {price!r}", echo)
    since = raw.get("since")
    if since is None:
        return StreamArg(symbol, timeframe, price=price)
    if op != "subscribe":
        raise ProtocolError(INVALID_REQUEST, "since belongs to subscribe only", echo)
    try:
        since_ms = parse_since(since)
    except ValueError as exc:
        raise ProtocolError(INVALID_SINCE, f"since {since!r} {exc}", echo) from None
    if not -62_135_596_800_000 <= since_ms <= 253_402_300_799_999:
        raise ProtocolError(INVALID_SINCE, f"since {since!r} is out of the supported range of dates", echo)
    return StreamArg(symbol, timeframe, since_ms, price)


def parse_request(text: str) -> Request:
    """The request in one text frame; ProtocolError (with the code to answer) when it is not one."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(INVALID_REQUEST, f"a message is at most {MAX_MESSAGE_BYTES} bytes")
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(INVALID_REQUEST, "a message is JSON: {\"op\": \"subscribe\", \"args\": [...]}") from None
    if not isinstance(body, dict):
        raise ProtocolError(INVALID_REQUEST, "a message is a JSON object with op and args")
    op = body.get("op")
    if op not in ("subscribe", "unsubscribe"):
        raise ProtocolError(INVALID_REQUEST, f"op must be subscribe or unsubscribe, not {op!r}")
    args = body.get("args")
    if not isinstance(args, list) or not args:
        raise ProtocolError(INVALID_REQUEST, "args is a non-empty list of {symbol, timeframe[, since]}")
    if len(args) > MAX_ARGS:
        raise ProtocolError(TOO_MANY_SUBSCRIPTIONS, f"at most {MAX_ARGS} args a message")
    return Request(op, [_arg(raw, op) for raw in args])


def event(name: str, arg: StreamArg) -> bytes:
    return orjson.dumps({"event": name, "arg": arg.echo()})


def error(code: str, message: str, arg: dict | None = None) -> bytes:
    body: dict = {"event": "error", "error_code": code, "message": message}
    if arg:
        body["arg"] = arg
    return orjson.dumps(body)


def data_frame(arg_json: bytes, candles_json: bytes) -> bytes:
    """`{"arg": …, "data": […]}` from the two parts already encoded (the arg once a subscription)."""
    return b'{"arg":' + arg_json + b',"data":' + candles_json + b"}"
