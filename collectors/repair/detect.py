"""Detection: record the closed candles that are missing as `Gap` rows.

Two ways in:

* `detection_advance` is the schedule's. Each active series keeps a watermark (`Subscription.detected_through`):
  every open time up to it is stored or recorded as a gap. A run looks only past the watermarks, at every
  series at once: one statement per bar counts the candles stored since each watermark; a series whose count
  is complete moves its watermark in one UPDATE for all; only the series with holes are looked into, again in
  one statement per bar. So a run costs the candles that closed since the last run and the holes among them,
  never a pass of per-series work over every subscription.
* `gaps_detect` looks at one subscription over a range an operator names (the backfill command, the admin).

Missing runs are cut into units of one REST page (`reach.PAGE_CANDLES` of the endpoint that serves them: a mark
or index series has its own, with pages of 100) so the scheduler can spend a request on each. Every price kind is
detected alike: a series is a subscription of one Instrument row, and the bar calendar is the bar's. Parts REST
cannot serve (WebSocket-only bars, `1s` of a mark or index series, before listing, past OKX's retention) are
recorded `unfillable` at once, with the reason. Unconfirmed closed candles are not gaps:
the repair scheduler finds them through a partial index (`confirms`).

Nothing is recorded behind a bar's own retention horizon (`Timeframe.horizon`): those candles are dropped by
policy. Both ways in start at the horizon at the earliest; the maintenance task expires older gaps
(`candles.gaps.gaps_expire`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.gaps import gap_record, gaps_record_many
from candles.models import Candle, Gap, GapState, Instrument, PriceKind, RepairPriority, Subscription, Timeframe
from candles.series import Range, candle_missing_ranges, final_open_ms, listing_open_ms, open_containing, subtract
from collectors.repair.reach import PAGE_CANDLES, lane_for, not_served_reason, partition, reach_limits, rest_serves
from okxproject.logs import log_context

logger = logging.getLogger(__name__)

# A candle that closed this recently may still be on its way through the live buffer (flushed about every
# second); calling it missing would spend REST budget on candles that arrive anyway. The next run sees it.
DETECT_SETTLE = timedelta(seconds=10)
# Open times one series is checked for in one run: a watermark far behind (a subscription resumed after a
# month) catches up over several runs instead of one query over millions of expected times.
DETECT_CHUNK_CANDLES = 50_000
# A cap on a gap's size below the page of its endpoint (tests lower it).
MAX_GAP_CANDLES = 300
# Holes that closed longer ago than this (and are not requested history) are old gaps: last in line.
OLD_AFTER = timedelta(hours=6)
# pg_advisory_xact_lock(namespace, subscription id) serialises one subscription's explicit detection;
# pg_advisory_xact_lock(namespace, 0) serialises the scheduled runs.
_DETECT_LOCK_NAMESPACE = 0x67617073  # "gaps"


def gap_units(spec: BarSpec, rng: Range, now_ms: int, price: str = PriceKind.TRADE) -> Iterator[Range]:
    """`rng` cut into units of one REST page each, sized for the endpoint each unit's start reaches (the `price`
    kind's own endpoints)."""
    start = rng.start_ms
    while start <= rng.end_ms:
        size = min(MAX_GAP_CANDLES, PAGE_CANDLES[lane_for(spec, start, now_ms, price)])
        last = min(rng.end_ms, spec.advance(start, size - 1))
        yield Range(start, last, rng.reason)
        start = spec.following(last)


def gap_priority(end: datetime, *, created_at: datetime, now: datetime) -> int:
    """History a subscription asked for, an outage's hole, or an old hole."""
    if end < created_at:
        return RepairPriority.HISTORY
    if end < now - OLD_AFTER:
        return RepairPriority.OLD
    return RepairPriority.OUTAGE


# --- the scheduled run over every series ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectionResult:
    advanced: int = 0  # series whose watermark moved
    examined: int = 0  # series with candles closed since their watermark
    incomplete: int = 0  # of those, series with holes
    gaps: int = 0  # gap rows recorded
    missing: int = 0  # candles in them

    def __add__(self, other: DetectionResult) -> DetectionResult:
        return DetectionResult(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.advanced, self.examined, self.incomplete, self.gaps, self.missing)


_STARTS_UNSET = """
SELECT s.id, s.timeframe_id, s.backfill_from, s.created_at, i.listed_at
FROM candles_subscription s JOIN candles_instrument i ON i.id = s.instrument_id
WHERE s.is_active AND s.detected_through IS NULL
"""

_SET_WATERMARKS = """
UPDATE candles_subscription s SET detected_through = timestamptz 'epoch' + v.w * interval '1 millisecond'
FROM unnest(%(ids)s::bigint[], %(ws)s::bigint[]) AS v(id, w)
WHERE s.id = v.id
"""

# Series of one bar with candles closed since their watermark, with how many are stored there. The count is
# a range probe of the candle key per series; the watermark filter keeps out every series with nothing new.
# Moments come as epoch milliseconds: thousands of rows a run, and parsing timestamps was most of its time.
# The bar is named as the constant it is, so that PostgreSQL prunes the other bars' partitions when it plans
# (by the subscription's column, it pruned at run time over every leaf: 12.9 ms instead of 0.9 for 1m).
# A watermark behind the bar's retention horizon counts from the horizon (%(floor)s, NULL for a bar kept forever):
# candles behind it are dropped by policy, and recording them as gaps would only spend REST on them.
_PAST_WATERMARKS = """
SELECT s.id, s.instrument_id, floor(extract(epoch FROM w.mark) * 1000)::bigint,
       floor(extract(epoch FROM s.created_at) * 1000)::bigint,
       -- Rounded up: a watermark set to the end must be at or past it, or the series would come back every run.
       ceil(extract(epoch FROM i.expires_at) * 1000)::bigint, ceil(extract(epoch FROM i.delisted_at) * 1000)::bigint,
       i.price, (
    SELECT count(*) FROM candles_candle c
    WHERE c.instrument_id = s.instrument_id AND c.timeframe_id = %(timeframe)s
      AND c.open_time > w.mark
      AND c.open_time <= LEAST(%(end)s::timestamptz, w.mark + %(chunk)s * interval '1 second')
) AS stored
FROM candles_subscription s JOIN candles_instrument i ON i.id = s.instrument_id
CROSS JOIN LATERAL (SELECT GREATEST(s.detected_through, %(floor)s::timestamptz) AS mark) w
WHERE s.timeframe_id = %(timeframe)s AND s.is_active AND w.mark < %(end)s
  AND (i.expires_at IS NULL OR w.mark < i.expires_at)
  AND (i.delisted_at IS NULL OR w.mark < i.delisted_at)
"""

# The missing open times of many series of one fixed-length bar, as runs: one statement for all of them.
_HOLES = """
WITH w AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(instruments)s::int[], %(first)s::timestamptz[],
                         %(last)s::timestamptz[]) AS w(id, instrument_id, first, last)
), missing AS (
    SELECT w.id, e.t, e.n - row_number() OVER (PARTITION BY w.id ORDER BY e.n) AS island
    FROM w CROSS JOIN LATERAL generate_series(w.first, w.last, %(step)s * interval '1 second')
         WITH ORDINALITY AS e(t, n)
    LEFT JOIN LATERAL (
        SELECT true AS found FROM candles_candle c
        WHERE c.instrument_id = w.instrument_id AND c.timeframe_id = %(timeframe)s AND c.open_time = e.t
        LIMIT 1
    ) hit ON true
    WHERE hit.found IS NULL
)
SELECT id, min(t), max(t) FROM missing GROUP BY id, island ORDER BY id, 2
"""


@dataclass(slots=True)
class _Series:
    id: int
    instrument_id: int
    created_ms: int
    first_ms: int  # first open time past the watermark
    last_ms: int  # last open time this run accounts for
    watermark_ms: int  # where the watermark moves when this run has recorded every hole
    stored: int
    price: str = PriceKind.TRADE  # the instrument row's kind: which endpoints (and page sizes) serve it


def detection_advance(*, now: datetime | None = None, settle: timedelta = DETECT_SETTLE) -> DetectionResult:
    """Move every active series' watermark to its last candle closed `settle` ago, recording the holes as gaps.

    Runs one at a time (a transaction-level advisory lock; a second caller waits, then finds little to do).
    Safe to run twice: a watermark only moves once what lies behind it is stored or recorded.
    """
    now = now or timezone.now()
    total = DetectionResult()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [_DETECT_LOCK_NAMESPACE])
        timeframes = {tf.pk: tf for tf in Timeframe.objects.all()}
        _start_watermarks(timeframes, now)
        for timeframe in timeframes.values():
            total = total + _advance_bar(timeframe, now, settle)
    if total.gaps:
        logger.info("detection: %d series examined, %d with holes: %d gaps recorded (%d candles missing)",
                    total.examined, total.incomplete, total.gaps, total.missing)
    return total


def _start_watermarks(timeframes: dict[int, Timeframe], now: datetime) -> None:
    """A new subscription's watermark sits just before its first wanted open time: its history's start, or the
    candle open when it was created. Work for new subscriptions only."""
    with connection.cursor() as cursor:
        cursor.execute(_STARTS_UNSET)
        rows = cursor.fetchall()
    if not rows:
        return
    ids, marks = [], []
    for sub_id, tf_id, backfill_from, created_at, listed_at in rows:
        spec = timeframes[tf_id].spec
        start_ms = (spec.ceil(datetime_to_ms(backfill_from)) if backfill_from is not None
                    else spec.floor(datetime_to_ms(min(created_at, now))))
        if listed_at is not None:
            start_ms = max(start_ms, open_containing(spec, listed_at))
        ids.append(sub_id)
        marks.append(start_ms - 1)
    with connection.cursor() as cursor:
        cursor.execute(_SET_WATERMARKS, {"ids": ids, "ws": marks})


def _first_inside_horizon_ms(timeframe: Timeframe, now: datetime) -> int | None:
    """The bar's first open time at or after its retention horizon; None when the bar keeps everything."""
    horizon = timeframe.horizon(now)
    return None if horizon is None else timeframe.spec.ceil(datetime_to_ms(horizon))


def _watermark_floor(timeframe: Timeframe, now: datetime) -> datetime | None:
    """The lowest watermark detection counts from: just before the first open time inside the horizon (a
    watermark is the last open time looked at), so a candle opening exactly at the horizon is still looked at."""
    first_ms = _first_inside_horizon_ms(timeframe, now)
    return None if first_ms is None else ms_to_datetime(first_ms - 1)


def _advance_bar(timeframe: Timeframe, now: datetime, settle: timedelta) -> DetectionResult:
    spec = timeframe.spec
    now_ms = datetime_to_ms(now)
    end_ms = spec.last_closed(now_ms - int(settle.total_seconds() * 1000))
    # Calendar bars have a few candles a year: they need no chunks (a century stands for none).
    chunk_s = timeframe.seconds * DETECT_CHUNK_CANDLES if not timeframe.is_calendar else 100 * 366 * 86_400
    with connection.cursor() as cursor:
        cursor.execute(_PAST_WATERMARKS, {"timeframe": timeframe.pk, "end": ms_to_datetime(end_ms), "chunk": chunk_s,
                                          "floor": _watermark_floor(timeframe, now)})
        rows = cursor.fetchall()
    if not rows:
        return DetectionResult()

    complete: list[_Series] = []
    incomplete: list[_Series] = []
    for sub_id, inst_pk, mark_ms, created_ms, expires_ms, delisted_ms, price, stored in rows:
        first_ms = spec.ceil(mark_ms + 1)
        last_ms = end_ms if timeframe.is_calendar else min(end_ms, spec.floor(mark_ms + chunk_s * 1000))
        watermark_ms = last_ms
        ends = [moment for moment in (expires_ms, delisted_ms) if moment is not None]
        if ends and spec.floor(min(ends)) <= last_ms:
            # The instrument's last candle: past it there is nothing to wait for, and the watermark says so.
            last_ms, watermark_ms = spec.floor(min(ends)), min(ends)
        series = _Series(sub_id, inst_pk, created_ms, first_ms, last_ms, watermark_ms, stored, price)
        (complete if stored >= spec.count(first_ms, last_ms) else incomplete).append(series)

    holes = _holes(timeframe, incomplete) if incomplete else {}
    gaps = _record(timeframe, incomplete, holes, now) if holes else []
    advanced = complete + incomplete
    with connection.cursor() as cursor:
        cursor.execute(_SET_WATERMARKS, {"ids": [s.id for s in advanced], "ws": [s.watermark_ms for s in advanced]})
    return DetectionResult(len(advanced), len(rows), len(incomplete), len(gaps), sum(g.missing for g in gaps))


def _holes(timeframe: Timeframe, series: Sequence[_Series]) -> dict[int, list[Range]]:
    """The missing runs of each series, oldest first."""
    holes: dict[int, list[Range]] = defaultdict(list)
    probe = []
    for s in series:
        if s.first_ms > s.last_ms:
            continue
        if s.stored == 0:
            holes[s.id].append(Range(s.first_ms, s.last_ms))  # nothing stored: the whole window, no scan
        elif timeframe.is_calendar:
            for r in candle_missing_ranges(instrument_id=s.instrument_id, timeframe=timeframe,
                                           start=ms_to_datetime(s.first_ms), end=ms_to_datetime(s.last_ms),
                                           confirmed_only=False):
                holes[s.id].append(Range(datetime_to_ms(r.start), datetime_to_ms(r.end)))
        else:
            probe.append(s)
    if probe:
        with connection.cursor() as cursor:
            cursor.execute(_HOLES, {
                "ids": [s.id for s in probe], "instruments": [s.instrument_id for s in probe],
                "first": [ms_to_datetime(s.first_ms) for s in probe],
                "last": [ms_to_datetime(s.last_ms) for s in probe],
                "step": timeframe.seconds, "timeframe": timeframe.pk,
            })
            for sub_id, start, end in cursor.fetchall():
                holes[sub_id].append(Range(datetime_to_ms(start), datetime_to_ms(end)))
    return holes


def _pages(spec: BarSpec, parts: Sequence[Range], now_ms: int,
           price: str = PriceKind.TRADE) -> Iterator[tuple[Range, int]]:
    """(unit, candles missing in it): holes of one series, oldest first, gathered into REST pages.

    Scattered holes within one page are one gap (a `1s` channel pushed every 2 s misses every other candle:
    one row per page instead of fifty, and still one request). A gap's range may then hold stored candles
    between its holes; its `missing` counts the holes only. Unfillable parts stay whole and apart.
    """
    current: Range | None = None
    missing = 0
    for part in parts:
        if part.reason:
            if current is not None:
                yield current, missing
                current = None
            yield part, spec.count(part.start_ms, part.end_ms)
            continue
        for piece in gap_units(spec, part, now_ms, price):
            count = spec.count(piece.start_ms, piece.end_ms)
            if current is not None:
                size = min(MAX_GAP_CANDLES, PAGE_CANDLES[lane_for(spec, current.start_ms, now_ms, price)])
                if spec.count(current.start_ms, piece.end_ms) <= size:
                    current, missing = Range(current.start_ms, piece.end_ms), missing + count
                    continue
                yield current, missing
            current, missing = piece, count
    if current is not None:
        yield current, missing


def _record(timeframe: Timeframe, series: Sequence[_Series], holes: dict[int, list[Range]],
            now: datetime) -> list[Gap]:
    """Gap rows for the holes, page-sized, in one INSERT; parts REST cannot serve are unfillable at once."""
    spec = timeframe.spec
    now_ms = datetime_to_ms(now)
    # Only series with holes need their instrument (listing and retention limits): a query for those alone.
    instruments = Instrument.objects.in_bulk({s.instrument_id for s in series if s.id in holes})
    units: list[tuple[int, Range, int, int]] = []
    for s in series:
        if s.id not in holes:
            continue
        limits = (reach_limits(timeframe, instruments[s.instrument_id], now_ms) if rest_serves(timeframe, s.price)
                  else [(spec.following(s.last_ms), not_served_reason(timeframe, s.price))])
        created_at = ms_to_datetime(s.created_ms)
        parts = [part for hole in holes[s.id] for part in partition(spec, hole, limits)]
        for unit, missing in _pages(spec, parts, now_ms, s.price):
            priority = gap_priority(ms_to_datetime(unit.end_ms), created_at=created_at, now=now)
            units.append((s.id, unit, missing, priority))
    return gaps_record_many(units)


# --- one subscription over a named range ----------------------------------------------------------


def _history_recorded(subscription: Subscription, history_start_ms: int) -> bool:
    """Whether detection already went back to `history_start_ms` (a candle or a gap of any state is there)."""
    at = ms_to_datetime(history_start_ms)
    if subscription.gaps.filter(start__lte=at).exists():
        return True
    return Candle.objects.filter(
        instrument_id=subscription.instrument_id, timeframe_id=subscription.timeframe_id, open_time__lte=at
    ).exists()


def _default_start(subscription: Subscription, now: datetime) -> datetime:
    """The subscription's history until detection has recorded it, then the recent window (reaching back to
    the newest stored candle when that is older: an outage or pause longer than the window)."""
    recent = now - timedelta(hours=settings.BACKFILL_RECENT_HOURS)
    newest = (
        Candle.objects.filter(instrument_id=subscription.instrument_id, timeframe_id=subscription.timeframe_id)
        .order_by("-open_time").values_list("open_time", flat=True).first()
    )
    if newest is not None and newest < recent:
        recent = newest
    backfill_from = subscription.backfill_from
    if backfill_from is None:
        return recent
    spec = subscription.timeframe.spec
    history_start_ms = spec.ceil(datetime_to_ms(backfill_from))
    listing = listing_open_ms(spec, subscription.instrument)
    if listing is not None:
        history_start_ms = max(history_start_ms, listing)
    if history_start_ms <= datetime_to_ms(now) and not _history_recorded(subscription, history_start_ms):
        return backfill_from
    return max(recent, backfill_from)


def _missing(subscription: Subscription, start_ms: int, end_ms: int) -> Iterator[Range]:
    """Runs of missing (or unconfirmed) open times in [start, end], oldest first, merged across query chunks."""
    timeframe = subscription.timeframe
    spec = timeframe.spec
    pending: Range | None = None
    chunk_start = spec.ceil(start_ms)
    while chunk_start <= end_ms:
        chunk_end = min(end_ms, spec.advance(chunk_start, DETECT_CHUNK_CANDLES - 1))
        stored = Candle.objects.filter(
            instrument_id=subscription.instrument_id, timeframe_id=timeframe.pk,
            open_time__gte=ms_to_datetime(chunk_start), open_time__lte=ms_to_datetime(chunk_end),
        ).exists()
        if stored:
            found = [
                Range(datetime_to_ms(r.start), datetime_to_ms(r.end))
                for r in candle_missing_ranges(
                    instrument_id=subscription.instrument_id, timeframe=timeframe,
                    start=ms_to_datetime(chunk_start), end=ms_to_datetime(chunk_end),
                )
            ]
        else:
            found = [Range(chunk_start, chunk_end)]  # nothing stored (a new history): no scan needed
        for rng in found:
            if pending is not None and spec.following(pending.end_ms) == rng.start_ms:
                pending = Range(pending.start_ms, rng.end_ms)
                continue
            if pending is not None:
                yield pending
            pending = rng
        chunk_start = spec.following(chunk_end)
    if pending is not None:
        yield pending


def gaps_detect(
    *,
    subscription_id: int,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    settle: timedelta = DETECT_SETTLE,
) -> list[Gap]:
    """Record the missing (or unconfirmed) closed candles of one subscription in [start, end] as gaps; return
    the new gaps.

    `start` defaults to the subscription's `backfill_from` until its history is recorded, then to
    now − BACKFILL_RECENT_HOURS (or the newest stored candle, when older); `end` to now. The range is clipped
    to the instrument's listing (and expiry), and ends at the last candle that closed at least `settle` before
    `now`. Ranges already covered by an open, filling or unfillable gap are skipped, so running twice records
    nothing new.
    """
    now = now or timezone.now()
    subscription = Subscription.objects.select_related("instrument", "timeframe").get(pk=subscription_id)
    with log_context(inst_id=subscription.instrument.inst_id, bar=subscription.timeframe.code):
        return _detect(subscription, start=start, end=end, now=now, settle=settle)


def _detect(
    subscription: Subscription, *, start: datetime | None, end: datetime | None, now: datetime, settle: timedelta
) -> list[Gap]:
    instrument, timeframe = subscription.instrument, subscription.timeframe
    spec = timeframe.spec
    now_ms = datetime_to_ms(now)

    start_ms = datetime_to_ms(start if start is not None else _default_start(subscription, now))
    listing = listing_open_ms(spec, instrument)
    if listing is not None:
        start_ms = max(start_ms, listing)
    inside = _first_inside_horizon_ms(timeframe, now)
    if inside is not None:  # behind the retention horizon candles are dropped by policy: nothing to record
        start_ms = max(start_ms, inside)
    start_ms = spec.ceil(start_ms)

    end_ms = spec.last_closed(now_ms - int(settle.total_seconds() * 1000))
    if end is not None:
        end_ms = min(end_ms, spec.floor(datetime_to_ms(end)))
    final = final_open_ms(spec, instrument)
    if final is not None:  # no candles open after an instrument expires or leaves OKX
        end_ms = min(end_ms, final)
    if start_ms > end_ms:
        return []

    if rest_serves(timeframe, instrument.price):
        limits = reach_limits(timeframe, instrument, now_ms)
    else:
        limits = [(spec.following(end_ms), not_served_reason(timeframe, instrument.price))]

    created: list[Gap] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_DETECT_LOCK_NAMESPACE, subscription.pk])
        covered = sorted(
            (datetime_to_ms(s), datetime_to_ms(e))
            for s, e in subscription.gaps.filter(
                state__in=[GapState.OPEN, GapState.FILLING, GapState.UNFILLABLE],
                start__lte=ms_to_datetime(end_ms), end__gte=ms_to_datetime(start_ms),
            ).values_list("start", "end")
        )
        for missing in _missing(subscription, start_ms, end_ms):
            for piece in subtract(spec, missing, covered):
                for part in partition(spec, piece, limits):
                    # Unfillable parts cost no REST work, so they stay whole.
                    units = [part] if part.reason else gap_units(spec, part, now_ms, instrument.price)
                    for unit in units:
                        priority = gap_priority(ms_to_datetime(unit.end_ms), created_at=subscription.created_at,
                                                now=now)
                        gap = gap_record(subscription, spec, unit, priority=priority)
                        if gap is not None:
                            created.append(gap)
    for gap in created:
        logger.debug("%s %s: gap %s recorded %s (%d missing, %s)%s", instrument.inst_id, timeframe.code, gap.pk,
                     Range(datetime_to_ms(gap.start), datetime_to_ms(gap.end)).fmt(), gap.missing, gap.state,
                     f": {gap.reason}" if gap.reason else "")
    if created:
        unfillable = [gap for gap in created if gap.state == GapState.UNFILLABLE]
        logger.info("%s %s: %d gaps recorded from %s to %s (%d candles missing, %d of them unfillable)",
                    instrument.inst_id, timeframe.code, len(created), ms_to_datetime(start_ms).isoformat(),
                    ms_to_datetime(end_ms).isoformat(), sum(gap.missing for gap in created),
                    sum(gap.missing for gap in unfillable))
    return created
