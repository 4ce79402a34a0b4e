"""Every change of a gap's state, in one place: record, claim, finish, reopen, expire, prune.

    open ──claim──▶ filling ──finish──▶ filled | unfillable
      ▲                │
      └────reopen──────┘  (a failed attempt, retried after a backoff)

    open | filling ──expire──▶ expired   (wholly behind the bar's retention horizon: nothing to fill)
    filled | unfillable | expired ──prune──▶ deleted, GAP_KEEP_DAYS after they finished

Concurrency without locks: a conditional UPDATE claims a gap (whoever updates the row owns it), and a
finish applies only while the worker still owns it (state `filling` and its attempt number).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Model
from django.utils import timezone

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.models import Gap, GapState, Instrument, RepairPriority, Subscription, Timeframe
from candles.series import Range

logger = logging.getLogger(__name__)

# After this many fills that left candles missing (REST answered, just without them), a gap is unfillable.
MAX_ATTEMPTS = 5
# A failed attempt is retried after RETRY_BACKOFF × 2^(attempts − 1), so a lagging REST cache gets time.
RETRY_BACKOFF = timedelta(seconds=30)
# A gap still `filling` after this long belongs to a worker that died, or to a fill that could not hand it back
# (the database was down when it failed); another may claim it. A fill is one or a few REST pages, so this is
# well above one; should a fill outlast it anyway, the second claim raises the attempt number, the first
# fill's settling is refused, and both wrote the same rows through the version rule.
FILLING_STALE_AFTER = timedelta(seconds=90)


def gap_record(subscription: Subscription, spec: BarSpec, rng: Range, *, priority: int) -> Gap | None:
    """A new gap for `rng` (unfillable at once when it carries a reason); None if an unfinished one starts there."""
    state = GapState.UNFILLABLE if rng.reason else GapState.OPEN
    try:
        # A savepoint: a lost race on the unique (subscription, start) of unfinished gaps must not abort
        # the caller's transaction.
        with transaction.atomic():
            return Gap.objects.create(
                subscription=subscription, start=ms_to_datetime(rng.start_ms), end=ms_to_datetime(rng.end_ms),
                missing=spec.count(rng.start_ms, rng.end_ms), state=state, reason=rng.reason or "",
                priority=priority,
            )
    except IntegrityError:
        logger.info("subscription %s: an unfinished gap from %s exists already", subscription.pk, rng.fmt())
        return None


def gaps_record_many(units: Iterable[tuple[int, Range, int, int]]) -> list[Gap]:
    """New gaps of many subscriptions in one INSERT: (subscription id, range, missing candles, priority) each,
    unfillable at once when the range carries a reason. One that starts where an unfinished gap of its
    subscription starts is skipped: that gap exists only after an explicit detection went ahead of the
    watermark, and already stands for these candles."""
    gaps = [
        Gap(subscription_id=subscription_id, start=ms_to_datetime(rng.start_ms), end=ms_to_datetime(rng.end_ms),
            missing=missing, state=GapState.UNFILLABLE if rng.reason else GapState.OPEN, reason=rng.reason or "",
            priority=priority)
        for subscription_id, rng, missing, priority in units
    ]
    Gap.objects.bulk_create(gaps, batch_size=5_000, ignore_conflicts=True)
    return gaps


def _columns(model: type[Model], alias: str) -> tuple[list[str], str]:
    names = [field.attname for field in model._meta.concrete_fields]
    return names, ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


_GAP_FIELDS, _GAP_COLUMNS = _columns(Gap, "g")
_SUBSCRIPTION_FIELDS, _SUBSCRIPTION_COLUMNS = _columns(Subscription, "s")
_INSTRUMENT_FIELDS, _INSTRUMENT_COLUMNS = _columns(Instrument, "i")
_TIMEFRAME_FIELDS, _TIMEFRAME_COLUMNS = _columns(Timeframe, "t")
# The claim and everything a fill reads of its gap, in one statement: through the ORM, the update and the
# select_related read that followed it cost more CPU (compiling them) than the rest of a one-page fill.
_CLAIM = f"""
WITH g AS (
    UPDATE candles_gap SET state = 'filling', attempts = attempts + 1, updated_at = %(now)s
    WHERE id = %(id)s AND (state = 'open' OR (state = 'filling' AND updated_at < %(stale)s))
    RETURNING *
)
SELECT {_GAP_COLUMNS}, {_SUBSCRIPTION_COLUMNS}, {_INSTRUMENT_COLUMNS}, {_TIMEFRAME_COLUMNS}
FROM g
JOIN candles_subscription s ON s.id = g.subscription_id
JOIN candles_instrument i ON i.id = s.instrument_id
JOIN candles_timeframe t ON t.id = s.timeframe_id
"""


def gap_claim(gap_id: int) -> Gap | None:
    """Take an open gap (or one whose filler died) for this worker; None when another owns it or it is done.

    The gap comes with its subscription, instrument and timeframe loaded."""
    moment = timezone.now()  # updated_at is wall-clock time; staleness is judged on the same clock
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, {"now": moment, "id": gap_id, "stale": moment - FILLING_STALE_AFTER})
        row = cursor.fetchone()
    if row is None:
        return None
    db = connection.alias
    ends = list(itertools.accumulate(map(len, (_GAP_FIELDS, _SUBSCRIPTION_FIELDS, _INSTRUMENT_FIELDS))))
    gap = Gap.from_db(db, _GAP_FIELDS, row[:ends[0]])
    subscription = Subscription.from_db(db, _SUBSCRIPTION_FIELDS, row[ends[0]:ends[1]])
    subscription.instrument = Instrument.from_db(db, _INSTRUMENT_FIELDS, row[ends[1]:ends[2]])
    subscription.timeframe = Timeframe.from_db(db, _TIMEFRAME_FIELDS, row[ends[2]:])
    gap.subscription = subscription
    return gap


def gap_finish(gap: Gap, **fields: Any) -> bool:
    """Update the gap if this worker still owns it (state filling, its attempt number)."""
    fields.setdefault("updated_at", timezone.now())
    assignments = ", ".join(f'"{Gap._meta.get_field(name).column}" = %s' for name in fields)
    with connection.cursor() as cursor:
        # One plain statement: the ORM's update cost a millisecond of compiling per fill.
        cursor.execute(f"UPDATE candles_gap SET {assignments} WHERE id = %s AND state = %s AND attempts = %s",
                       [*fields.values(), gap.pk, GapState.FILLING, gap.attempts])
        owned = cursor.rowcount
    if not owned:
        logger.warning("gap %s: claimed by another worker while this one filled it; leaving it to that one", gap.pk)
    return bool(owned)


def gap_narrow_and_finish(gap: Gap, span: Range, missing: int, **fields: Any) -> bool:
    """Finish the gap with its bounds shrunk to what is still missing (the rest is filled or recorded apart)."""
    bounds = {"start": ms_to_datetime(span.start_ms), "end": ms_to_datetime(span.end_ms), "missing": missing}
    try:
        with transaction.atomic():
            return gap_finish(gap, **bounds, **fields)
    except IntegrityError:
        # Another unfinished gap starts there (only after a detection race): keep the bounds, lose nothing.
        return gap_finish(gap, missing=missing, **fields)


def gap_reopen(gap: Gap, label: str, error: Exception) -> None:
    """Hand the gap back for a retry after the backoff; only if that fails too does it wait for the stale timeout.

    The failure may have been the database itself (a restart under a long fill): the connection it left behind
    is dead, so the update gets one fresh connection before giving up.
    """
    reason = f"attempt {gap.attempts} failed: {error}"[:2000]
    for last_try in (False, True):
        try:
            gap_finish(gap, state=GapState.OPEN, reason=reason)
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


def gap_release(gap_id: int, attempt: int, reason: str) -> bool:
    """Give back a gap this worker claimed (state filling, attempt number `attempt`) so another can take it now
    instead of after FILLING_STALE_AFTER. Harmless when it was finished or is another worker's."""
    return bool(Gap.objects.filter(pk=gap_id, state=GapState.FILLING, attempts=attempt).update(
        state=GapState.OPEN, reason=reason[:2000], updated_at=timezone.now()))


def gap_retry(gap_id: int, reason: str) -> bool:
    """An unfillable gap open again for a fresh set of attempts (an operator's "try again"). False when it is
    not unfillable any more; IntegrityError when an unfinished gap starts at the same open time."""
    with transaction.atomic():
        return bool(Gap.objects.filter(pk=gap_id, state=GapState.UNFILLABLE).update(
            state=GapState.OPEN, attempts=0, reason=reason[:2000], updated_at=timezone.now()))


# --- the retention horizon and old records -------------------------------------------------------------

# One bar's unfinished gaps wholly behind its horizon (%(first)s: the bar's first open time inside it). The
# planner reaches them along gap_state_end_idx (unfinished gaps ending before the horizon) or through the bar's
# subscriptions and the partial unique index on (subscription, start): either way the work follows the
# gaps behind the horizon, not every gap or every subscription.
_EXPIRE = """
UPDATE candles_gap g SET state = 'expired', updated_at = %(now)s, reason = %(reason)s
FROM candles_subscription s
WHERE g.subscription_id = s.id AND s.timeframe_id = %(timeframe)s
  AND g.state IN ('open', 'filling') AND g.start < %(first)s AND g."end" < %(first)s
"""

# One bar's open gaps reaching over its horizon lose their part behind it (`missing` can only shrink). Filling
# ones belong to their worker until it hands them back; a later run trims them then. An unfinished gap that
# already starts at the horizon (only after a detection race) stands for those candles: the crossing one is
# left alone, and expires once it is wholly behind.
_TRIM = """
UPDATE candles_gap g SET start = %(first)s, updated_at = %(now)s,
    missing = CASE WHEN %(seconds)s > 0
                   THEN LEAST(g.missing, (extract(epoch FROM g."end" - %(first)s) / %(seconds)s)::bigint + 1)
                   ELSE g.missing END
FROM candles_subscription s
WHERE g.subscription_id = s.id AND s.timeframe_id = %(timeframe)s
  AND g.state = 'open' AND g.start < %(first)s AND g."end" >= %(first)s
  AND NOT EXISTS (SELECT 1 FROM candles_gap o
                  WHERE o.subscription_id = g.subscription_id AND o.start = %(first)s
                    AND o.state IN ('open', 'filling'))
"""


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    expired: int = 0  # gaps wholly behind their bar's horizon, now `expired`
    trimmed: int = 0  # gaps reaching over it, now starting at it


def gaps_expire(*, now: datetime) -> ExpiryResult:
    """Unfinished gaps behind their bar's retention horizon: wholly behind → `expired`, so no REST is spent on
    candles the policy drops; reaching over it → trimmed to start at the bar's first open time inside it (not
    split: the part behind the horizon needs no record). Two set-based statements per bar with a retention;
    safe to run twice."""
    expired = trimmed = 0
    moment = timezone.now()  # updated_at is wall-clock time, as everywhere else in this module
    with transaction.atomic(), connection.cursor() as cursor:
        for timeframe in Timeframe.objects.filter(retention__isnull=False).order_by("pk"):
            horizon = timeframe.horizon(now)
            if horizon is None:
                continue
            first = ms_to_datetime(timeframe.spec.ceil(datetime_to_ms(horizon)))
            params = {"timeframe": timeframe.pk, "first": first, "now": moment,
                      "seconds": 0 if timeframe.is_calendar else timeframe.seconds,
                      "reason": f"behind the {timeframe.code} retention horizon ({first.isoformat()}): "
                                f"expired by policy"}
            cursor.execute(_EXPIRE, params)
            expired += cursor.rowcount
            cursor.execute(_TRIM, params)
            trimmed += cursor.rowcount
    if expired or trimmed:
        logger.info("gaps: %d expired behind the retention horizon, %d trimmed to start at it", expired, trimmed)
    return ExpiryResult(expired, trimmed)


FINISHED_STATES = (GapState.FILLED, GapState.UNFILLABLE, GapState.EXPIRED)
PRUNE_BATCH = 5_000

_PRUNE = """
DELETE FROM candles_gap WHERE id IN (
    SELECT id FROM candles_gap WHERE state = ANY(%(states)s) AND updated_at < %(before)s LIMIT %(batch)s
)
"""


def gaps_prune(*, older_than: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete finished gaps (filled, unfillable, expired) that finished before `older_than`, in batches of
    `batch` rows, each its own short transaction; returns how many. The table holds gaps, not candles: a
    batched DELETE here is cheap."""
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_PRUNE, {"states": list(FINISHED_STATES), "before": older_than, "batch": batch})
            count = cursor.rowcount
        deleted += count
        if count < batch:
            break
    if deleted:
        logger.info("gaps: %d finished gap records older than %s deleted", deleted, older_than.isoformat())
    return deleted


__all__ = ["FILLING_STALE_AFTER", "FINISHED_STATES", "MAX_ATTEMPTS", "RETRY_BACKOFF", "ExpiryResult",
           "RepairPriority", "gap_claim", "gap_finish", "gap_narrow_and_finish", "gap_record", "gap_release",
           "gap_reopen", "gap_retry", "gaps_expire", "gaps_prune"]
