"""OKX REST answers (/api/v5/...): pure functions from query parameters to (HTTP status, JSON body).

Parameter errors (51000 bad parameter, 51001 unknown instrument) answer HTTP 400, always with `data: []`.
Trade, mark-price and index candles share one page function: they differ in their ids, bars, `limit` cap and
row width (9 fields for trades, 6 for marks and indices).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import orjson

from .bars import Bar
from .decimals import unit_string
from .instruments import SWAP_LOT_DECIMALS, Instrument, stable_hash
from .market import ONE_SECOND_HISTORY_MS, Market, substeps_of
from .reference import INDEX, MARK, TRADE, RowOf

CANDLES_PATH = "/api/v5/market/candles"
HISTORY_PATH = "/api/v5/market/history-candles"
MARK_CANDLES_PATH = "/api/v5/market/mark-price-candles"
HISTORY_MARK_PATH = "/api/v5/market/history-mark-price-candles"
INDEX_CANDLES_PATH = "/api/v5/market/index-candles"
HISTORY_INDEX_PATH = "/api/v5/market/history-index-candles"
INDEX_TICKERS_PATH = "/api/v5/market/index-tickers"
INSTRUMENTS_PATH = "/api/v5/public/instruments"

RECENT_CANDLES = 1440  # /market/candles serves the latest 1,440 candles of a bar
DEFAULT_LIMIT = 100
MAX_LIMIT = 300
MAX_REFERENCE_LIMIT = 100  # mark-price and index candles
NOT_ON_CANDLES = frozenset({"1s", "5D", "5Dutc"})
NOT_ON_HISTORY = frozenset({"5D", "5Dutc"})
NOT_ON_HISTORY_MARK = NOT_ON_CANDLES | {"3M", "3Mutc"}  # its documented bars stop at 1M/1Mutc
INST_TYPES = frozenset({"SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"})
INDEX_QUOTES = frozenset({"USD", "USDT", "USDC", "BTC"})


class CandleEndpoint(NamedTuple):
    price: str  # trade, mark or index
    history: bool  # closed candles from listTime, else the latest 1,440 led by the open one
    refused_bars: frozenset[str]
    max_limit: int


CANDLE_ENDPOINTS: dict[str, CandleEndpoint] = {
    CANDLES_PATH: CandleEndpoint(TRADE, False, NOT_ON_CANDLES, MAX_LIMIT),
    HISTORY_PATH: CandleEndpoint(TRADE, True, NOT_ON_HISTORY, MAX_LIMIT),
    MARK_CANDLES_PATH: CandleEndpoint(MARK, False, NOT_ON_CANDLES, MAX_REFERENCE_LIMIT),
    HISTORY_MARK_PATH: CandleEndpoint(MARK, True, NOT_ON_HISTORY_MARK, MAX_REFERENCE_LIMIT),
    INDEX_CANDLES_PATH: CandleEndpoint(INDEX, False, NOT_ON_CANDLES, MAX_REFERENCE_LIMIT),
    HISTORY_INDEX_PATH: CandleEndpoint(INDEX, True, NOT_ON_CANDLES, MAX_REFERENCE_LIMIT),
}

Answer = tuple[int, bytes]

TOO_MANY_REQUESTS: Answer = (429, orjson.dumps({"msg": "Too Many Requests", "code": "50011"}))


def ok(data: list[Any]) -> Answer:
    return 200, orjson.dumps({"code": "0", "msg": "", "data": data})


def error(code: str, msg: str, status: int = 400) -> Answer:
    return status, orjson.dumps({"code": code, "msg": msg, "data": []})


def parameter_error(name: str) -> Answer:
    return error("51000", f"Parameter {name} error")


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    """The parameter as an int, None when absent; ValueError when not a whole number."""
    value = query.get(name, "")
    if value == "":
        return None
    if not value.isdigit():
        raise ValueError(name)
    return int(value)


def candles(
    market: Market, query: Mapping[str, str], now_ms: int, *, history: bool, price: str = TRADE,
) -> Answer:
    """/market/candles (history=False) or /market/history-candles (history=True); rows newest first.
    With price="mark" or "index": the mark-price or index endpoints of the same kind."""
    for endpoint in CANDLE_ENDPOINTS.values():
        if (endpoint.price, endpoint.history) == (price, history):
            return candle_page(market, query, now_ms, endpoint)
    raise ValueError(f"no candle endpoint for price {price!r}")


def candle_page(market: Market, query: Mapping[str, str], now_ms: int, endpoint: CandleEndpoint) -> Answer:
    """One page of any candle endpoint, newest first; `after` and `before` exclusive."""
    inst_id = query.get("instId", "")
    if not inst_id:
        return parameter_error("instId")
    bar_name = query.get("bar", "") or "1m"
    bar = market.bar(bar_name)
    if bar is None or bar_name in endpoint.refused_bars:
        return parameter_error("bar")
    try:
        after, before, limit = _int_param(query, "after"), _int_param(query, "before"), _int_param(query, "limit")
    except ValueError as exc:
        return parameter_error(str(exc))
    if limit is None:
        limit = DEFAULT_LIMIT
    if limit < 1:
        return parameter_error("limit")
    limit = min(limit, endpoint.max_limit)
    try:
        _, lowest, row_of = market.series(inst_id, bar_name, endpoint.price)
    except KeyError:  # unknown, or a spot pair on the mark endpoints, or an instrument on the index ones
        return error("51001", "Instrument ID does not exist")
    return ok(list(_rows(market, row_of, lowest, bar, now_ms, history=endpoint.history, after=after,
                         before=before, limit=limit)))


def _rows(
    market: Market, row_of: RowOf, lowest: int, bar: Bar, now_ms: int, *, history: bool, after: int | None,
    before: int | None, limit: int,
) -> Iterator[list[str]]:
    current_open = bar.floor(now_ms)
    if history:
        newest = bar.prev_open(current_open)  # closed candles only
        if bar.name == "1s":
            lowest = max(lowest, bar.floor(now_ms - ONE_SECOND_HISTORY_MS))
    else:
        newest = current_open
        lowest = max(lowest, _oldest_recent(bar, current_open))
    open_ms = newest if after is None else min(newest, bar.floor(after - 1))  # ts < after
    count = 0
    while count < limit and open_ms >= lowest and (before is None or open_ms > before):  # ts > before
        if open_ms == current_open:
            yield row_of(open_ms, market.substep_at(bar, open_ms, now_ms), False)
        else:
            yield row_of(open_ms, substeps_of(bar), True)
        count += 1
        open_ms = bar.prev_open(open_ms)


def _oldest_recent(bar: Bar, current_open: int) -> int:
    if not bar.is_calendar:
        return current_open - (RECENT_CANDLES - 1) * bar.duration_ms
    oldest = current_open
    for _ in range(RECENT_CANDLES - 1):
        oldest = bar.prev_open(oldest)
    return oldest


def instruments(market: Market, query: Mapping[str, str]) -> Answer:
    """/public/instruments: the listed instruments of a type, plus a pre-listed row with an empty instId.

    `uly` or `instFamily` (required for OPTION) narrow contracts to one underlying (the pre-listed row goes)."""
    inst_type = query.get("instType", "")
    if inst_type not in INST_TYPES:
        return parameter_error("instType")
    family = query.get("instFamily") or query.get("uly") or ""
    if inst_type == "OPTION" and not family:
        return parameter_error("instFamily")
    gone = market.gone_at(market.clock())  # expired futures and delisted instruments are not listed
    rows = [instrument_row(inst) for inst in list(market.instruments.values())
            if inst.inst_type == inst_type and inst.inst_id not in gone]
    if family and inst_type != "SPOT":
        rows = [row for row in rows if row["instFamily"] == family]
    elif inst_type in ("SPOT", "SWAP"):
        rows.append(_pre_listed_row(inst_type, len(market.instruments)))
    return ok(rows)


def index_tickers(market: Market, query: Mapping[str, str], now_ms: int) -> Answer:
    """/market/index-tickers: the indices quoted in `quoteCcy` (USD, USDT, USDC or BTC), or the one `instId`."""
    quote, inst_id = query.get("quoteCcy", ""), query.get("instId", "")
    if not quote and not inst_id:
        return parameter_error("quoteCcy")
    if quote and quote not in INDEX_QUOTES:
        return parameter_error("quoteCcy")
    indices = market.indices
    if inst_id:
        if inst_id not in indices:
            return error("51001", "Instrument ID does not exist")
        chosen = [inst_id] if not quote or indices[inst_id].quote_ccy == quote else []
    else:
        chosen = [index.inst_id for index in list(indices.values()) if index.quote_ccy == quote]
    return ok([market.reference.index_ticker(index_id, now_ms) for index_id in chosen])


def instrument_row(inst: Instrument) -> dict[str, Any]:
    # Key order and value types follow samples/rest_candles.json (instIdCode is a number there).
    contract = inst.is_contract
    family = f"{inst.base_ccy}-{inst.quote_ccy}" if contract else ""
    if inst.is_inverse:
        # Coin-margined: settled in the base currency, a contract is worth a fixed amount of USD.
        settle, ct_val, ct_val_ccy, ct_type = inst.base_ccy, "100" if inst.base_ccy == "BTC" else "10", "USD", "inverse"
    elif contract:
        settle, ct_val, ct_val_ccy, ct_type = inst.quote_ccy, unit_string(inst.ct_val_exponent), inst.base_ccy, "linear"
    else:
        settle = ct_val = ct_val_ccy = ct_type = ""
    lot_decimals = SWAP_LOT_DECIMALS if contract else inst.lot_decimals
    return {
        "instType": inst.inst_type,
        "instId": inst.inst_id,
        "baseCcy": "" if contract else inst.base_ccy,
        "quoteCcy": "" if contract else inst.quote_ccy,
        "settleCcy": settle,
        "instFamily": family,
        "uly": family,
        "ctVal": ct_val,
        "ctMult": "1" if contract else "",
        "ctValCcy": ct_val_ccy,
        "ctType": ct_type,
        "listTime": str(inst.list_time_ms),
        "expTime": "" if inst.exp_time_ms is None else str(inst.exp_time_ms),
        "tickSz": unit_string(-inst.tick_decimals),
        "lotSz": unit_string(-lot_decimals),
        "minSz": unit_string(-lot_decimals + (0 if contract else 3)),
        "state": inst.state,
        "ruleType": "normal",
        "instIdCode": 1_000_000_000 + stable_hash("instIdCode", inst.inst_id) % 1_000_000_000,
    }


def _pre_listed_row(inst_type: str, index: int) -> dict[str, Any]:
    # OKX lists instruments before their launch with most fields empty; clients must skip them.
    row: dict[str, Any] = dict.fromkeys(_instrument_row_keys(), "")
    row.update(instType=inst_type, state="preopen", ruleType="pre_market", instIdCode=2_000_000_000 + index)
    return row


def _instrument_row_keys() -> list[str]:
    return [
        "instType", "instId", "baseCcy", "quoteCcy", "settleCcy", "instFamily", "uly", "ctVal", "ctMult", "ctValCcy",
        "ctType", "listTime", "expTime", "tickSz", "lotSz", "minSz", "state", "ruleType", "instIdCode",
    ]
