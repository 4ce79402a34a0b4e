"""Backfill: find the candles a subscription is missing and fetch them from OKX REST.

Three services, each safe to run twice and from several workers at once:

* `gaps_detect` records runs of missing *closed* open times of one subscription as `Gap` rows. Parts REST
  cannot serve (WebSocket-only bars, 1s candles past OKX's 90-day retention) are recorded `unfillable` with
  the reason at once; the others `open`, split into bounded units of work.
* `gap_fill` claims one open gap with a conditional UPDATE (whoever updates the row owns it), fetches its
  range through the REST client with the Redis-shared rate limiter, writes the confirmed rows through
  `candles_upsert`, and then checks the range again: filled, unfillable with a reason, or open for a retry.
* `rest_needed_drain` fetches the candles that collectors saw close without a confirm push.

No candle is ever made up: a gap REST cannot fill stays recorded as such, with its reason.
The shared counters (`Keys.counters`, exported as metrics) get `gaps_filled` per filled gap and the REST
client's `rest_requests`, `rest_retries` and `rest_rate_limited` (HTTP 429 or OKX code 50011) per run.
The REST client is asyncio; these services are synchronous (tasks call them) and run it with
`asyncio.run`, never holding a database transaction across a network call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from redis import RedisError

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.models import Candle, Gap, GapState, Instrument, Subscription, Timeframe
from candles.storage import CandleRow, UpsertResult, candle_missing_ranges, candles_upsert
from collectors.okx.messages import CandleUpdate
from collectors.okx.ratelimit import RedisRateLimiter
from collectors.okx.rest import WEBSOCKET_ONLY_BARS, OkxRestClient, PermanentError, UnsupportedBar
from collectors.pipeline.buffer import dead_letter_record, receipt_version
from collectors.pipeline.connections import async_redis_client, pipeline_keys, redis_client
from collectors.pipeline.keys import Keys, candle_field, split_candle_field
from collectors.pipeline.locks import RedisLock
from okxproject.logs import log_context

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A fill is one bounded unit of work: 1,500 candles are 5 pages of 300, under a second of REST budget when
# it is free. Small units keep deep history from holding a worker while a fresh gap waits (each
# fill_gaps run takes the most recent gaps first).
MAX_GAP_CANDLES = 1_500
# Expected open times per detection query; a query over 90 days of 1s candles would hold 7.8 million.
DETECT_CHUNK_CANDLES = 50_000
# A candle that closed this recently may still be on its way through the live buffer (flushed about every
# second); calling it missing would spend REST budget on candles that arrive anyway. The next run sees it.
DETECT_SETTLE = timedelta(seconds=15)
# After this many fills that left candles missing (REST answered, just without them), a gap is unfillable.
MAX_ATTEMPTS = 5
# A failed attempt is retried after RETRY_BACKOFF × 2^(attempts − 1), so a lagging REST cache gets time.
RETRY_BACKOFF = timedelta(seconds=30)
# A gap still `filling` after this long belongs to a worker that died, or to a fill that could not hand it back
# (the database was down when it failed); another may claim it. A fill is at most a few REST pages
# (MAX_GAP_CANDLES), so this is well above one; should a fill outlast it anyway, the second claim raises the
# attempt number, the first fill's settling is refused, and both wrote the same rows through the version rule.
FILLING_STALE_AFTER = timedelta(seconds=90)
# How long OKX REST keeps candles of a bar, where it does not keep them for years.
REST_RETENTION: dict[str, timedelta] = {"1s": timedelta(days=90)}
# Retries of one REST request inside the client (jittered backoff); module-level so tests can shorten it.
REST_MAX_RETRIES = 6
# Ranges the drain fetches at once: one page of OKX's history-candles.
DRAIN_SPAN_CANDLES = 300
DRAIN_CONCURRENCY = 4
# REST requests one drain makes at most, most recent candles first; the rest wait for the next run (every 5 s).
# About 3 s of the history budget: a drain of every queued candle at once (hundreds after a reconnect) held a
# worker slot for 40 s and the budget with it, and the gap fills' tasks expired waiting behind it.
DRAIN_MAX_REQUESTS = 30
# One drain at a time (the next one skips): two took the same random members and fetched them twice.
DRAIN_LOCK_TTL_MS = 60_000
# A queued candle REST still has not confirmed this long after it closed is given up on (logged): the
# stored WebSocket version stays, and asking again forever would spend the shared REST budget.
DRAIN_GIVE_UP_AFTER = timedelta(hours=24)
DEAD_LETTER_MAX = 100_000
# The REST client's tallies (OkxRestClient.stats) and the Keys.counters fields they are added to.
REST_COUNTERS = {"requests": "rest_requests", "retries": "rest_retries", "rate_limited": "rest_rate_limited"}
# OKX error codes that no retry can fix: bad parameter, instrument doesn't exist. A PermanentError without a
# code (a bad URL) is our configuration, not the gap's fault: the gap stays open.
_REFUSED_CODES = frozenset({"51000", "51001"})
# pg_advisory_xact_lock(namespace, subscription id) serialises detection of one subscription.
_DETECT_LOCK_NAMESPACE = 0x67617073  # "gaps"


# --- bar arithmetic ---------------------------------------------------------------------------------


def _previous_open(spec: BarSpec, open_ms: int) -> int:
    return spec.floor(open_ms - 1)


def _count(spec: BarSpec, start_ms: int, end_ms: int) -> int:
    """Open times in [start, end], both open times."""
    if end_ms < start_ms:
        return 0
    if not spec.months:
        return (end_ms - start_ms) // spec.length_ms + 1
    return sum(1 for _ in spec.open_times(start_ms, end_ms))


def _advance(spec: BarSpec, open_ms: int, candles: int) -> int:
    """The open time `candles` bars after `open_ms`."""
    if not spec.months:
        return open_ms + candles * spec.length_ms
    for _ in range(candles):
        open_ms = spec.following(open_ms)
    return open_ms


def _last_closed_open(spec: BarSpec, moment_ms: int) -> int:
    """The newest open time whose candle had closed at `moment_ms` (the candle containing it is still open)."""
    return _previous_open(spec, spec.floor(moment_ms))


@dataclass(frozen=True, slots=True)
class _Range:
    start_ms: int  # first open time
    end_ms: int  # last open time, inclusive
    reason: str | None = None  # why REST cannot serve it; None when it can

    def fmt(self) -> str:
        return f"{ms_to_datetime(self.start_ms).isoformat()} to {ms_to_datetime(self.end_ms).isoformat()}"


def _split(spec: BarSpec, rng: _Range, size: int) -> Iterator[_Range]:
    start = rng.start_ms
    while start <= rng.end_ms:
        last = min(rng.end_ms, _advance(spec, start, size - 1))
        yield _Range(start, last, rng.reason)
        start = spec.following(last)


def _subtract(spec: BarSpec, rng: _Range, covered: Sequence[tuple[int, int]]) -> Iterator[_Range]:
    """The parts of `rng` outside the `covered` ranges (sorted by start)."""
    current = rng.start_ms
    for start, end in covered:
        if end < current:
            continue
        if start > rng.end_ms:
            break
        if start > current:
            yield _Range(current, spec.floor(start - 1), rng.reason)
        current = max(current, spec.ceil(end + 1))
        if current > rng.end_ms:
            return
    if current <= rng.end_ms:
        yield _Range(current, rng.end_ms, rng.reason)


# --- what REST can serve ----------------------------------------------------------------------------


def _rest_serves(timeframe: Timeframe) -> bool:
    return timeframe.code not in WEBSOCKET_ONLY_BARS and (timeframe.rest_candles or timeframe.rest_history)


def _not_served_reason(timeframe: Timeframe) -> str:
    return f"OKX REST does not serve {timeframe.code} candles (WebSocket only)"


def _listing_open_ms(spec: BarSpec, instrument: Instrument) -> int | None:
    """The first open time OKX has: the candle containing the listing moment."""
    return None if instrument.listed_at is None else spec.floor(datetime_to_ms(instrument.listed_at))


def _reach_limits(timeframe: Timeframe, instrument: Instrument, now_ms: int) -> list[tuple[int, str]]:
    """(boundary, reason): REST has no candle opening before `boundary`, for that reason."""
    spec = timeframe.spec
    limits: list[tuple[int, str]] = []
    listing = _listing_open_ms(spec, instrument)
    if listing is not None:
        listed = instrument.listed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        limits.append((listing, f"before {instrument.inst_id} was listed ({listed}); OKX has no candles there"))
    retention = REST_RETENTION.get(timeframe.code)
    if retention is not None:
        days = retention.days
        limits.append((spec.ceil(now_ms - int(retention.total_seconds() * 1000)),
                       f"OKX REST serves {timeframe.code} candles of the last {days} days only"))
    return sorted(limits)


def _partition(spec: BarSpec, rng: _Range, limits: Sequence[tuple[int, str]]) -> list[_Range]:
    """Split `rng` at the boundaries: each part below a boundary carries the reason of the lowest one above it."""
    parts: list[_Range] = []
    current = rng.start_ms
    for boundary, reason in limits:
        if current > rng.end_ms:
            break
        if current < boundary:
            last = min(rng.end_ms, _previous_open(spec, spec.ceil(boundary)))
            parts.append(_Range(current, last, reason))
            current = spec.following(last)
    if current <= rng.end_ms:
        parts.append(_Range(current, rng.end_ms, None))
    return parts


# --- detection --------------------------------------------------------------------------------------


def _history_recorded(subscription: Subscription, history_start_ms: int) -> bool:
    """Whether detection already went back to `history_start_ms` (a candle or a gap of any state is there)."""
    at = ms_to_datetime(history_start_ms)
    if subscription.gaps.filter(start__lte=at).exists():
        return True
    return Candle.objects.filter(
        instrument_id=subscription.instrument_id, timeframe_id=subscription.timeframe_id, open_time__lte=at
    ).exists()


def _default_start(subscription: Subscription, now: datetime) -> datetime:
    """The subscription's history until detection has recorded it, then the recent window.

    Deciding on "has a candle yet" alone would skip the history of a subscription whose collector wrote a live
    candle before the first detection ran; "a candle or a gap at the history's start" cannot. The recent window
    reaches back to the newest stored candle when that is older (an outage or pause longer than the window).
    """
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
    listing = _listing_open_ms(spec, subscription.instrument)
    if listing is not None:
        history_start_ms = max(history_start_ms, listing)
    if history_start_ms <= datetime_to_ms(now) and not _history_recorded(subscription, history_start_ms):
        return backfill_from
    # History was asked for from backfill_from on, not before it.
    return max(recent, backfill_from)


def _missing(subscription: Subscription, start_ms: int, end_ms: int) -> Iterator[_Range]:
    """Runs of missing open times in [start, end], oldest first, merged across query chunks."""
    timeframe = subscription.timeframe
    spec = timeframe.spec
    pending: _Range | None = None
    chunk_start = spec.ceil(start_ms)
    while chunk_start <= end_ms:
        chunk_end = min(end_ms, _advance(spec, chunk_start, DETECT_CHUNK_CANDLES - 1))
        stored = Candle.objects.filter(
            instrument_id=subscription.instrument_id, timeframe_id=timeframe.pk,
            open_time__gte=ms_to_datetime(chunk_start), open_time__lte=ms_to_datetime(chunk_end),
        ).exists()
        if stored:
            found = [
                _Range(datetime_to_ms(r.start), datetime_to_ms(r.end))
                for r in candle_missing_ranges(
                    instrument_id=subscription.instrument_id, timeframe=timeframe,
                    start=ms_to_datetime(chunk_start), end=ms_to_datetime(chunk_end),
                )
            ]
        else:
            # Nothing stored (a new subscription's history): the whole chunk is missing, no scan needed.
            found = [_Range(chunk_start, chunk_end)]
        for rng in found:
            if pending is not None and spec.following(pending.end_ms) == rng.start_ms:
                pending = _Range(pending.start_ms, rng.end_ms)
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
    """Record the missing closed candles of one subscription in [start, end] as gaps; return the new gaps.

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
    listing = _listing_open_ms(spec, instrument)
    if listing is not None:
        start_ms = max(start_ms, listing)
    start_ms = spec.ceil(start_ms)

    end_ms = _last_closed_open(spec, now_ms - int(settle.total_seconds() * 1000))
    if end is not None:
        end_ms = min(end_ms, spec.floor(datetime_to_ms(end)))
    for last_moment in (instrument.expires_at, instrument.delisted_at):
        if last_moment is not None:  # no candles open after an instrument expires or leaves OKX
            end_ms = min(end_ms, spec.floor(datetime_to_ms(last_moment)))
    if start_ms > end_ms:
        return []

    if _rest_serves(timeframe):
        limits = _reach_limits(timeframe, instrument, now_ms)
    else:
        limits = [(spec.following(end_ms), _not_served_reason(timeframe))]

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
            for piece in _subtract(spec, missing, covered):
                for part in _partition(spec, piece, limits):
                    # Unfillable parts cost no REST work, so they stay whole.
                    units = [part] if part.reason else _split(spec, part, MAX_GAP_CANDLES)
                    for unit in units:
                        gap = _gap_create(subscription, spec, unit)
                        if gap is not None:
                            created.append(gap)
    # One line per detection (a deep 1s history is hundreds of gaps); each gap at debug level.
    for gap in created:
        logger.debug("%s %s: gap %s recorded %s (%d missing, %s)%s", instrument.inst_id, timeframe.code, gap.pk,
                     _Range(datetime_to_ms(gap.start), datetime_to_ms(gap.end)).fmt(), gap.missing, gap.state,
                     f": {gap.reason}" if gap.reason else "")
    if created:
        unfillable = [gap for gap in created if gap.state == GapState.UNFILLABLE]
        logger.info("%s %s: %d gaps recorded from %s to %s (%d candles missing, %d of them unfillable)",
                    instrument.inst_id, timeframe.code, len(created), ms_to_datetime(start_ms).isoformat(),
                    ms_to_datetime(end_ms).isoformat(), sum(gap.missing for gap in created),
                    sum(gap.missing for gap in unfillable))
    return created


def _gap_create(subscription: Subscription, spec: BarSpec, rng: _Range) -> Gap | None:
    state = GapState.UNFILLABLE if rng.reason else GapState.OPEN
    try:
        # A savepoint: a lost race on the unique (subscription, start) of unfinished gaps must not abort
        # the detection's transaction.
        with transaction.atomic():
            return Gap.objects.create(
                subscription=subscription, start=ms_to_datetime(rng.start_ms), end=ms_to_datetime(rng.end_ms),
                missing=_count(spec, rng.start_ms, rng.end_ms), state=state, reason=rng.reason or "",
            )
    except IntegrityError:
        logger.info("subscription %s: an unfinished gap from %s exists already", subscription.pk, rng.fmt())
        return None


def gaps_detect_recent(*, now: datetime | None = None) -> int:
    """`gaps_detect` with the default window for every active subscription; return how many gaps were recorded.

    A subscription whose history is not recorded yet gets its history detected here too, so a lost
    "subscribed" hook costs a beat interval, not the history. A failing subscription does not stop the
    others; the first error is raised after all were tried.
    """
    now = now or timezone.now()
    active = list(Subscription.objects.filter(is_active=True).order_by("pk").values_list("pk", "timeframe_id"))
    complete = _windows_complete(_recent_windows(active, now, settle=DETECT_SETTLE))
    recorded = 0
    first_error: Exception | None = None
    for subscription_id, _ in active:
        if subscription_id in complete:
            continue
        try:
            recorded += len(gaps_detect(subscription_id=subscription_id, now=now))
        except Subscription.DoesNotExist:
            continue  # deleted since the list was read
        except Exception as exc:
            logger.exception("subscription %s: gap detection failed", subscription_id)
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return recorded


# A channel's gap check waits this long after its resubscription, so candles still on their way through the
# live buffer are not fetched from REST for nothing.
RECHECK_DELAY = timedelta(seconds=3)


def gaps_recheck(*, redis: Any, keys: Keys, now: datetime | None = None) -> int:
    """Detect gaps before each channel's (re)subscription, as the collectors asked (`Keys.gap_recheck`).

    Everything that closed before a channel was subscribed again can only come from REST, so each channel is
    checked up to that moment with no settling time, once RECHECK_DELAY has passed. Channels whose recent
    window is complete are settled in one statement; the others get the full `gaps_detect`. A request is
    removed once handled (or when its subscription is gone); one whose detection failed stays for the next
    run, without holding up the others. Returns how many gaps were recorded.
    """
    now = now or timezone.now()
    due_before_ms = datetime_to_ms(now - RECHECK_DELAY)
    requests: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    ends: dict[tuple[str, str], int] = {}
    for member in redis.smembers(keys.gap_recheck):
        try:
            inst_id, bar, subscribed_ms = split_candle_field(member.decode())
        except (UnicodeDecodeError, ValueError):
            logger.warning("gap recheck request %r is not \"inst|bar|ms\"; dropped", member)
            redis.srem(keys.gap_recheck, member)
            continue
        if subscribed_ms > due_before_ms:
            continue
        requests[inst_id, bar].append(member)
        ends[inst_id, bar] = max(subscribed_ms, ends.get((inst_id, bar), subscribed_ms))
    if not requests:
        return 0

    found = Subscription.objects.filter(
        is_active=True, instrument__inst_id__in={inst_id for inst_id, _ in requests},
    ).values_list("pk", "timeframe_id", "instrument__inst_id", "timeframe__code")
    channels = {(inst_id, bar): (pk, tf_id) for pk, tf_id, inst_id, bar in found if (inst_id, bar) in requests}
    windows = _recent_windows([channels[c] for c in channels], now, settle=timedelta(0),
                              end_ms={channels[c][0]: ends[c] for c in channels})
    complete = _windows_complete(windows)

    recorded = 0
    handled: list[bytes] = []
    first_error: Exception | None = None
    for channel, members in requests.items():
        subscription = channels.get(channel)
        if subscription is not None and subscription[0] not in complete:
            try:
                recorded += len(gaps_detect(subscription_id=subscription[0], end=ms_to_datetime(ends[channel]),
                                            now=now, settle=timedelta(0)))
            except Subscription.DoesNotExist:
                pass  # deleted since the list was read: nothing to check
            except Exception as exc:
                logger.exception("%s %s: gap recheck failed; retried next run", *channel)
                first_error = first_error or exc
                continue
        handled.extend(members)
    if handled:
        redis.srem(keys.gap_recheck, *handled)
    if first_error is not None:
        raise first_error
    return recorded


@dataclass(frozen=True, slots=True)
class _Window:
    """Open times [first_ms, last_ms] of one subscription, `expected` candles in all."""

    subscription_id: int
    first_ms: int
    last_ms: int
    expected: int


def _recent_windows(
    subscriptions: Sequence[tuple[int, int]], now: datetime, *, settle: timedelta, end_ms: dict[int, int] | None = None,
) -> list[_Window]:
    """The window `gaps_detect`'s default start looks at, per (subscription id, timeframe id).

    It ends where detection would end: the last candle closed `settle` before `now`, or the candle open at
    `end_ms[subscription id]` when earlier. A window shorter than one bar (a daily bar, a recent window of
    hours) becomes that last candle alone: the full path could only look back from the newest stored candle,
    and when the last closed candle is stored and confirmed, the newest is no older than it, so there is
    nothing to look back at.
    """
    now_ms = datetime_to_ms(now)
    recent_ms = datetime_to_ms(now - timedelta(hours=settings.BACKFILL_RECENT_HOURS))
    last_closed_ms = now_ms - int(settle.total_seconds() * 1000)
    specs = {tf.pk: tf.spec for tf in Timeframe.objects.filter(pk__in={tf_id for _, tf_id in subscriptions})}
    windows: list[_Window] = []
    for subscription_id, timeframe_id in subscriptions:
        spec = specs[timeframe_id]
        first, last = spec.ceil(recent_ms), _last_closed_open(spec, last_closed_ms)
        if end_ms is not None and subscription_id in end_ms:
            last = min(last, spec.floor(end_ms[subscription_id]))
        first = min(first, last)
        windows.append(_Window(subscription_id, first, last, _count(spec, first, last)))
    return windows


# Active subscriptions whose window holds every candle, confirmed, or that collect only from after the window
# (`backfill_from` later than its end: a subscription "from now on"). For those the full detection can only
# find nothing, so one statement for all of them replaces its half-dozen queries per subscription (at 6,000
# subscriptions those kept a worker core busy). Anything that could make the full detection look elsewhere
# sends the subscription down the full path: a listing, expiry or delisting inside the window, or a history
# (`backfill_from` before the window) that detection has not provably reached yet.
_WINDOWS_COMPLETE = """
WITH w(subscription_id, w0, w1, expected) AS (
    SELECT * FROM unnest(%(subscriptions)s::bigint[], %(w0)s::timestamptz[], %(w1)s::timestamptz[],
                         %(expected)s::int[])
)
SELECT s.id
FROM candles_subscription s
JOIN w ON w.subscription_id = s.id
JOIN candles_instrument i ON i.id = s.instrument_id
WHERE s.is_active
  AND (i.listed_at IS NULL OR i.listed_at <= w.w0)
  AND (i.expires_at IS NULL OR i.expires_at > w.w1)
  AND (i.delisted_at IS NULL OR i.delisted_at > w.w1)
  AND (s.backfill_from IS NULL OR s.backfill_from >= w.w0
       OR EXISTS (SELECT 1 FROM candles_gap g WHERE g.subscription_id = s.id AND g.start <= s.backfill_from)
       OR EXISTS (SELECT 1 FROM candles_candle h WHERE h.instrument_id = s.instrument_id
                  AND h.timeframe_id = s.timeframe_id AND h.open_time <= s.backfill_from))
  AND (s.backfill_from > w.w1  -- collecting starts after the window: detection starts there too
       OR (SELECT count(*) FROM candles_candle c
           WHERE c.instrument_id = s.instrument_id AND c.timeframe_id = s.timeframe_id
             AND c.open_time BETWEEN w.w0 AND w.w1 AND c.confirmed) = w.expected)
"""


def _windows_complete(windows: Sequence[_Window]) -> set[int]:
    """Ids of the subscriptions whose window `gaps_detect` would find nothing in, decided in one statement."""
    if not windows:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(_WINDOWS_COMPLETE, {
            "subscriptions": [w.subscription_id for w in windows],
            "w0": [ms_to_datetime(w.first_ms) for w in windows],
            "w1": [ms_to_datetime(w.last_ms) for w in windows],
            "expected": [w.expected for w in windows],
        })
        return {row[0] for row in cursor.fetchall()}


# Gaps ending this recently are repairs of the live data (an outage, a reconnect): these take turns across
# bars, so that a bar with many of them (every `1s` channel after a collector restart, on the history
# budget) does not hold up the few of another (the `1m` candles that closed meanwhile, on the candles
# budget). Older gaps are history: strictly the most recent first.
TAKE_TURNS_WITHIN = timedelta(minutes=30)

_NEXT_GAPS = """
SELECT id FROM (
    SELECT g.id, g."end", g."end" >= %(turns_since)s AS live,
           row_number() OVER (PARTITION BY s.timeframe_id ORDER BY g."end" DESC, g.id DESC) AS turn
    FROM candles_gap g JOIN candles_subscription s ON s.id = g.subscription_id
    WHERE s.is_active AND (
        (g.state = 'open' AND (g.attempts = 0
            OR g.updated_at < %(now)s - %(backoff)s * power(2, least(g.attempts, 12) - 1) * interval '1 second'))
        OR (g.state = 'filling' AND g.updated_at < %(stale)s)
    )
) due
ORDER BY live DESC, CASE WHEN live THEN turn END, "end" DESC, id DESC
LIMIT %(limit)s
"""


def gaps_next(*, limit: int, now: datetime | None = None) -> list[int]:
    """Ids of gaps to fill now, most recent first: recent holes matter before deep history. Gaps that ended
    within TAKE_TURNS_WITHIN come first, the most recent of each bar in turn.

    Open gaps that failed wait out an exponential backoff; `filling` gaps whose worker died count as open.
    """
    now = now or timezone.now()
    params = {
        "now": now, "backoff": RETRY_BACKOFF.total_seconds(), "stale": now - FILLING_STALE_AFTER, "limit": limit,
        "turns_since": now - TAKE_TURNS_WITHIN,
    }
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_GAPS, params)
        return [row[0] for row in cursor.fetchall()]


# --- filling ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GapFillResult:
    gap_id: int
    state: str  # the gap's state afterwards, or "skipped" when another worker owns it
    fetched: int = 0  # confirmed candles REST returned for the range
    written: int = 0  # rows inserted or changed
    missing: int = 0  # open times still missing in the gap
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.state == "skipped"


async def _with_rest_client(rest_url: str, keys: Keys, work: Callable[[OkxRestClient], Awaitable[T]]) -> T:
    """Run `work` with a REST client whose requests draw on the budget every worker shares through Redis.

    The client's request, retry and rate-limit tallies are added to the shared counters afterwards, also
    when `work` failed (a run that ends in 429s is the one whose 429s matter).
    """
    aredis = async_redis_client()  # asyncio clients belong to one event loop: a new one per asyncio.run
    client: OkxRestClient | None = None
    try:
        limiter = RedisRateLimiter(aredis, prefix=keys.prefix + "ratelimit:")
        async with OkxRestClient(rest_url, limiter=limiter, max_retries=REST_MAX_RETRIES) as client:
            return await work(client)
    finally:
        if client is not None:
            await _count_rest(aredis, keys, client.stats)
        await aredis.aclose()


def _rest_deltas(stats: dict[str, int]) -> dict[str, int]:
    return {REST_COUNTERS[name]: value for name, value in stats.items() if value and name in REST_COUNTERS}


async def _count_rest(aredis: Any, keys: Keys, stats: dict[str, int]) -> None:
    deltas = _rest_deltas(stats)
    if not deltas:
        return
    try:
        async with aredis.pipeline(transaction=False) as pipe:
            for name, value in deltas.items():
                pipe.hincrby(keys.counters, name, value)
            await pipe.execute()
    except RedisError as exc:
        # The requests were made; only their tally is lost. Raising would turn a done fill into a failed one.
        logger.warning("REST counters %s not recorded: %r", deltas, exc)


def rest_stats_record(*, redis: Any, keys: Keys, stats: dict[str, int]) -> None:
    """Add a REST client's tallies (`OkxRestClient.stats`) to the shared counters, for callers outside this
    module that use a client of their own (the instrument sync). Never raises for Redis: the tally is lost."""
    deltas = _rest_deltas(stats)
    if not deltas:
        return
    try:
        pipe = redis.pipeline(transaction=False)
        for name, value in deltas.items():
            pipe.hincrby(keys.counters, name, value)
        pipe.execute()
    except RedisError as exc:
        logger.warning("REST counters %s not recorded: %r", deltas, exc)


def _count_gap_filled(redis: Any, keys: Keys) -> None:
    try:
        redis.hincrby(keys.counters, "gaps_filled", 1)
    except RedisError as exc:
        logger.warning("a filled gap was not counted: %r", exc)


def _rest_rows(updates: Sequence[CandleUpdate], version: int) -> list[CandleRow]:
    """Closed candles only: REST caches lag, the open candle comes from the WebSocket."""
    return [
        CandleRow(u.inst_id, u.bar, u.open_time_ms, u.open, u.high, u.low, u.close, u.vol, u.vol_ccy,
                  u.vol_ccy_quote, True, "rest", version)
        for u in updates
        if u.confirmed
    ]


def _dead_letter_rejected(redis: Any, keys: Keys, result: UpsertResult) -> None:
    """Rows REST returned that the database refused go to the dead-letter list with their reason."""
    if not result.rejected:
        return
    records = [
        dead_letter_record(f"REST row refused: {i.reason}", str(list(i.row)), f"{i.row.inst_id}|{i.row.bar}")
        for i in result.rejected
    ]
    pipe = redis.pipeline(transaction=False)
    pipe.lpush(keys.dead_letters, *records)
    pipe.ltrim(keys.dead_letters, 0, DEAD_LETTER_MAX - 1)
    pipe.hincrby(keys.counters, "dead_letters", len(records))
    pipe.execute()


def _claim(gap_id: int) -> Gap | None:
    moment = timezone.now()  # updated_at is wall-clock time; staleness is judged on the same clock
    claimable = Q(state=GapState.OPEN) | Q(state=GapState.FILLING, updated_at__lt=moment - FILLING_STALE_AFTER)
    claimed = Gap.objects.filter(claimable, pk=gap_id).update(
        state=GapState.FILLING, attempts=F("attempts") + 1, updated_at=moment
    )
    if not claimed:
        return None
    return Gap.objects.select_related("subscription__instrument", "subscription__timeframe").get(pk=gap_id)


def _finish(gap: Gap, **fields: Any) -> bool:
    """Update the gap if this worker still owns it (state filling, its attempt number)."""
    fields.setdefault("updated_at", timezone.now())
    owned = Gap.objects.filter(pk=gap.pk, state=GapState.FILLING, attempts=gap.attempts).update(**fields)
    if not owned:
        logger.warning("gap %s: claimed by another worker while this one filled it; leaving it to that one", gap.pk)
    return bool(owned)


def gap_fill(
    *,
    gap_id: int,
    rest_url: str | None = None,
    redis: Any = None,
    keys: Keys | None = None,
    now: datetime | None = None,
) -> GapFillResult:
    """Claim one gap, fetch its range from OKX REST, write the confirmed candles, and settle its state.

    Returns state "skipped" when the gap is not claimable (another worker fills it, or it is finished).
    `now` (default: the clock) decides which remaining candles lie past OKX's retention.
    Transient REST, Redis or database errors put the gap back to `open` and propagate, for the task to retry.
    `redis` (synchronous, for dead letters) and `keys` default to the project's; the rate limiter uses the
    project's Redis so every worker shares one REST budget.
    """
    keys = keys or pipeline_keys()
    gap = _claim(gap_id)
    if gap is None:
        logger.info("gap %s: not claimable (finished, or another worker is filling it); skipped", gap_id)
        return GapFillResult(gap_id, "skipped")
    subscription = gap.subscription
    with log_context(inst_id=subscription.instrument.inst_id, bar=subscription.timeframe.code, gap_id=gap.pk):
        return _fill_claimed(gap, rest_url=rest_url, redis=redis, keys=keys, now=now or timezone.now())


def _fill_claimed(gap: Gap, *, rest_url: str | None, redis: Any, keys: Keys, now: datetime) -> GapFillResult:
    subscription = gap.subscription
    instrument, timeframe = subscription.instrument, subscription.timeframe
    label = f"gap {gap.pk} {instrument.inst_id} {timeframe.code} {_Range(*_gap_ms(gap)).fmt()}"
    start_ms, end_ms = _gap_ms(gap)

    if not _rest_serves(timeframe):
        return _settle_unfillable(gap, label, _not_served_reason(timeframe))
    try:
        updates = asyncio.run(_with_rest_client(
            rest_url or settings.OKX_REST_URL, keys,
            lambda client: client.candle_range(instrument.inst_id, timeframe.code, start_ms, end_ms),
        ))
        fetched = _rest_rows(updates, receipt_version())
        result = candles_upsert(rows=fetched)
        if result.rejected:
            _dead_letter_rejected(redis if redis is not None else redis_client(), keys, result)
        remaining = [
            _Range(datetime_to_ms(r.start), datetime_to_ms(r.end))
            for r in candle_missing_ranges(instrument_id=instrument.pk, timeframe=timeframe, start=gap.start,
                                           end=gap.end)
        ]
    except PermanentError as exc:
        if exc.code not in _REFUSED_CODES:
            _reopen(gap, label, exc)
            raise
        # 51001: the instrument is gone from OKX; asking again cannot help.
        return _settle_unfillable(gap, label, f"OKX refused the request: {exc.msg} (code {exc.code})")
    except UnsupportedBar as exc:
        return _settle_unfillable(gap, label, str(exc))
    except Exception as exc:
        _reopen(gap, label, exc)
        raise
    settled = _settle(gap, label, remaining, len(fetched), result, now)
    if settled.state == GapState.FILLED:
        _count_gap_filled(redis if redis is not None else redis_client(), keys)
    return settled


def _reopen(gap: Gap, label: str, error: Exception) -> None:
    """Hand the gap back for a retry after the backoff; only if that fails too does it wait for the stale timeout.

    The failure may have been the database itself (a restart under a long fill): the connection it left behind
    is dead, so the update gets one fresh connection before giving up.
    """
    reason = f"attempt {gap.attempts} failed: {error}"[:2000]
    for last_try in (False, True):
        try:
            _finish(gap, state=GapState.OPEN, reason=reason)
            break
        except (OperationalError, InterfaceError) as exc:
            if last_try or connection.in_atomic_block:
                logger.error("%s: could not hand the gap back (%s); it is retried after %s", label, exc,
                             FILLING_STALE_AFTER)
                return
            connection.close()
        except DatabaseError as exc:
            logger.error("%s: could not hand the gap back (%s); it is retried after %s", label, exc,
                         FILLING_STALE_AFTER)
            return
    logger.warning("%s: attempt %d failed, left open for a retry: %s", label, gap.attempts, error)


def _gap_ms(gap: Gap) -> tuple[int, int]:
    return datetime_to_ms(gap.start), datetime_to_ms(gap.end)


def _settle_unfillable(gap: Gap, label: str, reason: str) -> GapFillResult:
    if not _finish(gap, state=GapState.UNFILLABLE, reason=reason):
        return GapFillResult(gap.pk, "skipped")
    logger.warning("%s: unfillable: %s", label, reason)
    return GapFillResult(gap.pk, GapState.UNFILLABLE, missing=gap.missing, reason=reason)


def _settle(
    gap: Gap, label: str, remaining: list[_Range], fetched: int, result: UpsertResult, now: datetime
) -> GapFillResult:
    """Decide the gap's state from what is still missing after the write."""
    timeframe, instrument = gap.subscription.timeframe, gap.subscription.instrument
    spec = timeframe.spec
    if not remaining:
        if not _finish(gap, state=GapState.FILLED, reason=""):
            return GapFillResult(gap.pk, "skipped", fetched, result.written)
        logger.info("%s: filled (%d fetched, %d written)", label, fetched, result.written)
        return GapFillResult(gap.pk, GapState.FILLED, fetched, result.written)

    limits = _reach_limits(timeframe, instrument, datetime_to_ms(now))
    parts = [part for rng in remaining for part in _partition(spec, rng, limits)]
    unreachable = [p for p in parts if p.reason]
    retryable = [p for p in parts if not p.reason]
    rejected = f"; {len(result.rejected)} rows refused: {result.rejected[0].reason}" if result.rejected else ""

    if not retryable:
        # Everything left lies where OKX has no candles: the gap narrows to that and is final.
        reason = "; ".join(dict.fromkeys(p.reason for p in unreachable if p.reason))
        missing = sum(_count(spec, p.start_ms, p.end_ms) for p in unreachable)
        span = _Range(unreachable[0].start_ms, unreachable[-1].end_ms)
        if not _narrow_and_finish(gap, span, missing, state=GapState.UNFILLABLE, reason=reason):
            return GapFillResult(gap.pk, "skipped", fetched, result.written)
        logger.warning("%s: %d candles unfillable (%s); %d written", label, missing, reason, result.written)
        return GapFillResult(gap.pk, GapState.UNFILLABLE, fetched, result.written, missing, reason)

    missing = sum(_count(spec, p.start_ms, p.end_ms) for p in retryable)
    if gap.attempts >= MAX_ATTEMPTS:
        state = GapState.UNFILLABLE
        reason = (f"REST returned no data after {gap.attempts} attempts: {missing} candles still missing"
                  f"{rejected}")
    else:
        state = GapState.OPEN
        reason = (f"REST returned no data for {missing} candles (attempt {gap.attempts} of {MAX_ATTEMPTS})"
                  f"{rejected}")
    span = _Range(retryable[0].start_ms, retryable[-1].end_ms)
    with transaction.atomic():
        if not _narrow_and_finish(gap, span, missing, state=state, reason=reason):
            return GapFillResult(gap.pk, "skipped", fetched, result.written)
        # The parts OKX cannot have (before listing, past retention) are recorded apart, final at once.
        for part in unreachable:
            Gap.objects.create(
                subscription=gap.subscription, start=ms_to_datetime(part.start_ms), end=ms_to_datetime(part.end_ms),
                missing=_count(spec, part.start_ms, part.end_ms), state=GapState.UNFILLABLE, reason=part.reason,
            )
    logger.warning("%s: %s: %s", label, state, reason)
    return GapFillResult(gap.pk, state, fetched, result.written, missing, reason)


def _narrow_and_finish(gap: Gap, span: _Range, missing: int, **fields: Any) -> bool:
    """Finish the gap with its bounds shrunk to what is still missing (the rest is filled or recorded apart)."""
    bounds = {"start": ms_to_datetime(span.start_ms), "end": ms_to_datetime(span.end_ms), "missing": missing}
    try:
        with transaction.atomic():
            return _finish(gap, **bounds, **fields)
    except IntegrityError:
        # Another unfinished gap starts there (only after a detection race): keep the bounds, lose nothing.
        return _finish(gap, missing=missing, **fields)


# --- candles closed without a confirm push ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wanted:
    inst_id: str
    bar: str
    open_ms: tuple[int, ...]  # sorted; one REST range from the first to the last

    @property
    def fields(self) -> list[str]:
        return [candle_field(self.inst_id, self.bar, ms) for ms in self.open_ms]


def _runs(spec: BarSpec, open_times: Sequence[int], span: int) -> Iterator[tuple[int, ...]]:
    """Sorted open times grouped so that each group fits in one page of `span` candles."""
    group: list[int] = []
    for ms in open_times:
        if group and _count(spec, group[0], ms) > span:
            yield tuple(group)
            group = []
        group.append(ms)
    if group:
        yield tuple(group)


def rest_needed_drain(
    *, redis: Any, keys: Keys, limit: int = 500, rest_url: str | None = None, now: datetime | None = None
) -> int:
    """Fetch from REST the candles queued in `keys.rest_needed`; return how many candles were written.

    Members leave the set only after their candle is written (or can never be): a crash loses nothing, and a
    second drain of the same member is a harmless rewrite. A candle REST does not have yet stays queued.
    One drain runs at a time (another returns 0 at once), and it fetches at most DRAIN_MAX_REQUESTS ranges,
    the most recent first. `redis` is a synchronous client.
    """
    lock = RedisLock(redis, f"{keys.prefix}lock:drain", DRAIN_LOCK_TTL_MS)
    if not lock.acquire():
        logger.info("rest_needed: another drain is running; skipped")
        return 0
    try:
        return _drain(redis=redis, keys=keys, limit=limit, rest_url=rest_url, now=now or timezone.now())
    finally:
        lock.release()


def _drain(*, redis: Any, keys: Keys, limit: int, rest_url: str | None, now: datetime) -> int:
    now_ms = datetime_to_ms(now)
    members = [m.decode() if isinstance(m, bytes) else m for m in (redis.srandmember(keys.rest_needed, limit) or [])]
    if not members:
        return 0
    done: list[str] = []
    by_series: dict[tuple[str, str], list[int]] = defaultdict(list)
    for member in members:
        try:
            inst_id, bar, open_ms = split_candle_field(member)
        except ValueError:
            logger.warning("rest_needed: dropping malformed member %r", member)
            done.append(member)
            continue
        by_series[(inst_id, bar)].append(open_ms)

    timeframes = {tf.code: tf for tf in Timeframe.objects.filter(code__in={bar for _, bar in by_series})}
    wanted: list[_Wanted] = []
    for (inst_id, bar), open_times in sorted(by_series.items()):
        fields = [candle_field(inst_id, bar, ms) for ms in open_times]
        timeframe = timeframes.get(bar)
        if timeframe is None or not _rest_serves(timeframe):
            why = "unknown bar" if timeframe is None else _not_served_reason(timeframe)
            logger.warning("rest_needed: dropping %d %s %s candles: %s", len(fields), inst_id, bar, why)
            done.extend(fields)
            continue
        spec = timeframe.spec
        retention = REST_RETENTION.get(bar)
        oldest_served = None if retention is None else now_ms - int(retention.total_seconds() * 1000)
        closed: list[int] = []
        for ms in sorted(set(open_times)):
            if oldest_served is not None and ms < oldest_served:
                logger.warning("rest_needed: dropping %s: past OKX REST's %s retention", candle_field(inst_id, bar, ms),
                               bar)
                done.append(candle_field(inst_id, bar, ms))
            elif spec.following(ms) <= now_ms:
                closed.append(ms)  # a candle still open stays queued: REST serves closed candles only
        wanted.extend(_Wanted(inst_id, bar, run) for run in _runs(spec, closed, DRAIN_SPAN_CANDLES))
    wanted.sort(key=lambda want: want.open_ms[-1], reverse=True)
    del wanted[DRAIN_MAX_REQUESTS:]  # still queued: the next run takes them

    fetched, failures = asyncio.run(_with_rest_client(rest_url or settings.OKX_REST_URL, keys,
                                                      lambda client: _fetch_wanted(client, wanted)))
    version = receipt_version()
    give_up_before = now_ms - int(DRAIN_GIVE_UP_AFTER.total_seconds() * 1000)
    rows: list[CandleRow] = []
    for want, updates in zip(wanted, fetched, strict=True):
        if updates is None:
            continue
        needed = set(want.open_ms)
        got = [row for row in _rest_rows(updates, version) if row.open_time_ms in needed]
        rows.extend(got)
        have = {row.open_time_ms for row in got}
        done.extend(candle_field(want.inst_id, want.bar, ms) for ms in have)
        spec = timeframes[want.bar].spec
        for ms in needed - have:
            if spec.following(ms) < give_up_before:
                logger.warning("rest_needed: REST still has no closed %s; giving up (the stored version stays)",
                               candle_field(want.inst_id, want.bar, ms))
                done.append(candle_field(want.inst_id, want.bar, ms))
    for want, error in failures:
        if isinstance(error, PermanentError) and error.code in _REFUSED_CODES:
            logger.warning("rest_needed: dropping %d %s %s candles: %s", len(want.open_ms), want.inst_id, want.bar,
                           error)
            done.extend(want.fields)

    result = candles_upsert(rows=rows)  # a database error propagates and leaves every member queued
    _dead_letter_rejected(redis, keys, result)
    if done:
        redis.srem(keys.rest_needed, *done)
    logger.info("rest_needed: %d queued, %d fetched, %d written, %d removed", len(members), len(rows), result.written,
                len(done))
    transient = [e for _, e in failures if not (isinstance(e, PermanentError) and e.code in _REFUSED_CODES)]
    if transient:
        # Written candles are kept and unqueued; the failed ranges stay queued for the next run.
        raise transient[0]
    return result.written


async def _fetch_wanted(
    client: OkxRestClient, wanted: Sequence[_Wanted]
) -> tuple[list[list[CandleUpdate] | None], list[tuple[_Wanted, Exception]]]:
    """Each range's candles (None where the request failed) and the failures, fetched a few at a time."""
    gate = asyncio.Semaphore(DRAIN_CONCURRENCY)
    failures: list[tuple[_Wanted, Exception]] = []

    async def one(want: _Wanted) -> list[CandleUpdate] | None:
        async with gate:
            try:
                return await client.candle_range(want.inst_id, want.bar, want.open_ms[0], want.open_ms[-1])
            except Exception as exc:
                logger.warning("rest_needed: %s %s fetch failed: %s", want.inst_id, want.bar, exc)
                failures.append((want, exc))
                return None

    results = await asyncio.gather(*(one(want) for want in wanted))
    return list(results), failures
