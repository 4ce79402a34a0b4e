"""OKX v5 WebSocket messages for candle channels: requests to send, and typed events parsed from frames.

Pure functions, no I/O. Every price and volume stays exact: a `Decimal` built from OKX's string
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
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson

# Price kinds: what a candle's prices are the prices of.
TRADE = "trade"  # trades on the instrument itself
MARK = "mark"  # the mark price of a derivative (SWAP, FUTURES, OPTION)
INDEX = "index"  # an index (instId such as BTC-USD, a derivative's `uly`)
PRICE_KINDS = (TRADE, MARK, INDEX)

CANDLE_PREFIX = "candle"
MARK_PRICE_CANDLE_PREFIX = "mark-price-candle"
INDEX_CANDLE_PREFIX = "index-candle"
# Channel name = prefix + bar.
CHANNEL_PREFIXES: dict[str, str] = {TRADE: CANDLE_PREFIX, MARK: MARK_PRICE_CANDLE_PREFIX, INDEX: INDEX_CANDLE_PREFIX}
# Bars only trade candles have: OKX's mark-price and index channels start at 1m.
TRADE_ONLY_BARS = frozenset({"1s"})
# OKX's limit on one subscribe/unsubscribe request.
MAX_REQUEST_BYTES = 64 * 1024
# Small batches map an error back to few args (one bad arg may fail the whole request).
DEFAULT_ARGS_PER_REQUEST = 20


class Channel(tuple):
    """One candle channel: an instrument, a bar (case-sensitive, verbatim: `1m` ≠ `1M`) and a price kind.

    `Channel(inst_id, bar, price="trade")`; read it by name (`.inst_id`, `.bar`, `.price`). A trade channel is
    the pair `(inst_id, bar)`, as before price kinds existed: equal to that plain tuple, with the same hash,
    and it unpacks into two, so code keyed by `(inst_id, bar)` pairs keeps working for trade candles. A mark or
    index channel is the triple `(inst_id, bar, price)`, so it is never equal to the trade channel of the same
    instrument and bar.
    """

    __slots__ = ()

    def __new__(cls, inst_id: str, bar: str, price: str = TRADE) -> Channel:
        if price == TRADE:
            return tuple.__new__(cls, (inst_id, bar))
        if price not in PRICE_KINDS:
            raise ValueError(f"price must be one of {', '.join(PRICE_KINDS)}, not {price!r}")
        return tuple.__new__(cls, (inst_id, bar, price))

    def __getnewargs__(self) -> tuple[str, ...]:
        return tuple(self)

    @property
    def inst_id(self) -> str:
        return self[0]

    @property
    def bar(self) -> str:
        return self[1]

    @property
    def price(self) -> str:
        return self[2] if len(self) > 2 else TRADE

    @property
    def name(self) -> str:
        return CHANNEL_PREFIXES[self.price] + self.bar

    def arg(self) -> dict[str, str]:
        return {"channel": self.name, "instId": self.inst_id}

    def __repr__(self) -> str:
        return f"Channel(inst_id={self.inst_id!r}, bar={self.bar!r}, price={self.price!r})"

    def __str__(self) -> str:
        return f"{self.name}:{self.inst_id}"


def check_subscribable(channel: Channel) -> None:
    """Raise ValueError for a channel OKX has no such channel for (a 1s bar on mark-price or index candles)."""
    if channel.bar in TRADE_ONLY_BARS and channel.price != TRADE:
        raise ValueError(f"{channel}: {channel.bar} candles exist for trade prices only, not {channel.price}")


class _CandleFields(NamedTuple):
    inst_id: str
    bar: str
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    vol: Decimal | None  # None for mark-price and index candles (no volumes)
    vol_ccy: Decimal | None  # None for mark-price and index candles
    vol_ccy_quote: Decimal | None  # absent in OKX's older 7-field rows, and for mark-price and index candles
    confirmed: bool


class _CandleTextFields(NamedTuple):
    inst_id: str
    bar: str
    open_time_ms: int
    open: str
    high: str
    low: str
    close: str
    vol: str | None  # None for mark-price and index candles
    vol_ccy: str | None  # None for mark-price and index candles
    vol_ccy_quote: str | None
    confirmed: bool


_PRICE_INDEX = len(_CandleFields._fields)  # where a mark or index candle keeps its price kind


class _PricedRow:
    """What `CandleUpdate` and `CandleText` add to their NamedTuple fields: the last field, `price`.

    A trade candle is the 11-tuple it was before price kinds existed (equal to one built without `price`,
    and it unpacks into the same 11 values); a mark or index candle is a 12-tuple ending with its kind, so it
    is never equal to a trade candle. Read the kind as `.price`.
    """

    __slots__ = ()

    @property
    def price(self) -> str:
        return self[_PRICE_INDEX] if len(self) > _PRICE_INDEX else TRADE

    @property
    def channel(self) -> Channel:
        return Channel(self.inst_id, self.bar, self.price)

    def _asdict(self) -> dict[str, Any]:
        return {**dict(zip(self._fields, self, strict=False)), "price": self.price}

    def _replace(self, **changes: Any) -> Any:
        return type(self)(**{**self._asdict(), **changes})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._asdict().items())})"


class CandleUpdate(_PricedRow, _CandleFields):
    """One row of a candle push (or of a REST page): the candle as OKX saw it at that moment.

    Fields: inst_id, bar, open_time_ms, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, and
    last `price` (one of PRICE_KINDS, "trade" by default; see `_PricedRow`).
    """

    __slots__ = ()

    def __new__(cls, inst_id: str, bar: str, open_time_ms: int, open: Decimal, high: Decimal, low: Decimal,
                close: Decimal, vol: Decimal | None, vol_ccy: Decimal | None, vol_ccy_quote: Decimal | None,
                confirmed: bool, price: str = TRADE) -> CandleUpdate:
        fields = (inst_id, bar, open_time_ms, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed)
        return tuple.__new__(cls, fields if price == TRADE else (*fields, _price_kind(price)))


class CandleText(_PricedRow, _CandleTextFields):
    """A candle row whose numbers stay text, for hot paths that store them rather than compute with them.

    Each number is a string that `Decimal` and PostgreSQL's `numeric` both read as the same finite value:
    OKX's own strings when the row is all plain decimal notation (digits, `-`, `.`, `e`/`E`), else
    `str(Decimal)` of each. Same fields and meaning as `CandleUpdate`, `price` last; `exact()` gives that.
    """

    __slots__ = ()

    def __new__(cls, inst_id: str, bar: str, open_time_ms: int, open: str, high: str, low: str, close: str,
                vol: str | None, vol_ccy: str | None, vol_ccy_quote: str | None, confirmed: bool,
                price: str = TRADE) -> CandleText:
        fields = (inst_id, bar, open_time_ms, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed)
        return tuple.__new__(cls, fields if price == TRADE else (*fields, _price_kind(price)))

    def exact(self) -> CandleUpdate:
        vol, vol_ccy, quote = self.vol, self.vol_ccy, self.vol_ccy_quote
        return CandleUpdate(
            self.inst_id, self.bar, self.open_time_ms, Decimal(self.open), Decimal(self.high), Decimal(self.low),
            Decimal(self.close), None if vol is None else Decimal(vol), None if vol_ccy is None else Decimal(vol_ccy),
            None if quote is None else Decimal(quote), self.confirmed, self.price,
        )


def _price_kind(price: str) -> str:
    if price not in PRICE_KINDS:
        raise ValueError(f"price must be one of {', '.join(PRICE_KINDS)}, not {price!r}")
    return price


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


def parse_candle_row(inst_id: str, bar: str, row: Any, raw: str | bytes, price: str = TRADE) -> CandleUpdate:
    """One `[ts, o, h, l, c, vol, volCcy, volCcyQuote?, confirm?]` row, as pushed or served by REST; with
    `price` "mark" or "index", one `[ts, o, h, l, c, confirm]` row (`parse_price_row`)."""
    if price != TRADE:
        return parse_price_row(inst_id, bar, price, row, raw)
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


def parse_candle_text(inst_id: str, bar: str, row: Any, raw: str | bytes, price: str = TRADE) -> CandleText:
    """`parse_candle_row` with the numbers kept as text: it accepts and refuses exactly the same rows.

    OKX's own strings are kept when the whole row is plain decimal notation; otherwise each number becomes
    `str(Decimal)` of it. Saves converting Decimals back to text, which a store of the numbers would do.
    """
    if price != TRADE:
        return parse_price_text(inst_id, bar, price, row, raw)
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


def parse_price_row(inst_id: str, bar: str, price: str, row: Any, raw: str | bytes) -> CandleUpdate:
    """One `[ts, o, h, l, c, confirm]` row of a mark-price or index candle (`price` "mark" or "index"), as
    pushed or served by REST. Volumes are None. Fields after the sixth are ignored (see the module docs)."""
    if price != MARK and price != INDEX:
        raise ValueError(f"six-field rows are mark or index candles, not {price!r}")
    # The trade parser's fast path, for six fields.
    if type(row) is list and len(row) == 6:
        try:
            joined = "".join(row)
        except TypeError:
            joined = "n"
        if "n" not in joined and "N" not in joined:
            confirm = row[5]
            if confirm == "1" or confirm == "0":
                try:
                    return _new_update(CandleUpdate, (
                        inst_id, bar, _int(row[0]), _D(row[1]), _D(row[2]), _D(row[3]), _D(row[4]), None, None, None,
                        confirm == "1", price,
                    ))
                except (InvalidOperation, ValueError):
                    pass
    return _parse_price_row_carefully(inst_id, bar, price, row, raw)


def parse_price_text(inst_id: str, bar: str, price: str, row: Any, raw: str | bytes) -> CandleText:
    """`parse_price_row` with the numbers kept as text (as `parse_candle_text`): the same rows accepted."""
    if price != MARK and price != INDEX:
        raise ValueError(f"six-field rows are mark or index candles, not {price!r}")
    if type(row) is list and len(row) == 6:
        try:
            plain = not "".join(row).encode().translate(None, _PLAIN_CHARS)
        except TypeError:
            plain = False
        if plain:
            confirm = row[5]
            if confirm == "1" or confirm == "0":
                try:
                    _D(row[1]), _D(row[2]), _D(row[3]), _D(row[4])
                    return _new_update(CandleText, (
                        inst_id, bar, _int(row[0]), row[1], row[2], row[3], row[4], None, None, None, confirm == "1",
                        price,
                    ))
                except (InvalidOperation, ValueError):
                    pass
    update = _parse_price_row_carefully(inst_id, bar, price, row, raw)
    return CandleText(
        inst_id, bar, update.open_time_ms, str(update.open), str(update.high), str(update.low), str(update.close),
        None, None, None, update.confirmed, price,
    )


def _parse_price_row_carefully(inst_id: str, bar: str, price: str, row: Any, raw: str | bytes) -> CandleUpdate:
    if type(row) is not list or len(row) < 6:
        raise ProtocolError(f"{price} candle row must be a list of at least 6 strings: {row!r}", raw)
    ts = row[0]
    if type(ts) is not str or not ts.isascii() or not ts.isdigit():
        raise ProtocolError(f"ts is not epoch milliseconds: {ts!r}", raw)
    confirm = row[5]
    if confirm not in ("0", "1"):
        raise ProtocolError(f"confirm must be '0' or '1': {confirm!r}", raw)
    return CandleUpdate(
        inst_id, bar, int(ts),
        _decimal(row[1], "o", raw), _decimal(row[2], "h", raw), _decimal(row[3], "l", raw),
        _decimal(row[4], "c", raw), None, None, None, confirm == "1", price,
    )


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
