"""One unit of repair work: fetch a range from OKX REST, write it through `candles_upsert`, settle.

A gap fill claims its gap (`candles.gaps`), fetches the range, writes the closed candles and checks the range
again: filled, unfillable with a reason, or open for a retry. A confirm repair fetches the span of one
series that holds closed candles stored without their confirm push. Either way the candles written reach
`on_written` (the webhooks) exactly as live confirmed candles do. No candle is ever made up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from redis import RedisError

from candles.bars import datetime_to_ms
from candles.gaps import (
    MAX_ATTEMPTS,
    gap_claim,
    gap_finish,
    gap_narrow_and_finish,
    gap_record,
    gap_reopen,
)
from candles.models import Gap, GapState, PriceKind
from candles.series import Range, candle_missing_ranges
from candles.storage import CandleRow, UpsertResult, candles_upsert
from collectors.live.buffer import receipt_version
from collectors.okx.rest import Candle, PermanentError, UnsupportedBar
from collectors.repair.reach import not_served_reason, partition, reach_limits, rest_serves
from collectors.repair.rest import REFUSED_CODES, dead_letter_rejected, rest_rows
from collectors.shared.connections import pipeline_keys, redis_client
from collectors.shared.rest import with_okx_rest
from okxproject.keys import Keys
from okxproject.logs import log_context

logger = logging.getLogger(__name__)

OnWritten = Callable[[list[CandleRow]], object]
# (inst_id, bar, first open time, last open time, price kind) -> every candle of that kind REST has in that range,
# oldest first, from the kind's own endpoints.
Fetch = Callable[[str, str, int, int, str], list[Candle]]


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


def gap_fill(
    *,
    gap_id: int,
    rest_url: str | None = None,
    redis: Any = None,
    keys: Keys | None = None,
    now: datetime | None = None,
    fetch: Fetch | None = None,
    on_written: OnWritten | None = None,
    tally: Counter | None = None,
) -> GapFillResult:
    """Claim one gap, fetch its range from OKX REST, write the confirmed candles, and settle its state.

    Returns "skipped" when the gap is not claimable (another worker fills it, or it is finished).
    `now` (default: the clock) decides which remaining candles lie past OKX's retention. Transient REST, Redis
    or database errors put the gap back to `open` and propagate, for the caller to retry. `fetch` is how the
    range is fetched (the scheduler passes its worker's client); by default a client on the shared budget.
    A filled gap counts in the shared counters (`gaps_filled`) at once, or in `tally` for the caller to record
    with `gaps_filled_record` (the scheduler does, once per worker and run).
    """
    keys = keys or pipeline_keys()
    gap = gap_claim(gap_id)
    if gap is None:
        logger.info("gap %s: not claimable (finished, or another worker is filling it); skipped", gap_id)
        return GapFillResult(gap_id, "skipped")
    subscription = gap.subscription
    with log_context(inst_id=subscription.instrument.inst_id, bar=subscription.timeframe.code, gap_id=gap.pk):
        return _fill_claimed(gap, redis=redis, keys=keys, now=now or timezone.now(),
                             fetch=fetch or shared_budget_fetch(rest_url, keys), on_written=on_written, tally=tally)


def shared_budget_fetch(rest_url: str | None, keys: Keys) -> Fetch:
    """A `Fetch` that makes a client on the shared budget for each call (for one-off fills)."""
    def fetch(inst_id: str, bar: str, start_ms: int, end_ms: int, price: str) -> list[Candle]:
        return asyncio.run(with_okx_rest(lambda c: c.candle_range(inst_id, bar, start_ms, end_ms, price=price),
                                         keys, rest_url=rest_url, numbers_as_text=True))
    return fetch


def _fill_claimed(gap: Gap, *, redis: Any, keys: Keys, now: datetime, fetch: Fetch,
                  on_written: OnWritten | None, tally: Counter | None) -> GapFillResult:
    subscription = gap.subscription
    instrument, timeframe = subscription.instrument, subscription.timeframe
    start_ms, end_ms = datetime_to_ms(gap.start), datetime_to_ms(gap.end)
    price = instrument.price
    kind = "" if price == PriceKind.TRADE else f" {price}"
    label = f"gap {gap.pk} {instrument.inst_id}{kind} {timeframe.code} {Range(start_ms, end_ms).fmt()}"

    if not rest_serves(timeframe, price):
        return _settle_unfillable(gap, label, not_served_reason(timeframe, price))
    try:
        updates = fetch(instrument.inst_id, timeframe.code, start_ms, end_ms, price)
        # A gap's range may hold stored candles between its holes: those already final are not written again,
        # nor announced again to the webhooks.
        final = _confirmed_open_times(instrument.pk, timeframe.pk, gap.start, gap.end)
        fetched = [row for row in rest_rows(updates, receipt_version())
                   if start_ms <= row.open_time_ms <= end_ms and row.open_time_ms not in final]
        result = candles_upsert(rows=fetched)
        if result.rejected:
            dead_letter_rejected(redis if redis is not None else redis_client(), keys, result)
        remaining = _still_missing(gap, final, fetched, result)
    except PermanentError as exc:
        if exc.code not in REFUSED_CODES:
            gap_reopen(gap, label, exc)
            raise
        # 51001: the instrument is gone from OKX; asking again cannot help.
        return _settle_unfillable(gap, label, f"OKX refused the request: {exc.msg} (code {exc.code})")
    except UnsupportedBar as exc:
        return _settle_unfillable(gap, label, str(exc))
    except Exception as exc:
        gap_reopen(gap, label, exc)
        raise
    settled = _settle(gap, label, remaining, len(fetched), result, now)
    if result.written:
        notify_written(on_written, fetched)
    if settled.state == GapState.FILLED:
        if tally is not None:
            tally["gaps_filled"] += 1
        else:
            gaps_filled_record(redis=redis if redis is not None else redis_client(), keys=keys, count=1)
    return settled


# Open times a fill works out itself after its write, beyond which it asks the database (a gap is one page).
KNOWN_MISSING_MAX = 1_000


def _still_missing(gap: Gap, final: set[int], fetched: Sequence[CandleRow], result: UpsertResult) -> list[Range]:
    """The runs of open times of the gap still without a confirmed candle after the write.

    When every fetched row was written, they are known without asking again: those neither final before the
    write nor written by it (a concurrent writer can only have confirmed more; the next attempt sees those).
    Otherwise (rows refused, or left unchanged by the version rule) the database is asked.
    """
    timeframe = gap.subscription.timeframe
    spec = timeframe.spec
    start_ms, end_ms = datetime_to_ms(gap.start), datetime_to_ms(gap.end)
    if result.written == len(fetched) and spec.count(start_ms, end_ms) <= KNOWN_MISSING_MAX:
        written = {row.open_time_ms for row in fetched}
        runs: list[Range] = []
        for open_ms in spec.open_times(start_ms, end_ms):
            if open_ms in final or open_ms in written:
                continue
            if runs and spec.following(runs[-1].end_ms) == open_ms:
                runs[-1] = Range(runs[-1].start_ms, open_ms)
            else:
                runs.append(Range(open_ms, open_ms))
        return runs
    return [Range(datetime_to_ms(r.start), datetime_to_ms(r.end))
            for r in candle_missing_ranges(instrument_id=gap.subscription.instrument_id, timeframe=timeframe,
                                           start=gap.start, end=gap.end)]


_CONFIRMED_OPEN_TIMES = """
SELECT (extract(epoch FROM open_time) * 1000)::bigint FROM candles_candle
WHERE instrument_id = %s AND timeframe_id = %s AND open_time >= %s AND open_time <= %s AND confirmed
"""


def _confirmed_open_times(instrument_id: int, timeframe_id: int, start: datetime, end: datetime) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(_CONFIRMED_OPEN_TIMES, [instrument_id, timeframe_id, start, end])
        return {open_ms for (open_ms,) in cursor.fetchall()}


def notify_written(on_written: OnWritten | None, rows: list[CandleRow]) -> None:
    """Tell the listener (webhooks) about repaired candles; its failure never undoes the write."""
    if on_written is None or not rows:
        return
    try:
        on_written(rows)
    except Exception:
        logger.exception("repaired candles written, but their %d notifications failed", len(rows))


def gaps_filled_record(*, redis: Any, keys: Keys, count: int) -> None:
    """Add filled gaps to the shared counters; a Redis failure loses the tally, never the fill."""
    if not count:
        return
    try:
        redis.hincrby(keys.counters, "gaps_filled", count)
    except RedisError as exc:
        logger.warning("counter gaps_filled not incremented by %d: %r", count, exc)


def _settle_unfillable(gap: Gap, label: str, reason: str) -> GapFillResult:
    if not gap_finish(gap, state=GapState.UNFILLABLE, reason=reason):
        return GapFillResult(gap.pk, "skipped")
    logger.warning("%s: unfillable: %s", label, reason)
    return GapFillResult(gap.pk, GapState.UNFILLABLE, missing=gap.missing, reason=reason)


def _settle(gap: Gap, label: str, remaining: Sequence[Range], fetched: int, result: UpsertResult,
            now: datetime) -> GapFillResult:
    """Decide the gap's state from what is still missing after the write."""
    timeframe, instrument = gap.subscription.timeframe, gap.subscription.instrument
    spec = timeframe.spec
    if not remaining:
        if not gap_finish(gap, state=GapState.FILLED, reason=""):
            return GapFillResult(gap.pk, "skipped", fetched, result.written)
        logger.info("%s: filled (%d fetched, %d written)", label, fetched, result.written)
        return GapFillResult(gap.pk, GapState.FILLED, fetched, result.written)

    limits = reach_limits(timeframe, instrument, datetime_to_ms(now))
    parts = [part for rng in remaining for part in partition(spec, rng, limits)]
    unreachable = [p for p in parts if p.reason]
    retryable = [p for p in parts if not p.reason]
    rejected = f"; {len(result.rejected)} rows refused: {result.rejected[0].reason}" if result.rejected else ""

    if not retryable:
        # Everything left lies where OKX has no candles: the gap narrows to that and is final.
        reason = "; ".join(dict.fromkeys(p.reason for p in unreachable if p.reason))
        missing = sum(spec.count(p.start_ms, p.end_ms) for p in unreachable)
        span = Range(unreachable[0].start_ms, unreachable[-1].end_ms)
        if not gap_narrow_and_finish(gap, span, missing, state=GapState.UNFILLABLE, reason=reason):
            return GapFillResult(gap.pk, "skipped", fetched, result.written)
        logger.warning("%s: %d candles unfillable (%s); %d written", label, missing, reason, result.written)
        return GapFillResult(gap.pk, GapState.UNFILLABLE, fetched, result.written, missing, reason)

    missing = sum(spec.count(p.start_ms, p.end_ms) for p in retryable)
    if gap.attempts >= MAX_ATTEMPTS:
        state = GapState.UNFILLABLE
        reason = (f"REST returned no data after {gap.attempts} attempts: {missing} candles still missing"
                  f"{rejected}")
    else:
        state = GapState.OPEN
        reason = (f"REST returned no data for {missing} candles (attempt {gap.attempts} of {MAX_ATTEMPTS})"
                  f"{rejected}")
    span = Range(retryable[0].start_ms, retryable[-1].end_ms)
    with transaction.atomic():
        if not gap_narrow_and_finish(gap, span, missing, state=state, reason=reason):
            return GapFillResult(gap.pk, "skipped", fetched, result.written)
        # The parts OKX cannot have (before listing, past retention) are recorded apart, final at once.
        for part in unreachable:
            gap_record(gap.subscription, spec, part, priority=gap.priority)
    logger.warning("%s: %s: %s", label, state, reason)
    return GapFillResult(gap.pk, state, fetched, result.written, missing, reason)

