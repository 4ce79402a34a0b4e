"""bench/firehose.py's pieces that can be checked in seconds: the instrument split and the counting simulator."""

from __future__ import annotations

import asyncio

import httpx

from bench.firehose import split_counts
from bench.firehose_sim import CountingSimulator
from collectors.simulator import SimulatorConfig


def test_the_universe_splits_sixty_thirty_ten():
    assert split_counts(1000) == (600, 300, 100)
    assert split_counts(50) == (30, 15, 5)
    assert sum(split_counts(7)) == 7


def test_the_benchmark_simulator_counts_rest_requests_per_endpoint_and_their_429s():
    async def scenario() -> dict:
        sim = CountingSimulator(SimulatorConfig(instruments=3, futures=8, bars=("1s", "1m"),
                                                rest_history_limit=(2, 60.0)))
        async with sim.serve("127.0.0.1", 0) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
            for _ in range(3):
                await http.get("/api/v5/market/history-candles", params={"instId": "BTC-USDT", "bar": "1s"})
            await http.get("/api/v5/market/candles", params={"instId": "BTC-USDT-SWAP", "bar": "1m"})
            futures = await http.get("/api/v5/public/instruments", params={"instType": "FUTURES"})
            assert len(futures.json()["data"]) == 8
            return (await http.get("/sim/stats")).json()

    stats = asyncio.run(scenario())
    assert stats["rest_history-candles"] == 3
    assert stats["rest_429_history-candles"] == 1
    assert stats["rest_candles"] == 1
    assert stats["rest_instruments"] == 1
    assert stats["rest_429s"] == 1
