"""Fixtures for simulator tests: a threaded simulator with generous limits and an httpx client for it."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from collectors.simulator import SimulatorConfig, run_in_thread

# Many tests share one client IP: limits high enough that only the tests about limits meet them.
ROOMY = SimulatorConfig(
    seed=7, instruments=6, swaps=True, rest_candles_limit=(10_000, 1.0), rest_history_limit=(10_000, 1.0),
    rest_instruments_limit=(10_000, 1.0), rest_mark_candles_limit=(10_000, 1.0),
    rest_history_mark_limit=(10_000, 1.0), rest_index_candles_limit=(10_000, 1.0),
    rest_history_index_limit=(10_000, 1.0), rest_index_tickers_limit=(10_000, 1.0), new_connections_per_second=1_000,
    push_interval=0.2,
)


def roomy(**changes) -> SimulatorConfig:
    return dataclasses.replace(ROOMY, **changes)


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(ROOMY) as handle:
        yield handle


@pytest.fixture
def http(sim):
    with httpx.Client(base_url=sim.rest_url, timeout=5.0) as client:
        yield client
