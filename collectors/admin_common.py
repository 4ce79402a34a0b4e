"""What every operator screen shares: a Redis client with short timeouts, the notice when Redis is down, and
queueing a Celery task without broker retries (the operator is waiting)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import redis as redis_lib
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest

logger = logging.getLogger(__name__)

@lru_cache(maxsize=4)
def _screen_redis(url: str) -> redis_lib.Redis:
    # Short timeouts: a page waits at most about a second for an unreachable Redis, then says so.
    return redis_lib.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)


def screen_redis() -> redis_lib.Redis:
    return _screen_redis(settings.REDIS_URL)


REDIS_DOWN = (redis_lib.RedisError, OSError)


def redis_notice(exc: Exception) -> str:
    return (f"Redis ({settings.REDIS_URL}) is unreachable: {exc}. Live figures are unavailable; "
            "collected candles wait in the collectors' memory and nothing is lost.")


def enqueue(task: Any, *args: Any) -> str | None:
    """Queue a task; the error text when the broker refused (no retries: the operator is waiting)."""
    try:
        task.apply_async(args, retry=False)
    except Exception as exc:  # kombu raises its own OperationalError, or OSError, when the broker is down
        logger.warning("could not queue %s%r: %r", task.name, args, exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def report_queueing(request: HttpRequest, queued: str | None, errors: list[str],
                    meanwhile: str = "Nothing was changed; try again when the broker is back.") -> None:
    """One message for what was queued, one for what the broker refused (and what happens to it)."""
    if queued:
        messages.success(request, queued)
    if errors:
        messages.error(request, f"Could not queue {len(errors)} task(s): {errors[0]}. {meanwhile}")
