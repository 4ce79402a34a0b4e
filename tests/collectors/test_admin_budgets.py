"""The dashboard's REST budget bars: one per candle endpoint, trade, mark-price and index each apart."""

from __future__ import annotations

import asyncio
import re

import pytest
import redis as redis_lib
from django.conf import settings
from django.urls import reverse

from collectors.monitoring.budgets import rest_budget_use
from collectors.okx.ratelimit import RedisRateLimiter
from collectors.okx.rest_endpoints import HISTORY_MARK_PRICE_CANDLES, INDEX_CANDLES, Endpoint

pytestmark = pytest.mark.django_db


def spend(keys, endpoint: Endpoint, requests: int) -> None:
    """Requests admitted on an endpoint's shared budget, as the REST client takes them."""
    async def take() -> None:
        aredis = redis_lib.asyncio.Redis.from_url(settings.REDIS_URL)
        limiter = RedisRateLimiter(aredis, prefix=keys.prefix + "ratelimit:")
        for _ in range(requests):
            await limiter.acquire(endpoint.budget, endpoint.limit, endpoint.period_s)
        await aredis.aclose()
    asyncio.run(take())


def test_mark_and_index_candle_budgets_have_bars_of_their_own(staff_client, redis, keys):
    spend(keys, HISTORY_MARK_PRICE_CANDLES, 2)
    spend(keys, INDEX_CANDLES, 1)

    use = {b.name: (b.used, b.limit) for b in rest_budget_use(redis, keys)}
    page = staff_client.get(reverse("admin:index")).content.decode()

    assert {name: use[name] for name in ("candles", "history-candles", "mark-price-candles",
                                         "history-mark-price-candles", "index-candles", "history-index-candles")} == {
        "candles": (0, 40), "history-candles": (0, 20), "mark-price-candles": (0, 20),
        "history-mark-price-candles": (2, 20), "index-candles": (1, 20), "history-index-candles": (0, 10)}
    assert re.search(r"<td>history-mark-price-candles</td>\s*<td>2 / 20 per 2 s</td>", page)
    assert re.search(r"<td>history-index-candles</td>\s*<td>0 / 10 per 2 s</td>", page)
