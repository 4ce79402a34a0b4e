"""The one way the repair plane (and the other REST callers) get an OKX REST client.

Every client made here draws on the budget every worker shares through Redis, and adds its request, retry
and rate-limit tallies to the shared counters (`Keys.counters`, exported as metrics).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from redis import RedisError

from candles.storage import CandleRow, UpsertResult
from collectors.live.buffer import dead_letter_record
from collectors.okx.ratelimit import RedisRateLimiter
from collectors.okx.rest import Candle, OkxRestClient
from collectors.shared.connections import async_redis_client
from collectors.shared.keys import Keys

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Retries of one REST request inside the client (jittered backoff); module-level so tests can shorten it.
REST_MAX_RETRIES = 6
DEAD_LETTER_MAX = 100_000
# The REST client's tallies (OkxRestClient.stats) and the Keys.counters fields they are added to.
REST_COUNTERS = {"requests": "rest_requests", "retries": "rest_retries", "rate_limited": "rest_rate_limited"}
# OKX error codes that no retry can fix: bad parameter, instrument doesn't exist. A PermanentError without a
# code (a bad URL) is our configuration, not the gap's fault: the gap stays open.
REFUSED_CODES = frozenset({"51000", "51001"})


@asynccontextmanager
async def shared_rest_client(rest_url: str, keys: Keys, *, max_retries: int | None = None
                             ) -> AsyncIterator[OkxRestClient]:
    """A REST client whose requests draw on the budget every worker shares through Redis.

    The client's tallies are added to the shared counters when it closes, also when its work failed (a run that
    ends in 429s is the one whose 429s matter). Belongs to the event loop it was entered on.
    """
    aredis = async_redis_client()  # asyncio clients belong to one event loop: a new one per loop
    client: OkxRestClient | None = None
    try:
        limiter = RedisRateLimiter(aredis, prefix=keys.prefix + "ratelimit:")
        retries = REST_MAX_RETRIES if max_retries is None else max_retries
        # The repair only stores what it fetches: numbers stay OKX's text on their way to the database.
        async with OkxRestClient(rest_url, limiter=limiter, max_retries=retries, numbers_as_text=True) as client:
            yield client
    finally:
        if client is not None:
            await _count_rest(aredis, keys, client.stats)
        await aredis.aclose()


async def with_rest_client(rest_url: str, keys: Keys, work: Callable[[OkxRestClient], Awaitable[T]],
                           *, max_retries: int | None = None) -> T:
    """Run `work` with a `shared_rest_client`."""
    async with shared_rest_client(rest_url, keys, max_retries=max_retries) as client:
        return await work(client)


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
    """Add a REST client's tallies (`OkxRestClient.stats`) to the shared counters, for callers that use a
    client of their own (the instrument sync). Never raises for Redis: the tally is lost."""
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


def rest_rows(updates: Sequence[Candle], version: int) -> list[CandleRow]:
    """Closed candles only: REST caches lag, the open candle comes from the WebSocket. Each row keeps its candle's
    price kind (mark-price and index ones without volumes), so it is written to that series' row."""
    return [
        CandleRow(u.inst_id, u.bar, u.open_time_ms, u.open, u.high, u.low, u.close, u.vol, u.vol_ccy,
                  u.vol_ccy_quote, True, "rest", version, u.price)
        for u in updates
        if u.confirmed
    ]


def dead_letter_rejected(redis: Any, keys: Keys, result: UpsertResult) -> None:
    """Rows REST returned that the database refused go to the dead-letter list with their reason."""
    if not result.rejected:
        return
    records = [
        dead_letter_record(f"REST row refused: {i.reason}", str(list(i.row)),
                           f"{i.row.inst_id}|{_bar_part(i.row.bar, i.row.price)}")
        for i in result.rejected
    ]
    pipe = redis.pipeline(transaction=False)
    pipe.lpush(keys.dead_letters, *records)
    pipe.ltrim(keys.dead_letters, 0, DEAD_LETTER_MAX - 1)
    pipe.hincrby(keys.counters, "dead_letters", len(records))
    pipe.execute()


def _bar_part(bar: str, price: str) -> str:
    """A series' bar as the buffer's fields name it (`mark:1m` for a mark series; `1m` for trades)."""
    return bar if price == "trade" else f"{price}:{bar}"
