"""Candle rows as OKX sends them, parsed exactly: `CandleUpdate` (Decimal numbers, for code that computes) and
`CandleText` (OKX's own number texts, checked to be finite numbers, for code that only stores them), each
carrying its price kind. Trade rows have nine fields (seven in OKX's older rows), mark-price and index rows six
(no volumes); a longer row is taken to have fields OKX added at the end.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from collectors.okx.protocol import INDEX, MARK, PRICE_KINDS, TRADE, Channel, ProtocolError


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

