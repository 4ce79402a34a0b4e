"""The collector's text path decides and stores exactly what the Decimal path does.

`candle_text_problem` gives the same verdict as `candle_problem` on the exact candle, and the buffer entry
of a CandleText decodes to the same numbers, and PostgreSQL stores the same values, as the entry the
exact candle would have made.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from hypothesis import example, given, settings
from hypothesis import strategies as st

from candles.bars import BarSpec
from collectors.live.buffer import decode_entry, encode_entry, encode_text_entry
from collectors.live.ingest import candle_problem, candle_text_problem
from collectors.okx.candle_rows import CandleText, parse_candle_text
from collectors.okx.protocol import ProtocolError

MINUTE = BarSpec("1m", 60, 0, 0, 0)
T0_MS = 1_705_431_600_000
NOW_MS = T0_MS + 30_000

# Few values in many spellings, so that equal values spelt differently, and values a float cannot tell
# apart, meet in one candle often.
SPELLINGS = st.sampled_from([
    "0.1", "0.10", "1E-1", "0.1000000000000000001", "0.0999999999999999999", "1E-8", "0.00000001", "1e-8",
    "0", "-0", "0.0", "-0.0", "0E-8", "43000", "43000.0", "4.3E+4", "4.3e4", "43000.00000000000001", "-1",
    "1", "-0.00000001", "1E+400", "9" * 40, "9" * 39 + ".99",
])
DIGITS = st.text("0123456789", min_size=1, max_size=25)
PLAIN = st.builds(lambda sign, whole, fraction: f"{sign}{whole}{fraction}", st.sampled_from(["", "-"]), DIGITS,
                  st.sampled_from([""]) | DIGITS.map(lambda d: "." + d))
NUMBER = SPELLINGS | PLAIN


def candle_texts() -> st.SearchStrategy[CandleText]:
    def build(numbers, quote, confirm, open_ms):
        row = [str(open_ms), *numbers, *quote, confirm]
        try:
            return parse_candle_text("BTC-USDT", "1m", row, "raw")
        except ProtocolError:
            return None

    return st.builds(
        build, st.lists(NUMBER, min_size=6, max_size=6), st.sampled_from([[""]]) | st.lists(NUMBER, min_size=1,
                                                                                               max_size=1),
        st.sampled_from(["0", "1"]), st.sampled_from([T0_MS, T0_MS + 1, T0_MS + 3_600_000, NOW_MS + 10_000]),
    ).filter(lambda candle: candle is not None)


@settings(max_examples=2000, deadline=None)
@given(candle_texts())
@example(CandleText("BTC-USDT", "1m", T0_MS, "0.1", "0.1", "0.1000000000000000001", "0.1", "1", "1", None, True))
@example(CandleText("BTC-USDT", "1m", T0_MS, "0.1000000000000000001", "0.1", "0.1", "0.1", "1", "1", None, True))
@example(CandleText("BTC-USDT", "1m", T0_MS, "1E-8", "0.00000001", "1e-8", "1E-8", "-0", "-0.0", "0E-8", True))
@example(CandleText("BTC-USDT", "1m", T0_MS, "1", "1", "1", "1", "1", "-0.00000001", None, True))
def test_the_text_check_gives_the_verdict_of_the_exact_check(candle):
    for spec in (MINUTE, None):
        assert candle_text_problem(candle, spec, NOW_MS) == candle_problem(candle.exact(), spec, NOW_MS)


@settings(max_examples=500, deadline=None)
@given(candle_texts())
def test_a_text_entry_decodes_to_the_numbers_of_the_exact_entry(candle):
    text_field, text_value = encode_text_entry(candle, 1234)
    exact_field, exact_value = encode_entry(candle.exact(), 1234)
    assert text_field == exact_field
    from_text, from_exact = decode_entry(text_field, text_value), decode_entry(exact_field, exact_value)
    assert from_text[:3] == from_exact[:3]
    assert from_text[10:] == from_exact[10:]
    for kept, normalized in zip(from_text[3:10], from_exact[3:10], strict=True):
        if normalized is None:
            assert kept is None
        else:
            assert Decimal(kept).as_tuple() == Decimal(normalized).as_tuple()


@pytest.mark.django_db
def test_postgresql_stores_a_kept_okx_string_as_the_same_numeric_as_decimals_spelling():
    spellings = ["0.00000001", "1e-8", "1E-8", "43000.0", "4.3e4", "-0", "-0.0", "0E-8", "5.", ".5", "-.5",
                 "0.1000000000000000001", "1" * 60, "12345678901234567890.123456789012345678901234567890",
                 "1e-300", "7E+2"]
    with connection.cursor() as cursor:
        for spelling in spellings:
            normalized = str(Decimal(spelling))
            cursor.execute("SELECT %s::numeric::text, %s::numeric::text", [spelling, normalized])
            kept, exact = cursor.fetchone()
            assert kept == exact, spelling
