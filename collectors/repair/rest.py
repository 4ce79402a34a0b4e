"""What the repair plane does with REST's answers: closed candles become rows for the write path, and rows the
database refuses become dead letters. Clients come from the one access point, collectors.shared.rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from candles.storage import CandleRow, UpsertResult
from collectors.live.buffer import dead_letter_record
from collectors.okx.rest import Candle
from okxproject.keys import Keys

DEAD_LETTER_MAX = 100_000
# OKX error codes that no retry can fix: bad parameter, instrument doesn't exist. A PermanentError without a
# code (a bad URL) is our configuration, not the gap's fault: the gap stays open.
REFUSED_CODES = frozenset({"51000", "51001"})


def rest_rows(updates: Sequence[Candle], version: int) -> list[CandleRow]:
    """Closed candles only: REST caches lag, the open candle comes from the WebSocket. Each row keeps its candle's
    price kind (mark-price and index ones without volumes), so it is written to that series' row."""
    return [CandleRow.of(u, source="rest", version=version) for u in updates if u.confirmed]


def dead_letter_rejected(redis: Any, keys: Keys, result: UpsertResult) -> None:
    """Rows REST returned that the database refused go to the dead-letter list with their reason."""
    if not result.rejected:
        return
    records = [
        dead_letter_record(f"REST row refused: {i.reason}", str(list(i.row)),
                           f"{i.row.inst_id}|{_bar_part(i.row.bar, i.row.price)}")
        for i in result.rejected
    ]
    pipe = redis.pipeline(transaction=False)
    pipe.lpush(keys.dead_letters, *records)
    pipe.ltrim(keys.dead_letters, 0, DEAD_LETTER_MAX - 1)
    pipe.hincrby(keys.counters, "dead_letters", len(records))
    pipe.execute()


def _bar_part(bar: str, price: str) -> str:
    """A series' bar as the buffer's fields name it (`mark:1m` for a mark series; `1m` for trades)."""
    return bar if price == "trade" else f"{price}:{bar}"
