"""PostgreSQL's figures of the status surfaces, sent together: one round trip for all of GET /status.

Each figure is a `Statement` (SQL, parameters, how to read its rows). `statements_run` joins several into one
query string, which PostgreSQL runs in order and answers with one result per statement, after
`SET LOCAL statement_timeout`, so a stalled database costs each figure at most STATEMENT_TIMEOUT_MS. Sent one
by one through the ORM, the same figures took thirteen round trips (statement timeouts and savepoints of two
transactions included): on a busy machine each one waits to be scheduled twice.

What each statement reads is bounded by what is wrong, not by how many series exist, except the two counts
that must be exact: every subscription row once (a plain count, the cheapest pass PostgreSQL has), and the
unfinished, unfillable and expired gaps along their indexes. Filled gaps, which only accumulate, are the table's
estimate minus the others above GAPS_COUNTED_EXACTLY rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from django.db import connection, transaction

from candles.bars import BarSpec
from candles.models import GapState, RepairPriority, SubscriptionStatus, Timeframe
from collectors.api.subscriptions import STATEMENT_TIMEOUT_MS

T = TypeVar("T")

PRIORITY_NAMES = {RepairPriority.CONFIRM: "confirm", RepairPriority.OUTAGE: "outage",
                  RepairPriority.HISTORY: "history", RepairPriority.OLD: "old"}
# Above this many gap rows (PostgreSQL's estimate), `filled` is estimated rather than counted: filled gaps stay
# as the record and only accumulate, and counting them is a pass over the table on every request.
GAPS_COUNTED_EXACTLY = 50_000
# Active states other than live: few in a working system, so they are counted along the (is_active, status)
# index and live is the rest of the active ones.
NOT_LIVE = tuple(s for s in SubscriptionStatus.values if s != SubscriptionStatus.LIVE)


@dataclass(frozen=True, slots=True)
class Statement(Generic[T]):
    sql: str
    params: Sequence[Any]
    read: Callable[[list[tuple]], T]


def statements_run(*statements: Statement) -> list[Any]:
    """Each statement's rows as its `read` makes them, in order, in one round trip. Raises DatabaseError (a
    statement timing out included)."""
    sql = ";\n".join([f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}", *(s.sql for s in statements)])
    params = [param for statement in statements for param in statement.params]
    results = []
    # Outside a transaction PostgreSQL runs one query string as one implicit transaction (SET LOCAL holds for
    # all of it, a failure rolls it back), so no BEGIN and COMMIT round trips are needed; inside a caller's
    # transaction a savepoint keeps a failure from aborting the caller's work.
    block = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with block, connection.cursor() as cursor:
        cursor.execute(sql, params)  # positioned on the SET's result; each nextset() moves to the next statement
        for statement in statements:
            cursor.nextset()
            results.append(statement.read(cursor.fetchall()))
    return results


# --- subscriptions -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionSummary:
    """Active subscriptions by status (only statuses some have), and a few of the troubled ones."""

    by_status: dict[str, int]
    troubled: list[str] = field(default_factory=list)
    paused: int = 0

    @property
    def active(self) -> int:
        return sum(self.by_status.values())


def _read_counts(rows: list[tuple]) -> tuple[dict[str, int], int]:
    by_status: dict[str, int] = {}
    active = paused = 0
    for status, n, m in rows:  # UNION ALL promises no order: the totals are the row without a status
        if status is None:
            active, paused = n, m
        elif n:
            by_status[status] = n
    live = active - sum(by_status.values())
    return ({SubscriptionStatus.LIVE: live} if live else {}) | by_status, paused


SUBSCRIPTION_COUNTS = Statement(
    "SELECT NULL, count(*) FILTER (WHERE is_active), count(*) FILTER (WHERE NOT is_active) "
    "FROM candles_subscription "
    "UNION ALL "
    "SELECT status, count(*), 0 FROM candles_subscription "
    f"WHERE is_active AND status IN ({', '.join(['%s'] * len(NOT_LIVE))}) GROUP BY status",
    NOT_LIVE, _read_counts)


@dataclass(frozen=True, slots=True)
class TroubledRow:
    status: str
    symbol: str
    timeframe: str
    status_message: str
    display_order: int
    price: str = "trade"

    @property
    def series(self) -> str:
        """`BTC-USDT 1m`, or `BTC-USDT-SWAP 1m mark` for a series of another price kind."""
        return series_name(self.symbol, self.timeframe, self.price)


def series_name(symbol: str, timeframe: str, price: str = "trade") -> str:
    """A series as people read it: `BTC-USDT 1m`, `BTC-USDT-SWAP 1m mark`, `BTC-USD 1H index`."""
    return f"{symbol} {timeframe}" if price == "trade" else f"{symbol} {timeframe} {price}"


def troubled_examples(statuses: Sequence[str], limit: int) -> Statement[list[TroubledRow]]:
    """The first `limit` active subscriptions of each status, all of them by symbol and bar (the model's order,
    in the database's collation), so the first few of several statuses are the first rows."""
    one = ("(SELECT s.status, i.inst_id, t.code, s.status_message, t.display_order, i.price "
           "FROM candles_subscription s JOIN candles_instrument i ON i.id = s.instrument_id "
           "JOIN candles_timeframe t ON t.id = s.timeframe_id "
           "WHERE s.is_active AND s.status = %s ORDER BY i.inst_id, t.display_order LIMIT %s)")
    return Statement(f"SELECT * FROM ({' UNION ALL '.join([one] * len(statuses))}) AS troubled "
                     "ORDER BY inst_id, display_order",
                     [param for status in statuses for param in (status, limit)],
                     lambda rows: [TroubledRow(*row) for row in rows])


def summary_of(counts: tuple[dict[str, int], int], examples: list[TroubledRow], limit: int) -> SubscriptionSummary:
    """The summary from SUBSCRIPTION_COUNTS and the troubled examples (in their order)."""
    by_status, paused = counts
    return SubscriptionSummary(by_status, [f"{r.series} {r.status}" for r in examples[:limit]], paused)


# --- gaps --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GapSummary:
    open: int
    filling: int
    filled: int
    unfillable: int
    missing_candles: int  # in open and filling gaps
    # Unfinished (open and filling) gaps by repair priority: {"confirm": {"gaps", "missing_candles"}, ...}
    unfinished_by_priority: dict[str, dict[str, int]] = field(default_factory=dict)
    expired: int = 0  # behind their bar's retention horizon: never to be filled


# Unfinished gaps along their partial index; unfillable and expired ones along the state index; filled ones counted only
# while the table is small (CASE runs its subquery only when the branch is taken).
UNFINISHED_GAPS = Statement(
    "SELECT state, priority, count(*), coalesce(sum(missing), 0) FROM candles_gap "
    "WHERE state IN (%s, %s) GROUP BY state, priority",
    (GapState.OPEN, GapState.FILLING), lambda rows: rows)
OTHER_GAPS = Statement(
    "SELECT reltuples::bigint, (SELECT count(*) FROM candles_gap WHERE state = %s), "
    "(SELECT count(*) FROM candles_gap WHERE state = %s), "
    "CASE WHEN reltuples <= %s THEN (SELECT count(*) FROM candles_gap WHERE state = %s) END "
    "FROM pg_class WHERE oid = 'candles_gap'::regclass",
    (GapState.UNFILLABLE, GapState.EXPIRED, GAPS_COUNTED_EXACTLY, GapState.FILLED), lambda rows: rows[0])


def gaps_of(unfinished: list[tuple], other: tuple[int, int, int, int | None]) -> GapSummary:
    """The summary from the rows of UNFINISHED_GAPS and OTHER_GAPS."""
    by_priority = {name: {"gaps": 0, "missing_candles": 0} for name in PRIORITY_NAMES.values()}
    by_state = {GapState.OPEN: 0, GapState.FILLING: 0}
    missing = 0
    for state, priority, n, m in unfinished:
        figures = by_priority.setdefault(PRIORITY_NAMES.get(priority, str(priority)), {"gaps": 0, "missing_candles": 0})
        figures["gaps"] += n
        figures["missing_candles"] += m
        by_state[state] += n
        missing += m
    estimate, unfillable, expired, filled = other
    if filled is None:  # a large table: the estimate counts every row, the exact counts take their part of it
        filled = max(0, estimate - by_state[GapState.OPEN] - by_state[GapState.FILLING] - unfillable - expired)
    return GapSummary(by_state[GapState.OPEN], by_state[GapState.FILLING], filled, unfillable, missing, by_priority,
                      expired)


# --- bars --------------------------------------------------------------------------------------------------


def _read_specs(rows: list[tuple]) -> dict[str, BarSpec]:
    attnames = [f.attname for f in Timeframe._meta.concrete_fields]
    timeframes = (Timeframe.from_db(connection.alias, attnames, row) for row in rows)
    return {tf.code: tf.spec for tf in timeframes}


BAR_SPECS = Statement(
    f"SELECT {', '.join(f.column for f in Timeframe._meta.concrete_fields)} FROM candles_timeframe", (), _read_specs)
