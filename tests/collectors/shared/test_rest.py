"""The one REST access point: every client it gives draws on the budgets shared through Redis and adds its
request tallies to the shared counters; the instrument sync takes its clients there too, so the admin's
"instruments …" budget bars show its requests. Against the OKX simulator over real sockets."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.test import override_settings

from collectors.instruments import instruments_sync
from collectors.monitoring.budgets import rest_budget_use
from collectors.okx.ratelimit import LocalRateLimiter, RedisRateLimiter
from collectors.okx.rest_endpoints import INSTRUMENTS
from collectors.shared.rest import okx_rest
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from tests.support.ports import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with run_in_thread(SimulatorConfig(seed=3, instruments=3, swaps=True, history_days=1), port=0) as handle:
        yield handle


def counters(redis, keys) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis.hgetall(keys.counters).items()}


def test_a_client_draws_on_the_shared_budget_and_counts_its_requests(sim, redis, keys):
    async def work() -> type:
        async with okx_rest(keys, rest_url=sim.rest_url) as client:
            await client.instruments("SPOT")
            return type(client.limiter)

    assert asyncio.run(work()) is RedisRateLimiter
    assert redis.zcard(keys.rate_limit(f"{INSTRUMENTS.path}:SPOT")) == 1
    assert counters(redis, keys)["rest_requests"] == 1


def test_the_instrument_sync_shows_in_the_admin_instrument_budget_bars(sim, redis, keys):
    seen = {}

    def fetched(inst_type: str, _count: int) -> None:
        # Read while the sync runs: the bars show the budget's current window (2 s), not its history.
        seen[inst_type] = {b.name: b.used for b in rest_budget_use(redis, keys)}

    instruments_sync(inst_types=["SPOT", "SWAP"], client=okx_rest(keys, rest_url=sim.rest_url), on_fetched=fetched)

    assert seen["SPOT"]["instruments SPOT"] == 1
    assert (seen["SWAP"]["instruments SPOT"], seen["SWAP"]["instruments SWAP"]) == (1, 1)
    assert counters(redis, keys)["rest_requests"] == 2


def test_the_sync_command_counts_its_requests(sim, redis, keys):
    with override_settings(OKX_REST_URL=sim.rest_url):
        call_command("sync_instruments", "--type", "SPOT", stdout=io.StringIO())
    # One instrument list and one index list per quote currency the index sync asks for.
    assert counters(redis, keys)["rest_requests"] >= 2


def test_without_redis_a_client_keeps_a_budget_of_its_own_and_says_so(sim, keys, caplog):
    async def work() -> tuple[type, int]:
        async with okx_rest(keys, rest_url=sim.rest_url) as client:
            infos = await client.instruments("SPOT")
            return type(client.limiter), len(infos)

    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"), caplog.at_level(logging.WARNING):
        limiter, listed = asyncio.run(work())

    assert limiter is LocalRateLimiter
    assert listed > 0
    assert "keeps a budget of its own" in caplog.text
    assert "REST counters" in caplog.text  # the tally could not be added, and that is said too
