"""Thin Celery tasks: each fetches its arguments, calls one service, and can run twice safely."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from collectors import admin_tasks  # noqa: F401  (Celery autodiscovers tasks.py only; this registers the admin's)
from collectors.pipeline.connections import pipeline_keys, redis_client

logger = logging.getLogger(__name__)


@shared_task(name="collectors.tasks.flush_buffer", ignore_result=True)
def flush_buffer(requested: bool = False, requested_at: float | None = None) -> int:
    """The scheduled flush (beat), or one a collector `requested` (at `requested_at`, epoch seconds) for closed
    candles waiting in the buffer.

    A requested run stands for the scheduled one due within most of an interval, which then gives way. How
    long requests waited for a flush worker is counted (`flush_requests`, `flush_request_wait_ms`).
    """
    from django.conf import settings

    from collectors.pipeline.flush import buffer_flush

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
    from collectors.pipeline.webhooks import webhook_jobs_for

    for job in webhook_jobs_for(rows):
        deliver_webhook.delay(**job.as_task_kwargs())


@shared_task(name="collectors.tasks.deliver_webhook", bind=True, ignore_result=True,
             max_retries=None)
def deliver_webhook(self, subscription_id: int, url: str, body: str, attempt: int = 1) -> None:
    from django.conf import settings

    from collectors.pipeline.webhooks import webhook_deliver

    outcome = webhook_deliver(subscription_id=subscription_id, url=url, body=body.encode(), attempt=attempt)
    if outcome.should_retry and attempt < settings.WEBHOOK_MAX_ATTEMPTS:
        # A new message per attempt (not self.retry) keeps the attempt number in the arguments.
        deliver_webhook.apply_async((subscription_id, url, body, attempt + 1), countdown=min(300, 2 ** attempt))


@shared_task(name="collectors.tasks.detect_gaps", ignore_result=True)
def detect_gaps() -> int:
    """The scheduled scan of every active subscription's recent past."""
    from collectors.pipeline.backfill import gaps_detect_recent

    return gaps_detect_recent()


@shared_task(name="collectors.tasks.recheck_gaps", ignore_result=True)
def recheck_gaps() -> int:
    """Gap checks the collectors ask for after every (re)subscription of a channel."""
    from collectors.pipeline.backfill import gaps_recheck

    return gaps_recheck(redis=redis_client(), keys=pipeline_keys())


# A fill_gaps run stops taking new gaps after this long, so runs stay shorter than their 5 s period and the
# next one starts again from the most recent gaps.
FILL_BUDGET_S = 4.0
# Gaps filled at once: each is one or a few REST requests; the shared rate limiter, not this, sets the pace.
# Filling one after the other healed about 3 gaps/s, below what a burst of reconnects creates.
FILL_CONCURRENCY = 4
# Gaps a run may take, in `gaps_next` order; the FILL_BUDGET_S deadline, not this, ends a busy run. Enough
# that when bars take turns, each budget still has work for the whole run (OKX's history budget alone
# serves about 38 single-request gaps in 4 s).
FILL_CANDIDATES = 120


@shared_task(name="collectors.tasks.fill_gaps", ignore_result=True)
def fill_gaps(limit: int = FILL_CANDIDATES) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from collectors.pipeline.backfill import gap_fill, gaps_next

    redis, keys = redis_client(), pipeline_keys()
    deadline = time.monotonic() + FILL_BUDGET_S

    def fill(gap_id: int) -> int:
        if time.monotonic() > deadline:
            return 0
        try:
            return 0 if gap_fill(gap_id=gap_id, redis=redis, keys=keys).skipped else 1
        except Exception:
            logger.exception("gap %s: fill failed; it stays open and is retried", gap_id)
            return 0
        finally:
            connection.close()  # each thread has its own database connection

    # Claims are atomic per gap, so concurrent fills (here, or in another worker) never fill one gap twice.
    with ThreadPoolExecutor(max_workers=FILL_CONCURRENCY, thread_name_prefix="fill-gaps") as pool:
        return sum(pool.map(fill, gaps_next(limit=limit)))


@shared_task(name="collectors.tasks.drain_rest_needed", ignore_result=True)
def drain_rest_needed() -> int:
    from collectors.pipeline.backfill import rest_needed_drain

    return rest_needed_drain(redis=redis_client(), keys=pipeline_keys())


@shared_task(name="collectors.tasks.sync_instruments", ignore_result=True)
def sync_instruments() -> str:
    """The scheduled sync of the default instrument types: new listings appear, rules follow them, expired and
    delisted instruments' subscriptions end."""
    from collectors.instruments import instruments_refresh

    return str(instruments_refresh())


@shared_task(name="collectors.tasks.check_health", ignore_result=True)
def check_health() -> None:
    from candles.subscriptions import subscriptions_end_finished
    from collectors.pipeline.flush import buffer_alarm
    from collectors.pipeline.health import health_check

    redis, keys = redis_client(), pipeline_keys()
    # A future expires between syncs: its subscriptions end within one health period, not one sync period.
    subscriptions_end_finished()
    health_check(redis=redis, keys=keys)
    buffer_alarm(redis=redis, keys=keys)  # logs a warning while the buffer is over BUFFER_ALARM_ENTRIES
