"""The repair scheduler: one run spends every OKX REST candle budget, in priority order, one page per request.

Work comes as units of one request each (`confirms.Unit`): closed candles whose confirm push never came
(newest first), then unfinished gaps by priority (outages, requested history, old holes; the most recent
first within each). Each unit belongs to the endpoint that serves it: trade candles of `1s` and anything older
than the latest 1,440 candles to /history-candles, the rest to /candles; mark-price and index candles likewise to
their own pair of endpoints (docs/price-kinds.md), each with its own budget (`reach.LANES`). Each endpoint has a
lane of worker threads taking units in order; the Redis-shared rate limiter sets the pace, so every worker of
every host together stays inside OKX's budgets and gets no 429.

One run at a time (a Redis lock); a run ends at its deadline, and the next one starts again from the top of
the order. Safe to run twice: gaps are claimed atomically, a confirm repair is a rewrite of the same candle
through the version rule.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.gaps import FILLING_STALE_AFTER, RETRY_BACKOFF
from candles.models import Instrument, RepairPriority, Timeframe
from candles.storage import candles_upsert
from collectors.live.buffer import receipt_version
from collectors.okx.rest import PermanentError, UnsupportedBar
from collectors.okx.rest_endpoints import RECENT_CANDLES, RECENT_MARGIN
from collectors.repair.confirms import CONFIRM_SETTLE, Unit, confirm_backlog, confirms_retry_later
from collectors.repair.fill import OnWritten, gap_fill, gaps_filled_record, notify_written
from collectors.repair.reach import ENDPOINT_LANES, LANES, PAGE_CANDLES, PRICE_LANES
from collectors.repair.report import BUDGET_PER_S, PRIORITY_NAMES, gap_backlog, repair_report_write
from collectors.repair.rest import dead_letter_rejected, rest_rows
from collectors.shared.connections import pipeline_keys, redis_client
from collectors.shared.locks import RedisLock
from collectors.shared.rest import okx_rest
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

# Requests in flight per lane: enough to keep a budget busy through each request's latency (OKX answers in
# tens of milliseconds; 20 requests/s at 100 ms each need two).
WORKERS_PER_LANE = 3
# Units handed to a lane per run beyond what its budget can serve in the run: a spare for skipped ones.
SPARE_UNITS = 20

# Unfinished gaps of active series whose turn it is, in the scheduler's order, for one endpoint's lane (a price
# kind, latest or older candles): open ones that never failed or waited out their backoff, and `filling` ones
# whose worker died. Calendar bars are on the latest-candles endpoints (1,440 of them are centuries).
_DUE_GAPS = """
SELECT g.id, g.priority, g.start, g."end", g.missing, i.inst_id, t.code, i.id
FROM candles_gap g
JOIN candles_subscription s ON s.id = g.subscription_id
JOIN candles_instrument i ON i.id = s.instrument_id AND i.price = %(price)s
JOIN candles_timeframe t ON t.id = s.timeframe_id
WHERE g.state IN ('open', 'filling') AND s.is_active
  AND ((g.state = 'open' AND (g.attempts = 0
            OR g.updated_at < %(now)s - %(backoff)s * power(2, least(g.attempts, 12) - 1) * interval '1 second'))
       OR (g.state = 'filling' AND g.updated_at < %(stale)s))
  AND (t.code = '1s' OR (t.months = 0 AND g.start < %(now)s - %(recent)s * t.seconds * interval '1 second'))
      = %(history)s
ORDER BY g.priority, g."end" DESC, g.id DESC
LIMIT %(limit)s
"""


# Each lane's price kind and whether it is the older-candles endpoint.
_LANE_KINDS: dict[str, tuple[str, bool]] = {
    lane: (price, lane == pair[1]) for price, pair in PRICE_LANES.items() for lane in pair
}


def gaps_due(*, lane: str, limit: int, now: datetime) -> list[Unit]:
    """The next `limit` gaps of one lane, in priority order, as units."""
    price, history = _LANE_KINDS[lane]
    params = {"now": now, "backoff": RETRY_BACKOFF.total_seconds(), "stale": now - FILLING_STALE_AFTER,
              "recent": RECENT_CANDLES - RECENT_MARGIN, "history": history, "price": price, "limit": limit}
    with connection.cursor() as cursor:
        cursor.execute(_DUE_GAPS, params)
        rows = cursor.fetchall()
    return [Unit(priority, lane, datetime_to_ms(end), inst_id, bar, datetime_to_ms(start), datetime_to_ms(end),
                 gap_ids=(gap_id,), missing=missing, price=price, instrument_id=instrument_id)
            for gap_id, priority, start, end, missing, inst_id, bar, instrument_id in rows]


def gaps_next(*, limit: int, now: datetime | None = None) -> list[int]:
    """Ids of the gaps due now, every lane together, in priority order (for operators' tools)."""
    now = now or timezone.now()
    units = [unit for lane in LANES for unit in gaps_due(lane=lane, limit=limit, now=now)]
    units.sort(key=lambda u: (u.priority, -u.newest_ms, -u.gap_ids[0]))
    return [unit.gap_ids[0] for unit in units][:limit]


@dataclass
class RepairRunResult:
    skipped: bool = False
    units: int = 0
    repaired: Counter = field(default_factory=Counter)  # candles written, by priority
    requests: Counter = field(default_factory=Counter)  # REST requests, by endpoint (its lane's name)
    failures: int = 0
    report: dict[str, Any] | None = None


def repair_run(
    *,
    budget_s: float,
    now: datetime | None = None,
    rest_url: str | None = None,
    redis: Any = None,
    keys: Keys | None = None,
    on_written: OnWritten | None = None,
    workers_per_lane: int = WORKERS_PER_LANE,
) -> RepairRunResult:
    """Repair for up to `budget_s` seconds, highest priority first; write the backlog report. Skipped (at once)
    while another run holds the lock."""
    redis = redis if redis is not None else redis_client()
    keys = keys or pipeline_keys()
    lock = RedisLock(redis, keys.repair_lock, int((budget_s + 60) * 1000))
    if not lock.acquire():
        logger.info("repair: another run is under way; skipped")
        return RepairRunResult(skipped=True)
    try:
        return _run(budget_s=budget_s, now=now or timezone.now(), rest_url=rest_url or settings.OKX_REST_URL,
                    redis=redis, keys=keys, on_written=on_written, workers=workers_per_lane)
    finally:
        lock.release()


def _run(*, budget_s: float, now: datetime, rest_url: str, redis: Any, keys: Keys, on_written: OnWritten | None,
         workers: int) -> RepairRunResult:
    deadline = time.monotonic() + budget_s
    capacity = {lane: int(BUDGET_PER_S[lane] * budget_s) + SPARE_UNITS for lane in LANES}
    confirms = confirm_backlog(now=now, redis=redis, keys=keys, units_wanted=sum(capacity.values()))
    queues: dict[str, deque[Unit]] = {lane: deque() for lane in LANES}
    for unit in confirms.units:
        queues[unit.lane].append(unit)
    for lane, queue in queues.items():
        room = capacity[lane] - len(queue)
        if room > 0:
            queue.extend(gaps_due(lane=lane, limit=room, now=now))
    timeframes = {tf.code: tf for tf in Timeframe.objects.all()}
    specs = {code: tf.spec for code, tf in timeframes.items()}
    queues = {lane: deque(batched(list(queue), PAGE_CANDLES, specs)) for lane, queue in queues.items()}
    # What every unit looks up, read once for the run: a query per unit for them was most of a unit's queries.
    # (Units carry their Instrument row: gaps and unconfirmed candles are read with it.)
    lookups = _Lookups(timeframes)
    queued = {lane: len(queue) for lane, queue in queues.items()}

    result = RepairRunResult()
    tally = threading.Lock()

    def record(priority: int, repaired: int, failed: bool) -> None:
        with tally:
            result.units += 1
            result.repaired[priority] += repaired
            result.failures += failed

    threads = [
        threading.Thread(target=_lane_worker, name=f"repair-{lane}-{n}", daemon=True,
                         args=(queue, deadline, rest_url, redis, keys, on_written, record, result.requests,
                               lookups))
        for lane, queue in queues.items() if queue
        for n in range(min(workers, len(queue)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    confirm_left = max(0, confirms.candles - result.repaired[RepairPriority.CONFIRM])
    try:
        result.report = repair_report_write(
            redis=redis, keys=keys, confirm_candles=confirm_left,
            confirm_units=confirms.unread_units + sum(
                1 for q in queues.values() for u in q if u.priority == RepairPriority.CONFIRM),
            gaps=gap_backlog(), repaired=dict(result.repaired), requests=dict(result.requests),
            queued=queued, left={lane: len(queue) for lane, queue in queues.items()},
        )
    except Exception:
        logger.exception("repair report not written")
    if result.units:
        logger.info("repair: %d units, %s candles repaired, requests %s, %d failed", result.units,
                    {PRIORITY_NAMES[p]: n for p, n in result.repaired.items()}, dict(result.requests), result.failures)
    return result


def _lane_worker(queue: deque[Unit], deadline: float, rest_url: str, redis: Any, keys: Keys,
                 on_written: OnWritten | None, record: Callable[[int, int, bool], None], requests: Counter,
                 lookups: _Lookups) -> None:
    """Take units of one lane in order until the deadline, through one client on this thread's event loop."""
    runner = asyncio.Runner()
    context = okx_rest(keys, rest_url=rest_url, numbers_as_text=True)
    tally: Counter = Counter()  # gaps filled, recorded once at the end: not a Redis call per gap
    client = None
    try:
        client = runner.run(context.__aenter__())

        def fetch(inst_id: str, bar: str, start: int, end: int, price: str) -> list:
            return runner.run(client.candle_range(inst_id, bar, start, end, price=price))
        while time.monotonic() < deadline:
            try:
                unit = queue.popleft()
            except IndexError:
                break
            try:
                repaired = _repair(unit, fetch=fetch, redis=redis, keys=keys, on_written=on_written,
                                   lookups=lookups, tally=tally)
                record(unit.priority, repaired, False)
            except Exception:
                logger.exception("repair of %s %s %d..%d failed; it stays queued", unit.inst_id, unit.bar,
                                 unit.start_ms, unit.end_ms)
                record(unit.priority, 0, True)
    finally:
        if client is not None:
            # By the endpoint each request went to: a latest-candles unit may step onto the older endpoint when
            # its page there comes back empty, and that request drew on the other budget.
            for path, count in client.requests_by_endpoint.items():
                requests[ENDPOINT_LANES.get(path, path)] += count
        gaps_filled_record(redis=redis, keys=keys, count=tally["gaps_filled"])
        try:
            runner.run(context.__aexit__(None, None, None))
        finally:
            runner.close()
            close_old_connections()
            connection.close()  # each thread has its own database connection


# A confirm push that never came is most often the one of the candle open when a connection dropped, and the
# candles that closed before the series was live again are missing too; detection records those only
# DETECT_SETTLE later, as a gap of their own. Such a confirm waits (up to OUTAGE_WAIT after its close, looked at
# again every OUTAGE_RECHECK) until the series is live again, so that one request repairs both (docs/chaos.md).
OUTAGE_WAIT = timedelta(seconds=10)
OUTAGE_RECHECK = timedelta(seconds=2)

# The series' first stored candle after the unit, within one page of its start.
_NEXT_STORED = """
SELECT min(open_time) FROM candles_candle
WHERE instrument_id = %(instrument)s AND timeframe_id = %(timeframe)s AND open_time > %(after)s
  AND open_time <= %(until)s
"""

# The unit's series inside its page: its own gaps still to fill, other unfinished gaps wholly in the page (each
# with the confirmed candles stored in its range since it was recorded), and closed candles stored unconfirmed.
_SERIES_WORK = """
WITH gaps AS (
    SELECT g.id, g.start, g."end"
    FROM candles_gap g JOIN candles_subscription s ON s.id = g.subscription_id
    WHERE s.instrument_id = %(instrument)s AND s.timeframe_id = %(timeframe)s AND g.state = 'open'
      AND g.start >= %(low)s AND g."end" <= %(high)s AND NOT (g.id = ANY(%(known)s))
    UNION ALL
    SELECT g.id, g.start, g."end"
    FROM candles_gap g
    WHERE g.id = ANY(%(known)s) AND g.state IN ('open', 'filling')
)
SELECT 'gap', g.id, g.start, g."end",
       (SELECT count(*) FROM candles_candle c
        WHERE c.instrument_id = %(instrument)s AND c.timeframe_id = %(timeframe)s AND c.confirmed
          AND c.open_time >= g.start AND c.open_time <= g."end")
FROM gaps g
UNION ALL
SELECT 'confirm', 0, c.open_time, c.open_time, 0
FROM candles_candle c
WHERE c.instrument_id = %(instrument)s AND c.timeframe_id = %(timeframe)s AND NOT c.confirmed
  AND c.open_time >= %(low)s AND c.open_time <= %(high)s AND c.open_time <= %(closed)s
"""


@dataclass(frozen=True, slots=True)
class _Lookups:
    timeframes: dict[str, Timeframe]


@dataclass(frozen=True, slots=True)
class Page:
    """What one request for a unit carries."""

    unit: Unit  # grown to the page: every gap and unconfirmed candle of its series there
    # Open times after the unit, up to the series' next stored candle, in no gap yet: the seconds an outage
    # lost, asked for with the confirm of the candle it cut, before detection records them.
    absent: tuple[int, ...] = ()
    # A confirm whose series is not live again yet: asking now would leave the outage's holes to a second
    # request.
    waiting: bool = False
    # Gaps whose candles all arrived after they were recorded (a flush that was down, a late push): settled
    # without a request.
    complete: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.unit.gap_ids or self.unit.wanted or self.absent)


def widened(unit: Unit, timeframe: Timeframe, *, now_ms: int, instrument_id: int | None = None) -> Page:
    """The unit grown to a whole page, carrying every other repair of its series there.

    The budget counts requests, not candles: when the missing candles of a series are scattered (a `1s` channel
    whose pushes come every 2 s), one request for a whole page repairs them all at once, however they were
    recorded. The page reaches past the unit to the series' next stored candle when it can (an outage's holes,
    before detection records them); what is still settling (CONFIRM_SETTLE) is left to the next run.
    """
    spec = timeframe.spec
    size = PAGE_CANDLES[unit.lane]
    if instrument_id is None:
        instrument_id = unit.instrument_id
    if instrument_id is None:
        instrument_id = (Instrument.objects.filter(inst_id=unit.inst_id, price=unit.price)
                         .values_list("pk", flat=True).first())
    if instrument_id is None:
        return Page(unit)
    closed = spec.last_closed(now_ms - int(CONFIRM_SETTLE.total_seconds() * 1000))
    page_top = spec.advance(unit.start_ms, size - 1)
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_STORED, {"instrument": instrument_id, "timeframe": timeframe.pk,
                                      "after": ms_to_datetime(unit.end_ms),
                                      "until": ms_to_datetime(spec.following(page_top))})
        (next_stored,) = cursor.fetchone()
        high, waiting = unit.end_ms, False
        if next_stored is not None:
            before_next = spec.advance(datetime_to_ms(next_stored), -1)
            high = max(unit.end_ms, min(before_next, closed, page_top))
            waiting = before_next > high and before_next <= page_top  # the holes are still settling
        else:
            waiting = True  # not live again within the page (yet)
        recent = now_ms - spec.following(unit.end_ms) < OUTAGE_WAIT.total_seconds() * 1000
        if waiting and recent and not unit.gap_ids:
            return Page(unit, waiting=True)
        low = spec.advance(high, -(size - 1))
        cursor.execute(_SERIES_WORK, {
            "instrument": instrument_id, "timeframe": timeframe.pk, "low": ms_to_datetime(low),
            "high": ms_to_datetime(high), "known": list(unit.gap_ids), "closed": ms_to_datetime(closed),
        })
        rows = cursor.fetchall()
    gaps = {gap_id: (datetime_to_ms(start), datetime_to_ms(end), stored)
            for kind, gap_id, start, end, stored in rows if kind == "gap"}
    complete = tuple(gap_id for gap_id, (first, last, stored) in gaps.items() if stored >= spec.count(first, last))
    gap_ids = tuple(gap_id for gap_id in gaps if gap_id not in complete)
    wanted = tuple(sorted({datetime_to_ms(start) for kind, _, start, _, _ in rows if kind == "confirm"}))
    covered = [gaps[gap_id][:2] for gap_id in gap_ids]
    start = min([unit.start_ms, *(start for start, _ in covered), *wanted])
    # Nothing is stored between the unit and `high` (the next stored candle is past it).
    absent = tuple(ms for ms in spec.open_times(spec.following(unit.end_ms), high)
                   if not any(first <= ms <= last for first, last in covered)) if high > unit.end_ms else ()
    end = max([unit.end_ms, *absent, *(last for _, last in covered)])
    return Page(replace(unit, start_ms=start, end_ms=end, wanted=wanted, gap_ids=gap_ids), absent,
                complete=complete)


def _repair(unit: Unit, *, fetch: Callable, redis: Any, keys: Keys, on_written: OnWritten | None,
            lookups: _Lookups, tally: Counter) -> int:
    """Carry out one unit, grown to its page; the candles it wrote."""
    page = widened(unit, lookups.timeframes[unit.bar], now_ms=datetime_to_ms(timezone.now()))
    if page.waiting:
        confirms_retry_later(redis=redis, keys=keys, inst_id=unit.inst_id, bar=unit.bar, open_times=unit.wanted,
                             price=unit.price, after=OUTAGE_RECHECK)
        return 0
    for gap_id in page.complete:  # nothing to ask OKX for: the fill settles it from the stored candles
        gap_fill(gap_id=gap_id, fetch=_within([]), redis=redis, keys=keys, on_written=on_written, tally=tally)
    if page.empty:
        return 0  # done meanwhile (another unit's request carried it, or the live path): no request
    unit = page.unit
    try:
        updates = fetch(unit.inst_id, unit.bar, unit.start_ms, unit.end_ms, unit.price)
    except (PermanentError, UnsupportedBar) as exc:
        # The instrument is gone (51001), the request is refused, or OKX has no such candles (a `1s` mark or index
        # gap recorded by hand): asking again at once cannot help. Each gap settles as its own fill would
        # (unfillable for 51001 and for a bar REST does not serve), the confirms wait.
        logger.warning("repair of %s %s %s refused: %s", unit.inst_id, unit.price, unit.bar, exc)
        confirms_retry_later(redis=redis, keys=keys, inst_id=unit.inst_id, bar=unit.bar, open_times=unit.wanted,
                             price=unit.price)
        for gap_id in unit.gap_ids:
            gap_fill(gap_id=gap_id, fetch=_raising(exc), redis=redis, keys=keys, on_written=on_written, tally=tally)
        return 0
    written = 0
    for gap_id in unit.gap_ids:  # each from the one response: a gap fill asks REST nothing more
        written += gap_fill(gap_id=gap_id, fetch=_within(updates), redis=redis, keys=keys,
                            on_written=on_written, tally=tally).written
    if not (unit.wanted or page.absent):
        return written
    wanted, absent = set(unit.wanted), set(page.absent)
    rows = [row for row in rest_rows(updates, receipt_version())
            if row.open_time_ms in wanted or row.open_time_ms in absent]
    result = candles_upsert(rows=rows)
    dead_letter_rejected(redis, keys, result)
    notify_written(on_written, rows)
    confirms_retry_later(redis=redis, keys=keys, inst_id=unit.inst_id, bar=unit.bar,
                         open_times=sorted(wanted - {row.open_time_ms for row in rows}), price=unit.price)
    return written + result.written


def _within(updates: list) -> Callable:
    def fetch(inst_id: str, bar: str, start_ms: int, end_ms: int, price: str) -> list:
        return [u for u in updates if start_ms <= u.open_time_ms <= end_ms]
    return fetch


def _raising(error: Exception) -> Callable:
    def fetch(inst_id: str, bar: str, start_ms: int, end_ms: int, price: str) -> list:
        raise error
    return fetch


def batched(units: list[Unit], pages: dict[str, int], specs: dict[str, BarSpec]) -> list[Unit]:
    """Units of one series that fit in one page together become one request, in the place of the first.

    A missed confirm and an outage's hole of the same `1s` series a minute apart are one history request,
    not two: the budget is counted in requests, so each request carries all it can.
    """
    out: list[Unit | None] = []
    where: dict[tuple[str, str, str], list[int]] = {}
    for unit in units:
        spec = specs.get(unit.bar)
        placed = False
        for index in where.get(unit.series, ()):
            batch = out[index]
            span = spec.count(min(batch.start_ms, unit.start_ms), max(batch.end_ms, unit.end_ms)) if spec else 0
            if spec is not None and span <= pages[unit.lane]:
                out[index] = batch.merged(unit)
                placed = True
                break
        if not placed:
            where.setdefault(unit.series, []).append(len(out))
            out.append(unit)
    return [unit for unit in out if unit is not None]
