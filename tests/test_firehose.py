"""bench/firehose.py's pieces that can be checked in seconds: the instrument split, the judging rule and the
counting simulator."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx

from bench.firehose import closed_inside, quarter_hour_wait, split_counts
from bench.firehose_sim import CountingSimulator
from collectors.simulator import SimulatorConfig


def test_the_universe_splits_sixty_thirty_ten():
    assert split_counts(1000) == (600, 300, 100)
    assert split_counts(50) == (30, 15, 5)
    assert sum(split_counts(7)) == 7


def at(hh_mm_ss: str) -> float:
    return datetime.fromisoformat(f"2026-12-02T{hh_mm_ss}+00:00").timestamp()


def ms(hh_mm_ss: str) -> int:
    return int(at(hh_mm_ss) * 1000)


def test_a_candle_is_judged_when_it_closed_inside_the_window_whenever_it_opened():
    live, cutoff = ms("10:07:30"), ms("10:20:00")
    # Opened before every channel was live, closed after: judged (15m 10:00-10:15, 5m 10:05-10:10).
    assert closed_inside("15m", ms("10:00:00"), live, cutoff)
    assert closed_inside("5m", ms("10:05:00"), live, cutoff)
    # Closed before every channel was live, or too close to the end to be judged: not.
    assert not closed_inside("5m", ms("10:00:00"), live, cutoff)
    assert not closed_inside("15m", ms("10:15:00"), live, cutoff)
    # The edges are inside.
    assert closed_inside("1m", ms("10:06:30"), live, cutoff)
    assert closed_inside("1m", ms("10:19:00"), live, cutoff)
    assert not closed_inside("1m", ms("10:19:01"), live, cutoff)


def test_the_run_waits_until_a_quarter_hour_close_is_old_enough_to_judge():
    # Live at 10:16, judged until 10:28 (a 10-minute run and its 2-minute settle): the 10:30 close needs the run
    # to go on until 10:32, 4 minutes more.
    assert quarter_hour_wait(at("10:16:00"), at("10:28:00"), ["1m", "15m"]) == (240.0, at("10:30:00"))
    # Live at 10:04: the 10:15 close is 120 s old at 10:17, before an end at 10:18; an end at 10:16 waits 60 s.
    assert quarter_hour_wait(at("10:04:00"), at("10:18:00"), ["15m"]) == (0.0, at("10:15:00"))
    assert quarter_hour_wait(at("10:04:00"), at("10:16:00"), ["15m"]) == (60.0, at("10:15:00"))
    # Live exactly on the quarter hour: that close counts.
    assert quarter_hour_wait(at("10:15:00"), at("10:25:00"), ["15m"]) == (0.0, at("10:15:00"))
    assert quarter_hour_wait(at("10:16:00"), at("10:28:00"), ["1m", "5m"])[0] == 0.0


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
