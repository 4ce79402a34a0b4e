"""`CandleRow.of`: the write path's row of a candle from the OKX library, with its source and version."""

from __future__ import annotations

from decimal import Decimal

from candles.storage import CandleRow
from collectors.okx.candle_rows import CandleText, CandleUpdate


def test_a_text_candle_becomes_a_row_with_its_texts_source_and_version():
    candle = CandleText("BTC-USDT", "1m", 1705431600000, "43000.10", "43010", "42990.5", "43005", "1.5", "64500",
                        None, True)
    row = CandleRow.of(candle, source="rest", version=7)
    assert row == CandleRow("BTC-USDT", "1m", 1705431600000, "43000.10", "43010", "42990.5", "43005", "1.5",
                            "64500", None, True, "rest", 7, "trade")


def test_a_mark_price_candle_keeps_its_kind_and_its_missing_volumes():
    candle = CandleUpdate("BTC-USDT-SWAP", "1m", 1705431600000, Decimal("1"), Decimal("2"), Decimal("0.5"),
                          Decimal("1.5"), None, None, None, False, "mark")
    row = CandleRow.of(candle, source="ws", version=9)
    assert (row.price, row.vol, row.vol_ccy, row.confirmed, row.source, row.version) == (
        "mark", None, None, False, "ws", 9)
    assert row[3:7] == (Decimal("1"), Decimal("2"), Decimal("0.5"), Decimal("1.5"))
