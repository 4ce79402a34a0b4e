"""Thin Celery tasks: each fetches its arguments, calls one service, and can run twice safely."""

from __future__ import annotations

import logging

from celery import shared_task

from collectors.pipeline.connections import pipeline_keys, redis_client

logger = logging.getLogger(__name__)


@shared_task(name="collectors.tasks.flush_buffer", ignore_result=True)
def flush_buffer() -> int:
    from collectors.pipeline.flush import buffer_flush

    result = buffer_flush(redis=redis_client(), keys=pipeline_keys(), on_committed=enqueue_webhooks)
    return 0 if result.skipped else result.written


def enqueue_webhooks(rows) -> None:
    from collectors.pipeline.webhooks import webhook_jobs_for

    for job in webhook_jobs_for(rows):
        deliver_webhook.delay(job.subscription_id, job.url, job.body.decode())


@shared_task(name="collectors.tasks.deliver_webhook", bind=True, ignore_result=True, queue="webhooks",
             max_retries=None)
def deliver_webhook(self, subscription_id: int, url: str, body: str, attempt: int = 1) -> None:
    from django.conf import settings

    from collectors.pipeline.webhooks import webhook_deliver

    outcome = webhook_deliver(subscription_id=subscription_id, url=url, body=body.encode(), attempt=attempt)
    if not outcome.ok and attempt < settings.WEBHOOK_MAX_ATTEMPTS:
        # A new message per attempt (not self.retry) keeps the attempt number in the arguments.
        deliver_webhook.apply_async((subscription_id, url, body, attempt + 1), countdown=min(300, 2 ** attempt))


@shared_task(name="collectors.tasks.detect_gaps", ignore_result=True)
def detect_gaps() -> int:
    from candles.models import Subscription
    from collectors.pipeline.backfill import gaps_detect, gaps_detect_recent
    from collectors.pipeline.keys import split_candle_field  # noqa: F401  (documented format "inst|bar")

    redis, keys = redis_client(), pipeline_keys()
    rechecks = redis.spop(f"{keys.prefix}gaps:recheck", 1000) or []
    found = 0
    for member in rechecks:
        inst_id, bar = member.decode().split("|", 1)
        sub = Subscription.objects.filter(instrument__inst_id=inst_id, timeframe__code=bar, is_active=True).first()
        if sub is not None:
            found += len(gaps_detect(subscription_id=sub.pk))
    return found + gaps_detect_recent()


@shared_task(name="collectors.tasks.fill_gaps", ignore_result=True)
def fill_gaps(limit: int = 4) -> int:
    from collectors.pipeline.backfill import gap_fill, gaps_next

    redis, keys = redis_client(), pipeline_keys()
    filled = 0
    for gap_id in gaps_next(limit=limit):
        try:
            gap_fill(gap_id=gap_id, redis=redis, keys=keys)
            filled += 1
        except Exception:
            logger.exception("gap %s: fill failed; it stays open and is retried", gap_id)
    return filled


@shared_task(name="collectors.tasks.drain_rest_needed", ignore_result=True)
def drain_rest_needed() -> int:
    from collectors.pipeline.backfill import rest_needed_drain

    return rest_needed_drain(redis=redis_client(), keys=pipeline_keys())


@shared_task(name="collectors.tasks.check_health", ignore_result=True)
def check_health() -> None:
    from collectors.pipeline.health import health_check

    health_check(redis=redis_client(), keys=pipeline_keys())
