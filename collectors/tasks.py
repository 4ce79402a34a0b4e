"""Thin Celery tasks: each fetches its arguments, calls one service, and can run twice safely."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from collectors import admin_tasks  # noqa: F401  (Celery autodiscovers tasks.py only; this registers the admin's)
from collectors.shared.connections import pipeline_keys, redis_client

logger = logging.getLogger(__name__)


@shared_task(name="collectors.tasks.flush_buffer", ignore_result=True)
def flush_buffer(requested: bool = False, requested_at: float | None = None) -> int:
    """The scheduled flush (beat), or one a collector `requested` (at `requested_at`, epoch seconds) for closed
    candles waiting in the buffer.

    A requested run stands for the scheduled one due within most of an interval, which then gives way. How
    long requests waited for a flush worker is counted (`flush_requests`, `flush_request_wait_ms`).
    """
    from django.conf import settings

    from collectors.live.flush import buffer_flush

    redis, keys = redis_client(), pipeline_keys()
    if requested and requested_at is not None:
        wait_ms = max(0, round((time.time() - requested_at) * 1000))
        with redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.counters, "flush_requests", 1)
            pipe.hincrby(keys.counters, "flush_request_wait_ms", wait_ms)
            pipe.execute()

    claim_s = 0.9 * settings.FLUSH_INTERVAL_S if requested else 0.0
    result = buffer_flush(redis=redis, keys=keys, on_committed=enqueue_webhooks,
                          claim_s=claim_s, defer_to_claim=not requested)
    return 0 if result.skipped else result.written


def enqueue_webhooks(rows) -> None:
    from collectors.delivery.webhooks import webhook_jobs_for, webhook_jobs_unsent
    from collectors.shared.connections import pipeline_keys, redis_client

    for job in webhook_jobs_unsent(redis_client(), pipeline_keys(), webhook_jobs_for(rows)):
        deliver_webhook.delay(**job.as_task_kwargs())


@shared_task(name="collectors.tasks.deliver_webhook", bind=True, ignore_result=True,
             max_retries=None)
def deliver_webhook(self, subscription_id: int, url: str, body: str, attempt: int = 1) -> None:
    from django.conf import settings

    from collectors.delivery.webhooks import webhook_deliver

    outcome = webhook_deliver(subscription_id=subscription_id, url=url, body=body.encode(), attempt=attempt)
    if outcome.should_retry and attempt < settings.WEBHOOK_MAX_ATTEMPTS:
        # A new message per attempt (not self.retry) keeps the attempt number in the arguments.
        deliver_webhook.apply_async((subscription_id, url, body, attempt + 1), countdown=min(300, 2 ** attempt))


@shared_task(name="collectors.tasks.detect_gaps", ignore_result=True)
def detect_gaps() -> int:
    """Record the holes among the candles closed since each series' watermark; returns the gaps recorded."""
    from collectors.repair.detect import detection_advance

    return detection_advance().gaps


# A repair run ends this long after it starts, a little under its beat period, so one run follows the other
# and the budgets are rarely idle; a run still going when the next is due makes that one skip (a lock).
REPAIR_BUDGET_S = 4.5


@shared_task(name="collectors.tasks.repair_candles", ignore_result=True)
def repair_candles(budget_s: float = REPAIR_BUDGET_S) -> int:
    """Spend OKX's REST budgets on missing and unconfirmed candles, in priority order; returns candles written.

    Repaired candles reach the webhooks as live confirmed ones do.
    """
    from collectors.repair.schedule import repair_run

    result = repair_run(budget_s=budget_s, on_written=enqueue_webhooks)
    return sum(result.repaired.values())


@shared_task(name="collectors.tasks.sync_instruments", ignore_result=True)
def sync_instruments() -> str:
    """The scheduled sync of the default instrument types: new listings appear, rules follow them, expired and
    delisted instruments' subscriptions end."""
    from collectors.instruments import instruments_refresh

    return str(instruments_refresh())


HEALTH_LOCK_TTL_MS = 120_000


@shared_task(name="collectors.tasks.check_health", ignore_result=True)
def check_health() -> None:
    from candles.subscriptions import subscriptions_end_finished
    from collectors.live.flush import buffer_alarm
    from collectors.monitoring.health import health_check
    from collectors.shared.locks import RedisLock

    redis, keys = redis_client(), pipeline_keys()
    # One check at a time: runs that overlapped (a slow one at a start) took every slot of the worker that
    # also runs the repairs.
    lock = RedisLock(redis, keys.health_lock, HEALTH_LOCK_TTL_MS)
    if not lock.acquire():
        logger.info("check_health: another run is under way; skipped")
        return
    try:
        # A future expires between syncs: its subscriptions end within one health period, not one sync period.
        subscriptions_end_finished()
        health_check(redis=redis, keys=keys)
        buffer_alarm(redis=redis, keys=keys)  # logs a warning while the buffer is over BUFFER_ALARM_ENTRIES
    finally:
        lock.release()


@shared_task(name="collectors.tasks.maintain_storage", ignore_result=True)
def maintain_storage() -> str:
    """Partitions made ahead, one closed out, those past their bar's retention retired, gap records behind the
    horizon expired and old ones pruned. One run at a time (a run that finds another under way is skipped)."""
    from collectors.maintenance import storage_maintain

    return str(storage_maintain())
