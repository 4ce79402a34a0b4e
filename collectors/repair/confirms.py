"""Closed candles stored without their confirm push: the first thing the repair scheduler spends REST on.

OKX does not promise a confirm push. The collector stores the last version it saw, unconfirmed; once a later
candle opens, that version is final only when REST says so. The queue of such candles is the database itself:
a partial index (`candle_unconfirmed_idx`) holds only unconfirmed rows, so reading the queue costs its length
(plus the open candle of each series), never a pass over the stored candles. Nothing is lost when Redis or
a collector is: the rows are there.

Candles REST did not have yet (its caches lag) wait RETRY_AFTER in a Redis sorted set before they are asked
for again; those still unconfirmed GIVE_UP_AFTER after their close are left as stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.models import RepairPriority, Timeframe
from collectors.okx.protocol import TRADE, TRADE_ONLY_BARS
from collectors.repair.reach import PAGE_CANDLES, PRICE_LANES, lane_for, rest_serves
from okxproject.keys import Keys, candle_field

# The flush writes a confirm push about a second after it arrived: until then the candle looks unconfirmed.
CONFIRM_SETTLE = timedelta(seconds=3)
GIVE_UP_AFTER = timedelta(hours=24)
RETRY_AFTER = timedelta(seconds=20)
# Candles read per bar and run, the newest first. A run repairs a few hundred units at most, so it reads the newest
# READ_FIRST of a bar, which make at least that many units when the backlog is spread over many series (one unit per
# series and page), and only a bar whose read made fewer units than the run can carry is read again, READ_GROWTH
# times deeper, up to READ_LIMIT. What is not read waits in the index for a later run; the report counts it.
READ_FIRST = 1_000
READ_GROWTH = 8
READ_LIMIT = 20_000

# Newest first, through the partial index of unconfirmed rows; only series someone collects. Every price kind:
# the instrument row says which (docs/price-kinds.md), and so which endpoints repair it.
_UNCONFIRMED = """
SELECT c.instrument_id, i.inst_id, i.price, (extract(epoch FROM c.open_time) * 1000)::bigint
FROM candles_candle c JOIN candles_instrument i ON i.id = c.instrument_id
WHERE c.timeframe_id = %(timeframe)s AND NOT c.confirmed
  AND c.open_time >= %(since)s AND c.open_time <= %(last)s
  AND EXISTS (SELECT 1 FROM candles_subscription s
              WHERE s.instrument_id = c.instrument_id AND s.timeframe_id = c.timeframe_id AND s.is_active)
ORDER BY c.open_time DESC
LIMIT %(limit)s
"""

_UNCONFIRMED_COUNT = """
SELECT count(*)
FROM candles_candle c
WHERE c.timeframe_id = %(timeframe)s AND NOT c.confirmed
  AND c.open_time >= %(since)s AND c.open_time <= %(last)s
  AND EXISTS (SELECT 1 FROM candles_subscription s
              WHERE s.instrument_id = c.instrument_id AND s.timeframe_id = c.timeframe_id AND s.is_active)
"""


@dataclass(frozen=True, slots=True)
class Unit:
    """One REST request's worth of repair: a range of one series, and why."""

    priority: int
    lane: str
    newest_ms: int  # the newest open time it repairs: the order within a priority
    inst_id: str
    bar: str
    start_ms: int
    end_ms: int
    wanted: tuple[int, ...] = ()  # open times of unconfirmed candles it confirms
    gap_ids: tuple[int, ...] = ()  # gaps it fills
    missing: int = 0  # candles it repairs
    # Which of the instrument's series (trade, mark, index): the endpoints it is fetched from and the rows it
    # writes. An inst_id alone names two series (a swap's trades and its mark; a spot pair and its index).
    price: str = TRADE
    instrument_id: int | None = None  # the Instrument row, when the unit's source knows it

    @property
    def order(self) -> tuple[int, int]:
        return (self.priority, -self.newest_ms)

    @property
    def series(self) -> tuple[str, str, str]:
        return (self.inst_id, self.bar, self.price)

    def merged(self, other: Unit) -> Unit:
        """One request for both: the span of the two, in the place of the first (the higher in the order)."""
        return replace(self, start_ms=min(self.start_ms, other.start_ms), end_ms=max(self.end_ms, other.end_ms),
                       wanted=tuple(sorted(set(self.wanted) | set(other.wanted))),
                       gap_ids=self.gap_ids + other.gap_ids, missing=self.missing + other.missing,
                       instrument_id=self.instrument_id or other.instrument_id)


@dataclass
class ConfirmBacklog:
    units: list[Unit] = field(default_factory=list)
    candles: int = 0
    # Units the candles not read this run would make, estimated from those read (the report's count).
    unread_units: int = 0


def _window(timeframe: Timeframe, now: datetime) -> tuple[datetime, datetime]:
    spec = timeframe.spec
    last = spec.last_closed(datetime_to_ms(now - CONFIRM_SETTLE))
    return now - GIVE_UP_AFTER, ms_to_datetime(last)


def confirm_backlog(*, now: datetime, redis: Any, keys: Keys, units_wanted: int = READ_LIMIT) -> ConfirmBacklog:
    """Closed unconfirmed candles of active series as page-sized units, newest first per series, and how many
    there are. Each bar is read from its newest candle until it makes `units_wanted` units (what the run can
    carry), so a run's cost follows its work, not the backlog. Candles waiting out RETRY_AFTER are counted but
    not handed out."""
    waiting = _waiting(redis, keys)
    backlog = ConfirmBacklog()
    now_ms = datetime_to_ms(now)
    for timeframe in Timeframe.objects.all():
        if not rest_serves(timeframe):
            continue
        since, last = _window(timeframe, now)
        params = {"timeframe": timeframe.pk, "since": since, "last": last, "limit": min(READ_FIRST, READ_LIMIT)}
        with connection.cursor() as cursor:
            while True:
                cursor.execute(_UNCONFIRMED, params)
                rows = cursor.fetchall()
                units = _units(timeframe, rows, waiting, now_ms)
                if len(rows) < params["limit"] or len(units) >= units_wanted or params["limit"] >= READ_LIMIT:
                    break
                params["limit"] = min(params["limit"] * READ_GROWTH, READ_LIMIT)
            candles = len(rows)
            if len(rows) == params["limit"]:
                cursor.execute(_UNCONFIRMED_COUNT, params)
                candles = cursor.fetchone()[0]
        backlog.candles += candles
        backlog.units.extend(units)
        if candles > len(rows):
            backlog.unread_units += round(len(units) * (candles - len(rows)) / len(rows))
    backlog.units.sort(key=lambda unit: unit.order)
    return backlog


def _units(timeframe: Timeframe, rows: Sequence[tuple[int, str, str, int]], waiting: set[str],
           now_ms: int) -> list[Unit]:
    by_series: dict[tuple[int, str, str], list[int]] = {}
    code = timeframe.code
    for instrument_id, inst_id, price, open_ms in rows:
        if price != TRADE and code in TRADE_ONLY_BARS:
            continue  # no such candles at OKX: nothing to ask for
        if not waiting or candle_field(inst_id, code, open_ms, price) not in waiting:
            by_series.setdefault((instrument_id, inst_id, price), []).append(open_ms)
    spec = timeframe.spec
    return [unit for (instrument_id, inst_id, price), open_times in by_series.items()
            for unit in confirm_units(spec, inst_id, open_times, now_ms, price=price, instrument_id=instrument_id)]


def confirm_units(spec: BarSpec, inst_id: str, open_times: Sequence[int], now_ms: int, *, price: str = TRADE,
                  instrument_id: int | None = None) -> Iterator[Unit]:
    """The open times of one series grouped into REST pages, the newest first: a request ending at the newest
    candle repairs every other one within a page below it. `price` picks the endpoints (and so the page sizes)."""
    history_page = PAGE_CANDLES[PRICE_LANES[price][1]]
    pending = sorted(set(open_times), reverse=True)
    while pending:
        newest = pending[0]
        lane = lane_for(spec, spec.advance(newest, -(history_page - 1)), now_ms, price)
        size = PAGE_CANDLES[lane]
        lowest = spec.advance(newest, -(size - 1))
        group = [ms for ms in pending if ms >= lowest]
        pending = pending[len(group):]
        yield Unit(RepairPriority.CONFIRM, lane, newest, inst_id, spec.code, group[-1], newest,
                   wanted=tuple(sorted(group)), missing=len(group), price=price, instrument_id=instrument_id)


def _waiting(redis: Any, keys: Keys) -> set[str]:
    """Candles REST lacked at their last request, still within RETRY_AFTER of it."""
    now_s = time.time()
    key = keys.repair_retry
    pipe = redis.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now_s)
    pipe.zrange(key, 0, -1)
    _, members = pipe.execute()
    return {m.decode() if isinstance(m, bytes) else m for m in members}


def confirms_retry_later(*, redis: Any, keys: Keys, inst_id: str, bar: str, open_times: Sequence[int],
                         price: str = TRADE, after: timedelta = RETRY_AFTER) -> None:
    """Park candles REST did not return confirmed, so the next runs spend the budget elsewhere first. Members are
    the buffer's candle fields (`inst|mark:1m|open_ms` for a mark candle): one series' never parks another's.
    `after`: how long they wait (a confirm waiting for its series to be live again waits less)."""
    if not open_times:
        return
    until = time.time() + after.total_seconds()
    redis.zadd(keys.repair_retry, {candle_field(inst_id, bar, ms, price): until for ms in open_times})
