"""OKX v5 WebSocket messages for candle channels: requests to send, and typed events parsed from frames.

Pure functions, no I/O. Every price and volume stays exact: a `Decimal` built from OKX's string
(`CandleUpdate`), or, for paths that only pass the numbers on, OKX's string itself, checked to be a finite
number (`CandleText`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson

CANDLE_PREFIX = "candle"
# OKX's limit on one subscribe/unsubscribe request.
MAX_REQUEST_BYTES = 64 * 1024
# Small batches map an error back to few args (one bad arg may fail the whole request).
DEFAULT_ARGS_PER_REQUEST = 20


class Channel(NamedTuple):
    """One candle channel: an instrument and a bar (case-sensitive, verbatim: `1m` ≠ `1M`)."""

    inst_id: str
    bar: str

    @property
    def name(self) -> str:
        return CANDLE_PREFIX + self.bar

    def arg(self) -> dict[str, str]:
        return {"channel": self.name, "instId": self.inst_id}

    def __str__(self) -> str:
        return f"{self.name}:{self.inst_id}"


class CandleUpdate(NamedTuple):
    """One row of a candle push (or of a REST page): the candle as OKX saw it at that moment."""

    inst_id: str
    bar: str
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    vol: Decimal
    vol_ccy: Decimal
    vol_ccy_quote: Decimal | None  # absent in OKX's older 7-field rows
    confirmed: bool

    @property
    def channel(self) -> Channel:
        return Channel(self.inst_id, self.bar)


class CandleText(NamedTuple):
    """A candle row whose numbers stay text, for hot paths that store them rather than compute with them.

    Each number is a string that `Decimal` and PostgreSQL's `numeric` both read as the same finite value:
    OKX's own strings when the row is all plain decimal notation (digits, `-`, `.`, `e`/`E`), else
    `str(Decimal)` of each. Same fields and meaning as `CandleUpdate`; `exact()` gives that.
    """

    inst_id: str
    bar: str
    open_time_ms: int
    open: str
    high: str
    low: str
    close: str
    vol: str
    vol_ccy: str
    vol_ccy_quote: str | None
    confirmed: bool

    @property
    def channel(self) -> Channel:
        return Channel(self.inst_id, self.bar)

    def exact(self) -> CandleUpdate:
        quote = self.vol_ccy_quote
        return CandleUpdate(
            self.inst_id, self.bar, self.open_time_ms, Decimal(self.open), Decimal(self.high), Decimal(self.low),
            Decimal(self.close), Decimal(self.vol), Decimal(self.vol_ccy), None if quote is None else Decimal(quote),
            self.confirmed,
        )


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


class ProtocolError(ValueError):
    """A frame that is not valid OKX. Carries the raw frame so it can go to a dead-letter list."""

    def __init__(self, reason: str, raw: str | bytes):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


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
    """Requests for `op` ("subscribe" or "unsubscribe") carrying `channels`, each under `max_bytes`."""
    if op not in ("subscribe", "unsubscribe"):
        raise ValueError(f"op must be subscribe or unsubscribe, not {op!r}")
    if args_per_request < 1:
        raise ValueError("args_per_request must be at least 1")
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


def _decimal(value: Any, field: str, raw: str | bytes) -> Decimal:
    if type(value) is not str:
        raise ProtocolError(f"{field} is not a string: {value!r}", raw)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ProtocolError(f"{field} is not a number: {value!r}", raw) from None
    if not number.is_finite():
        raise ProtocolError(f"{field} is not a finite number: {value!r}", raw)
    return number


_D = Decimal
_new_update = tuple.__new__


def _int(ts: str) -> int:
    if ts.isascii() and ts.isdigit():  # int() would also take "-5", " 5", "1_0" and other scripts' digits
        return int(ts)
    raise ValueError(ts)


def parse_candle_row(inst_id: str, bar: str, row: Any, raw: str | bytes) -> CandleUpdate:
    """One `[ts, o, h, l, c, vol, volCcy, volCcyQuote?, confirm?]` row, as pushed or served by REST."""
    # The hot path of the whole collector. One C-level join type-checks every field (it refuses anything
    # but str), and every spelling Decimal accepts for a non-finite value (NaN, sNaN, Inf, Infinity, in
    # any case) contains an "n". Anything unusual goes to the careful parser, which also names the fault.
    if type(row) is list and 7 <= len(row) <= 9:
        try:
            joined = "".join(row)
        except TypeError:
            joined = "n"
        if "n" not in joined and "N" not in joined:
            n = len(row)
            ts = row[0]
            confirm = row[8] if n == 9 else "0"
            quote = row[7] if n > 7 else ""
            if confirm == "1" or confirm == "0":
                try:
                    # tuple.__new__ skips the namedtuple's Python-level __new__: same object, less work.
                    return _new_update(CandleUpdate, (
                        inst_id, bar, _int(ts), _D(row[1]), _D(row[2]), _D(row[3]), _D(row[4]), _D(row[5]),
                        _D(row[6]), _D(quote) if quote else None, confirm == "1",
                    ))
                except (InvalidOperation, ValueError):
                    pass
    return _parse_row_carefully(inst_id, bar, row, raw)


# Plain decimal notation. A string of only these characters that Decimal accepts is read by PostgreSQL's
# numeric as the same number; Decimal's other spellings (spaces, "_", other scripts' digits, NaN and
# Infinity) each need a character outside this set.
_PLAIN_CHARS = b"0123456789.-eE"


def parse_candle_text(inst_id: str, bar: str, row: Any, raw: str | bytes) -> CandleText:
    """`parse_candle_row` with the numbers kept as text: it accepts and refuses exactly the same rows.

    OKX's own strings are kept when the whole row is plain decimal notation; otherwise each number becomes
    `str(Decimal)` of it. Saves converting Decimals back to text, which a store of the numbers would do.
    """
    # Decimal() is the check (cheaper than float() here: 170-240 ns against 190-350 ns a field); the
    # Decimals themselves are dropped.
    if type(row) is list and 7 <= len(row) <= 9:
        try:
            plain = not "".join(row).encode().translate(None, _PLAIN_CHARS)
        except TypeError:
            plain = False
        if plain:
            n = len(row)
            confirm = row[8] if n == 9 else "0"
            quote = row[7] if n > 7 else ""
            if confirm == "1" or confirm == "0":
                try:
                    _D(row[1]), _D(row[2]), _D(row[3]), _D(row[4]), _D(row[5]), _D(row[6])
                    if quote:
                        _D(quote)
                    return _new_update(CandleText, (
                        inst_id, bar, _int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], quote or None,
                        confirm == "1",
                    ))
                except (InvalidOperation, ValueError):
                    pass
    update = _parse_row_carefully(inst_id, bar, row, raw)
    quote = update.vol_ccy_quote
    return CandleText(
        inst_id, bar, update.open_time_ms, str(update.open), str(update.high), str(update.low), str(update.close),
        str(update.vol), str(update.vol_ccy), None if quote is None else str(quote), update.confirmed,
    )


def _parse_row_carefully(inst_id: str, bar: str, row: Any, raw: str | bytes) -> CandleUpdate:
    if type(row) is not list or len(row) < 7:
        raise ProtocolError(f"candle row must be a list of at least 7 strings: {row!r}", raw)
    ts = row[0]
    if type(ts) is not str or not ts.isascii() or not ts.isdigit():
        raise ProtocolError(f"ts is not epoch milliseconds: {ts!r}", raw)
    confirm = row[8] if len(row) > 8 else "0"
    if confirm not in ("0", "1"):
        raise ProtocolError(f"confirm must be '0' or '1': {confirm!r}", raw)
    quote = row[7] if len(row) > 7 else None
    return CandleUpdate(
        inst_id, bar, int(ts),
        _decimal(row[1], "o", raw), _decimal(row[2], "h", raw), _decimal(row[3], "l", raw),
        _decimal(row[4], "c", raw), _decimal(row[5], "vol", raw), _decimal(row[6], "volCcy", raw),
        None if quote is None or quote == "" else _decimal(quote, "volCcyQuote", raw),
        confirm == "1",
    )


def _channel_of(arg: Any, raw: str | bytes) -> Channel:
    if type(arg) is not dict:
        raise ProtocolError(f"arg is not an object: {arg!r}", raw)
    name, inst_id = arg.get("channel"), arg.get("instId")
    if type(name) is not str or not name.startswith(CANDLE_PREFIX) or len(name) == len(CANDLE_PREFIX):
        raise ProtocolError(f"not a candle channel: {name!r}", raw)
    if type(inst_id) is not str or not inst_id:
        raise ProtocolError(f"instId missing: {inst_id!r}", raw)
    return Channel(inst_id, name[len(CANDLE_PREFIX):])


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if type(value) is str else None


# Channels already validated, by (channel name, instId): a push on a known channel skips the checks. Acks
# go through it too, so a channel's acks and pushes share one Channel (and one copy of its strings): the
# collector keeps acked channels in several places, 27,000 of them at full breadth.
_known_channels: dict[tuple[str, str], Channel] = {}
_KNOWN_CHANNELS_MAX = 100_000


def _known_channel(arg: Any, raw: str | bytes) -> Channel:
    try:
        return _known_channels[(arg["channel"], arg["instId"])]
    except (TypeError, KeyError, IndexError):
        channel = _channel_of(arg, raw)
        if len(_known_channels) >= _KNOWN_CHANNELS_MAX:
            _known_channels.clear()
        _known_channels[(arg["channel"], arg["instId"])] = channel
        return channel


def parse_message(raw: str | bytes, *, text: bool = False) -> list[Event]:
    """Typed events of one frame; a candle push yields one CandleUpdate per row of `data` (with `text`,
    one CandleText).

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
        try:  # `_known_channel`, inlined: this is the hot path
            inst_id, bar = _known_channels[(arg["channel"], arg["instId"])]
        except (TypeError, KeyError, IndexError):
            inst_id, bar = _known_channel(arg, raw)
        if type(data) is not list or not data:
            raise ProtocolError("data is not a non-empty list", raw)
        parse_row = parse_candle_text if text else parse_candle_row
        if len(data) == 1:  # every push OKX has been seen to send
            return [parse_row(inst_id, bar, data[0], raw)]
        return [parse_row(inst_id, bar, row, raw) for row in data]

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
