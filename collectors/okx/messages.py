"""OKX v5 WebSocket messages for candle channels: requests to send, and typed events parsed from frames.

Pure functions, no I/O. The candle rows inside pushes are parsed by `collectors.okx.candle_rows`; the channel
vocabulary is `collectors.okx.protocol`. Every price and volume stays exact: a `Decimal` built from OKX's string
(`CandleUpdate`), or, for paths that only pass the numbers on, OKX's string itself, checked to be a finite
number (`CandleText`).

Three kinds of candle, by the price they follow (`PRICE_KINDS`): `trade` (channel `candle{bar}`, rows
`[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]`), `mark` (`mark-price-candle{bar}`) and `index`
(`index-candle{bar}`), whose rows have six fields, `[ts, o, h, l, c, confirm]`: no volumes, so a mark or index
candle carries None for them. OKX documents exactly six; as with the trade rows (7 fields once, 9 now), a
longer row is taken to be one with fields OKX added at the end, and those are ignored. A shorter one is an
error. Trade is the default everywhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from collectors.okx.candle_rows import (
    CandleText,
    CandleUpdate,
    parse_candle_row,
    parse_candle_text,
    parse_price_row,
    parse_price_text,
)
from collectors.okx.protocol import (
    CHANNEL_PREFIXES,
    TRADE,
    Channel,
    ProtocolError,
    check_subscribable,
)

# OKX's limit on one subscribe/unsubscribe request.
MAX_REQUEST_BYTES = 64 * 1024
# Small batches map an error back to few args (one bad arg may fail the whole request).
DEFAULT_ARGS_PER_REQUEST = 20


@dataclass(frozen=True, slots=True)
class SubscribeAck:
    channel: Channel
    conn_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class UnsubscribeAck:
    channel: Channel
    conn_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """An error from OKX. Match on `code`: the wording of `msg` has changed several times."""

    code: str
    msg: str
    conn_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    code: str
    msg: str
    conn_id: str | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """A well-formed OKX event this library does not act on (kept so new events do not break clients)."""

    event: str
    body: dict[str, Any]


Event = CandleUpdate | CandleText | SubscribeAck | UnsubscribeAck | ErrorEvent | Notice | Pong | OtherEvent

PONG = Pong()



# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One subscribe/unsubscribe request: its id (echoed in acks and errors) and the channels it carries."""

    request_id: str
    op: str
    channels: tuple[Channel, ...]
    payload: bytes


_request_ids = itertools.count(1)


def _encode(request_id: str, op: str, channels: Sequence[Channel]) -> bytes:
    return orjson.dumps({"id": request_id, "op": op, "args": [c.arg() for c in channels]})


def build_requests(
    op: str,
    channels: Iterable[Channel],
    *,
    args_per_request: int = DEFAULT_ARGS_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> list[Request]:
    """Requests for `op` ("subscribe" or "unsubscribe") carrying `channels`, each under `max_bytes`.

    Raises ValueError for a channel OKX does not have (`check_subscribable`: 1s mark-price or index candles).
    """
    if op not in ("subscribe", "unsubscribe"):
        raise ValueError(f"op must be subscribe or unsubscribe, not {op!r}")
    if args_per_request < 1:
        raise ValueError("args_per_request must be at least 1")
    channels = list(channels)
    for channel in channels:
        check_subscribable(channel)
    requests: list[Request] = []
    batch: list[Channel] = []

    def flush() -> None:
        request_id = str(next(_request_ids))
        requests.append(Request(request_id, op, tuple(batch), _encode(request_id, op, batch)))
        batch.clear()

    for channel in channels:
        batch.append(channel)
        if len(_encode("99999999", op, batch)) > max_bytes:
            batch.pop()
            if not batch:
                raise ValueError(f"channel {channel} alone exceeds {max_bytes} bytes")
            flush()
            batch.append(channel)
        if len(batch) >= args_per_request:
            flush()
    if batch:
        flush()
    return requests


# --- parsing -------------------------------------------------------------------------------------



def _channel_of(arg: Any, raw: str | bytes) -> Channel:
    if type(arg) is not dict:
        raise ProtocolError(f"arg is not an object: {arg!r}", raw)
    name, inst_id = arg.get("channel"), arg.get("instId")
    price = None
    if type(name) is str:
        for kind, prefix in CHANNEL_PREFIXES.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                price = kind
                break
    if price is None:
        raise ProtocolError(f"not a candle channel: {name!r}", raw)
    if type(inst_id) is not str or not inst_id:
        raise ProtocolError(f"instId missing: {inst_id!r}", raw)
    return Channel(inst_id, name[len(CHANNEL_PREFIXES[price]):], price)


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if type(value) is str else None


# Channels already validated, by (channel name, instId): a push on a known channel skips the checks. Acks
# go through it too, so a channel's acks and pushes share one Channel (and one copy of its strings): the
# collector keeps acked channels in several places, 27,000 of them at full breadth. `_known_rows` holds the
# same channels as `(inst_id, bar, price)` for the push path, which unpacks them (a trade Channel is a pair).
_known_channels: dict[tuple[str, str], Channel] = {}
_known_rows: dict[tuple[str, str], tuple[str, str, str]] = {}
_KNOWN_CHANNELS_MAX = 100_000


def _known_channel(arg: Any, raw: str | bytes) -> Channel:
    try:
        return _known_channels[(arg["channel"], arg["instId"])]
    except (TypeError, KeyError, IndexError):
        channel = _channel_of(arg, raw)
        if len(_known_channels) >= _KNOWN_CHANNELS_MAX:
            _known_channels.clear()
            _known_rows.clear()
        key = (arg["channel"], arg["instId"])
        _known_channels[key] = channel
        _known_rows[key] = (channel.inst_id, channel.bar, channel.price)
        return channel


def _known_row(arg: Any, raw: str | bytes) -> tuple[str, str, str]:
    channel = _known_channel(arg, raw)
    return channel.inst_id, channel.bar, channel.price


def parse_message(raw: str | bytes, *, text: bool = False) -> list[Event]:
    """Typed events of one frame; a candle push yields one CandleUpdate per row of `data` (with `text`,
    one CandleText), of the price kind its channel names (`candle*` trade, `mark-price-candle*` mark,
    `index-candle*` index).

    Raises ProtocolError (with the raw frame) for anything that is not valid OKX.
    """
    if raw == "pong" or raw == b"pong":
        return [PONG]
    try:
        body = orjson.loads(raw)
        data = body.get("data")
    except orjson.JSONDecodeError:
        raise ProtocolError("frame is not JSON", raw) from None
    except AttributeError:
        raise ProtocolError("frame is not a JSON object", raw) from None

    if data is not None:
        arg = body.get("arg")
        try:  # `_known_row`, inlined: this is the hot path
            inst_id, bar, price = _known_rows[(arg["channel"], arg["instId"])]
        except (TypeError, KeyError, IndexError):
            inst_id, bar, price = _known_row(arg, raw)
        if type(data) is not list or not data:
            raise ProtocolError("data is not a non-empty list", raw)
        if price is TRADE:  # the one string object `_known_row` stores for trade channels
            parse_row = parse_candle_text if text else parse_candle_row
            if len(data) == 1:  # every push OKX has been seen to send
                return [parse_row(inst_id, bar, data[0], raw)]
            return [parse_row(inst_id, bar, row, raw) for row in data]
        parse_price = parse_price_text if text else parse_price_row
        return [parse_price(inst_id, bar, price, row, raw) for row in data]

    event = body.get("event")
    if type(event) is not str:
        raise ProtocolError("frame has neither data nor event", raw)
    if event == "subscribe":
        return [SubscribeAck(_known_channel(body.get("arg"), raw), _optional_str(body, "connId"),
                             _optional_str(body, "id"))]
    if event == "unsubscribe":
        return [UnsubscribeAck(_known_channel(body.get("arg"), raw), _optional_str(body, "connId"),
                               _optional_str(body, "id"))]
    if event in ("error", "notice"):
        code = body.get("code")
        if type(code) is not str or not code:
            raise ProtocolError(f"{event} without a code", raw)
        msg = body.get("msg")
        msg = msg if type(msg) is str else ""
        if event == "error":
            return [ErrorEvent(code, msg, _optional_str(body, "connId"), _optional_str(body, "id"))]
        return [Notice(code, msg, _optional_str(body, "connId"))]
    return [OtherEvent(event, body)]
