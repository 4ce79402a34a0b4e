"""Celery tasks the admin queues: heavy operator actions never run inside a web request.

Thin like `collectors/tasks.py`: primitive arguments, one service each, safe to run twice. Long ranges are
worked on in bounded runs; a run that used up its budget queues its own continuation, so a large request
shares the backfill queue with the scheduled work instead of holding a worker for hours. The REST tasks
belong on the `backfill` queue (CELERY_TASK_ROUTES: "collectors.admin_tasks.*" except sync_instruments),
next to the scheduled backfill, never on `flush`: an operator's request must not delay ingest.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task

from collectors.shared.connections import pipeline_keys, redis_client

logger = logging.getLogger(__name__)

# Time one run may spend before it hands the rest of its range to a new message.
RUN_BUDGET_S = 30.0


@shared_task(name="collectors.admin_tasks.backfill_range", ignore_result=True)
def backfill_range(subscription_id: int, start_ms: int, end_ms: int) -> dict:
    """Record the range's missing candles as gaps (durable work), then fill them."""
    from candles.bars import ms_to_datetime
    from collectors.repair.detect import gaps_detect

    recorded = gaps_detect(subscription_id=subscription_id, start=ms_to_datetime(start_ms), end=ms_to_datetime(end_ms))
    filled = fill_range_gaps(subscription_id, start_ms, end_ms)
    return {"recorded": len(recorded), **filled}


@shared_task(name="collectors.admin_tasks.fill_range_gaps", ignore_result=True)
def fill_range_gaps(subscription_id: int, start_ms: int, end_ms: int) -> dict:
    """Fill the open gaps of one subscription inside [start, end], newest first, for RUN_BUDGET_S."""
    from candles.bars import ms_to_datetime
    from candles.models import Gap, GapState
    from collectors.repair.fill import gap_fill

    redis, keys = redis_client(), pipeline_keys()
    gap_ids = list(
        Gap.objects.filter(subscription_id=subscription_id, state=GapState.OPEN,
                           end__gte=ms_to_datetime(start_ms), start__lte=ms_to_datetime(end_ms))
        .order_by("-end").values_list("pk", flat=True)
    )
    deadline = time.monotonic() + RUN_BUDGET_S
    filled = failed = 0
    for done, gap_id in enumerate(gap_ids, start=1):
        try:
            filled += 0 if gap_fill(gap_id=gap_id, redis=redis, keys=keys).skipped else 1
        except Exception:
            failed += 1  # the gap is open again; the scheduled fill_gaps retries it with backoff
            logger.exception("gap %s: fill failed; it stays open and is retried", gap_id)
        if done < len(gap_ids) and time.monotonic() > deadline:
            # Only a run that filled something continues: while REST fails, the scheduled fill_gaps retries
            # with backoff instead of this task looping.
            if filled:
                fill_range_gaps.apply_async((subscription_id, start_ms, end_ms), countdown=1)
            return {"filled": filled, "failed": failed, "left": len(gap_ids) - done, "continued": bool(filled)}
    return {"filled": filled, "failed": failed, "left": 0, "continued": False}


@shared_task(name="collectors.admin_tasks.fill_gap", ignore_result=True)
def fill_gap(gap_id: int) -> str:
    from collectors.repair.fill import gap_fill

    return gap_fill(gap_id=gap_id, redis=redis_client(), keys=pipeline_keys()).state


@shared_task(name="collectors.admin_tasks.verify_range", ignore_result=True)
def verify_range(inst_id: str, bar: str, start_ms: int, end_ms: int, price: str = "trade") -> dict:
    """Compare [start, end] of the `price` series of `inst_id` (trade, mark or index) with OKX REST and rewrite
    differences; the report is kept for the dashboard."""
    from candles.bars import ms_to_datetime
    from collectors.repair.verify import NotVerifiable, candles_verify, verify_report_save

    keys = pipeline_keys()
    try:
        report = candles_verify(inst_id=inst_id, bar=bar, start=ms_to_datetime(start_ms),
                                end=ms_to_datetime(end_ms), keys=keys, budget_s=RUN_BUDGET_S, price=price)
    except NotVerifiable as exc:
        logger.warning("verify %s %s %s: %s", inst_id, price, bar, exc)
        return {"error": str(exc)}
    verify_report_save(redis_client(), keys, report)
    if report.next_start_ms is not None:
        verify_range.apply_async((inst_id, bar, report.next_start_ms, end_ms, price), countdown=1)
    return report.as_dict()


@shared_task(name="collectors.admin_tasks.sync_instruments", ignore_result=True)
def sync_instruments(inst_types: list[str]) -> str:
    from collectors.instruments import instruments_refresh

    return str(instruments_refresh(inst_types=inst_types))
