"""Instrument and index rows from OKX's REST lists (/public/instruments, /market/index-tickers), parsed: numbers
exact, times as epoch milliseconds, empty strings as None, rows without an instId skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

# The REST client's logger: these lines were its own before the parsing had a module.
logger = logging.getLogger("collectors.okx.rest")


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    inst_type: str
    inst_id: str
    base_ccy: str | None
    quote_ccy: str | None
    settle_ccy: str | None
    inst_family: str | None
    tick_size: Decimal | None
    lot_size: Decimal | None
    list_time_ms: int | None
    exp_time_ms: int | None
    state: str


@dataclass(frozen=True, slots=True)
class IndexTicker:
    """One row of /market/index-tickers: an index (the `instId` of index candles) and its latest price."""

    inst_id: str
    idx_px: Decimal | None
    ts_ms: int | None




def text_field(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if type(value) is str and value != "" else None


def decimal_field(row: dict[str, Any], key: str) -> Decimal | None:
    value = text_field(row, key)
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        # One odd field should not drop the instrument (a sync would then call it delisted).
        logger.warning("instrument %s: %s is not a number: %r", row.get("instId"), key, value)
        return None
    return number


def epoch_ms_field(row: dict[str, Any], key: str) -> int | None:
    value = text_field(row, key)
    if value is None:
        return None
    if not value.isdigit():
        logger.warning("instrument %s: %s is not epoch milliseconds: %r", row.get("instId"), key, value)
        return None
    return int(value)


def parse_instrument(row: dict[str, Any], requested_type: str) -> InstrumentInfo | None:
    inst_id = text_field(row, "instId")
    if inst_id is None:
        return None  # pre-listed instruments may carry no instId yet
    return InstrumentInfo(
        inst_type=text_field(row, "instType") or requested_type,
        inst_id=inst_id,
        base_ccy=text_field(row, "baseCcy"),
        quote_ccy=text_field(row, "quoteCcy"),
        settle_ccy=text_field(row, "settleCcy"),
        inst_family=text_field(row, "instFamily"),
        tick_size=decimal_field(row, "tickSz"),
        lot_size=decimal_field(row, "lotSz"),
        list_time_ms=epoch_ms_field(row, "listTime"),
        exp_time_ms=epoch_ms_field(row, "expTime"),
        state=text_field(row, "state") or "",
    )
