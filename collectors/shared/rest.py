"""The one access point to OKX's REST API: every caller gets its client from `okx_rest`.

The callers are the repair plane (gap fills, confirms, the backfill command), re-verification, the instrument
and index sync (the beat task, the admin's action, `sync_instruments`) and the management commands. Each client
made here draws on the budgets every process shares through Redis (`Keys.rate_limit`), so together they stay
inside OKX's limits, and adds its request, retry and rate-limit tallies to the shared counters when it closes
(`/metrics`, the admin's budget bars and the console's status line read both).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from django.conf import settings
from redis import RedisError

from collectors.okx.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from collectors.okx.rest import OkxRestClient
from collectors.shared.connections import async_redis_client, pipeline_keys
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Retries of one REST request inside the client (jittered backoff); module-level so tests can shorten it.
REST_MAX_RETRIES = 6
# The REST client's tallies (OkxRestClient.stats) and the Keys.counters fields they are added to.
REST_COUNTERS = {"requests": "rest_requests", "retries": "rest_retries", "rate_limited": "rest_rate_limited"}


@asynccontextmanager
async def okx_rest(keys: Keys | None = None, *, rest_url: str | None = None, max_retries: int | None = None,
                   numbers_as_text: bool = False) -> AsyncIterator[OkxRestClient]:
    """An OKX REST client on the shared budgets, for the event loop it is entered on.

    `rest_url` defaults to settings.OKX_REST_URL and `keys` to the pipeline's. `numbers_as_text` keeps OKX's
    number texts (for callers that store what they fetch). The tallies are added to the shared counters when
    the client closes, also when its work failed (a run that ends in 429s is the one whose 429s matter).

    With Redis unreachable the client still works on a budget of its own process (logged as a warning): an
    instrument sync or a command must not need Redis to reach OKX, and its retries absorb a 429.
    """
    keys = keys or pipeline_keys()
    aredis = async_redis_client()  # asyncio clients belong to one event loop: a new one per loop
    client: OkxRestClient | None = None
    try:
        limiter = await _limiter(aredis, keys)
        retries = REST_MAX_RETRIES if max_retries is None else max_retries
        async with OkxRestClient(rest_url or settings.OKX_REST_URL, limiter=limiter, max_retries=retries,
                                 numbers_as_text=numbers_as_text) as client:
            yield client
    finally:
        if client is not None:
            await _count_rest(aredis, keys, client.stats)
        await aredis.aclose()


async def with_okx_rest(work: Callable[[OkxRestClient], Awaitable[T]], keys: Keys | None = None, *,
                        rest_url: str | None = None, max_retries: int | None = None,
                        numbers_as_text: bool = False) -> T:
    """Run `work` with an `okx_rest` client."""
    async with okx_rest(keys, rest_url=rest_url, max_retries=max_retries, numbers_as_text=numbers_as_text) as client:
        return await work(client)


async def _limiter(aredis: Any, keys: Keys) -> RateLimiter:
    try:
        await aredis.ping()
    except (RedisError, OSError) as exc:
        logger.warning("Redis unreachable (%r): this REST client keeps a budget of its own, not the shared one", exc)
        return LocalRateLimiter()
    return RedisRateLimiter(aredis, prefix=keys.rate_limits)


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
    except (RedisError, OSError) as exc:
        # The requests were made; only their tally is lost. Raising would turn a done fill into a failed one.
        logger.warning("REST counters %s not recorded: %r", deltas, exc)


def rest_stats_record(*, redis: Any, keys: Keys, stats: dict[str, int]) -> None:
    """Add a REST client's tallies (`OkxRestClient.stats`) to the shared counters, synchronously. Never raises
    for Redis: the tally is lost."""
    deltas = _rest_deltas(stats)
    if not deltas:
        return
    try:
        pipe = redis.pipeline(transaction=False)
        for name, value in deltas.items():
            pipe.hincrby(keys.counters, name, value)
        pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning("REST counters %s not recorded: %r", deltas, exc)
