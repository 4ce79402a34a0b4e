"""The text parser (`parse_candle_text`, the collector's fast path) accepts and refuses exactly the rows the
exact parser does, and its numbers are the same numbers, digit for digit."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collectors.okx.candle_rows import CandleText, CandleUpdate, parse_candle_row, parse_candle_text
from collectors.okx.messages import parse_message
from collectors.okx.protocol import ProtocolError

DIGITS = st.text("0123456789", min_size=1, max_size=30)
PLAIN = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    DIGITS,
    st.sampled_from(["", "."]) | DIGITS.map(lambda d: "." + d),
    st.sampled_from([""]) | st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"), st.sampled_from(["", "-", "+"]),
                                      st.text("0123456789", min_size=1, max_size=3)),
)
# Spellings Decimal (or float) reads but PostgreSQL may not, or reads differently, and plain garbage.
ODD = st.sampled_from([
    "+1", ".5", "-.5", "5.", " 1", "1 ", "\t1", "1_000", "١٢", "NaN", "nan", "sNaN", "Infinity", "-inf", "", "-", "1e",
    "e5", "1..2", "0x10", "1E-8", "0.00000001", "0.1000000000000000001", "0.1", "-0", "-0.0", "4.3E+4", "1e999999",
])
NUMBER = PLAIN | ODD | st.text(max_size=6)
ROW = st.builds(
    lambda ts, numbers, quote, confirm: [ts, *numbers, *quote, *confirm],
    st.sampled_from(["1705431600000", "0", "-5", "1_0", "17e3", "", "١"]),
    st.lists(NUMBER, min_size=6, max_size=6),
    st.sampled_from([[]]) | st.lists(NUMBER | st.just(""), min_size=1, max_size=1),
    st.sampled_from([[], ["0"], ["1"], ["2"], [""]]),
)


def outcome(parse, row):
    try:
        return parse("BTC-USDT", "1m", row, "raw")
    except ProtocolError as error:
        return error


@settings(max_examples=1500, deadline=None)
@given(ROW | st.lists(NUMBER | st.none() | st.integers(), max_size=10))
@example(["1705431600000", "0.1000000000000000001", "0.1", "1E-8", "0.00000001", "-0", "1e5", "", "1"])
@example(["1705431600000", "1", "1", "1", "1", "1", "1", "1", "1", "extra"])
def test_the_text_parser_takes_exactly_the_rows_of_the_exact_parser_and_keeps_their_numbers(row):
    exact, text = outcome(parse_candle_row, row), outcome(parse_candle_text, row)
    if isinstance(exact, ProtocolError):
        assert isinstance(text, ProtocolError)
        assert text.reason == exact.reason
        return
    assert type(text) is CandleText
    assert text.exact() == exact
    exact_numbers = [exact.open, exact.high, exact.low, exact.close, exact.vol, exact.vol_ccy, exact.vol_ccy_quote]
    for kept, original, number in zip(text[3:10], [*row[1:7], row[7] if len(row) > 7 else None], exact_numbers,
                                      strict=True):
        if number is None:
            assert kept is None
            continue
        # Digit for digit, exponent included: Decimal("1.50") is not Decimal("1.5") here.
        assert Decimal(kept).as_tuple() == number.as_tuple()
        # OKX's own string, or Decimal's spelling of it when OKX's is not plain decimal notation.
        assert kept in (original, str(number))


def test_a_row_in_plain_notation_is_kept_as_okx_sent_it_and_any_other_takes_decimals_spelling():
    plain = ["1705431600000", "0.00000001", "1E-8", "1e-8", "-0", "43000.0", "7", "", "1"]
    assert parse_candle_text("BTC-USDT", "1m", plain, "raw")[3:10] == (
        "0.00000001", "1E-8", "1e-8", "-0", "43000.0", "7", None)
    odd = ["1705431600000", "0.00000001", "1E-8", "+1", "1_0", "43000.0", " 7", "", "1"]
    assert parse_candle_text("BTC-USDT", "1m", odd, "raw")[3:10] == (
        "1E-8", "1E-8", "1", "10", "43000.0", "7", None)


def test_a_push_in_text_mode_gives_candle_text_and_the_same_candle_as_exact_mode():
    frame = orjson.dumps({"arg": {"channel": "candle1H", "instId": "BTC-USDT"}, "data": [[
        "1705420800000", "43253.6", "43440.2", "43000", "43250.9", "942.87870026", "40743115.773175484",
        "40743115.773175484", "1"]]})
    [text] = parse_message(frame, text=True)
    [exact] = parse_message(frame)
    assert type(text) is CandleText
    assert type(exact) is CandleUpdate
    assert text.exact() == exact
    assert text.vol_ccy == "40743115.773175484"
    assert text.channel == exact.channel


def test_a_bad_row_is_the_same_protocol_error_in_both_modes():
    frame = orjson.dumps({"arg": {"channel": "candle1m", "instId": "BTC-USDT"},
                          "data": [["1705420800000", "abc", "2", "1", "2", "3", "4", "5", "0"]]})
    errors = []
    for text in (False, True):
        with pytest.raises(ProtocolError) as caught:
            parse_message(frame, text=text)
        errors.append((caught.value.reason, caught.value.raw))
    assert errors[0] == errors[1]
    assert errors[0][0] == "o is not a number: 'abc'"
