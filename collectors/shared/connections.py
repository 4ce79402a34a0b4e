"""Redis clients and key names configured from settings (the only Django-aware module of the pipeline core)."""

from __future__ import annotations

from functools import lru_cache

import redis
import redis.asyncio
from django.conf import settings

from okxproject.keys import Keys


def pipeline_keys() -> Keys:
    return Keys(prefix=settings.REDIS_KEY_PREFIX)


@lru_cache(maxsize=4)
def _sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)


def redis_client() -> redis.Redis:
    """The process's synchronous Redis client (connection-pooled, safe to share between threads)."""
    return _sync_client(settings.REDIS_URL)


def async_redis_client() -> redis.asyncio.Redis:
    """A new asyncio Redis client for one event loop (asyncio clients must not cross loops)."""
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=10, socket_connect_timeout=5,
                                        health_check_interval=30)
