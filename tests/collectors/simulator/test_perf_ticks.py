"""The simulator counts its push ticks, and the ticks it let pass while its process was starved of CPU."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import websockets

from collectors.simulator import run_in_thread

from .conftest import roomy


def test_a_tick_blocked_past_its_successors_counts_them_as_skipped():
    with run_in_thread(roomy(push_interval=0.05)) as sim, httpx.Client(base_url=sim.rest_url, timeout=5.0) as http:
        time.sleep(0.5)
        before = http.get("/sim/stats").json()
        assert before["ticks"] >= 5
        # Hold the event loop for 0.5 s: about ten ticks' moments pass with nothing pushed for them.
        sim.simulator._on_loop(lambda: time.sleep(0.5))
        time.sleep(0.3)
        after = http.get("/sim/stats").json()
    assert after["ticks_skipped"] - before["ticks_skipped"] >= 7
    assert after["ticks"] > before["ticks"]


def test_a_tick_late_by_less_than_an_interval_runs_at_once_instead_of_being_skipped():
    with run_in_thread(roomy(push_interval=0.2)) as sim, httpx.Client(base_url=sim.rest_url, timeout=5.0) as http:
        time.sleep(0.5)
        before = http.get("/sim/stats").json()
        for _ in range(3):
            # Hold the loop for 1.3 intervals: the next tick's moment passes, not the one after.
            sim.simulator._on_loop(lambda: time.sleep(0.26))
            time.sleep(0.5)
        after = http.get("/sim/stats").json()
    assert after["ticks_skipped"] == before["ticks_skipped"]  # each late tick ran, none was dropped
    assert after["ticks"] - before["ticks"] >= 6


def test_candles_closed_during_skipped_ticks_still_get_their_confirm_push():
    async def watch(sim) -> list[int]:
        confirmed: list[int] = []
        async with websockets.connect(sim.ws_url) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "args": [{"channel": "candle1s", "instId": "BTC-USDT"}]}))
            deadline = time.monotonic() + 6
            stalled = False
            while time.monotonic() < deadline:
                body = orjson.loads(await asyncio.wait_for(ws.recv(), 2))
                for row in body.get("data", []):
                    if row[8] == "1":
                        confirmed.append(int(row[0]))
                if not stalled and len(confirmed) >= 1:
                    stalled = True
                    # The event loop stops for 2.5 s: at least one whole 1s candle passes without a tick.
                    await asyncio.to_thread(sim.simulator._on_loop, lambda: time.sleep(2.5))
        return confirmed

    with run_in_thread(roomy(push_interval=0.2)) as sim:
        confirmed = asyncio.run(watch(sim))
        late = sim.simulator.stats()["late_confirms"]
    assert late >= 1
    assert len(confirmed) >= 5
    assert confirmed == list(range(confirmed[0], confirmed[-1] + 1, 1000)), "a closed 1s candle was never pushed"


def test_the_tick_that_opens_candles_finds_them_computed_during_the_previous_candle():
    from functools import lru_cache

    from collectors.simulator import Simulator
    from collectors.simulator.bars import BARS

    simulator = Simulator(roomy(instruments=40, push_interval=0.2))
    market = simulator.market
    computed: list[tuple[str, str, int]] = []

    def counting(inst_id: str, bar_name: str, open_ms: int):
        computed.append((inst_id, bar_name, open_ms))
        return market._compute_path(inst_id, bar_name, open_ms)

    market._path = lru_cache(maxsize=None)(counting)
    for inst_id in market.instruments:
        for bar_name in ("1s", "1m"):
            simulator._feed((inst_id, bar_name))
    minute = BARS["1m"].floor(int(time.time() * 1000))
    per_tick = []
    for moment in range(minute, minute + 60_000, 200):  # every tick of one minute
        before = len(computed)
        simulator._prepare_next_candles(moment + 3)
        per_tick.append(len(computed) - before)
    prepared = set(computed)
    assert {(i, "1m", minute + 60_000) for i in market.instruments} <= prepared
    assert {(i, "1s", minute + 60_000) for i in market.instruments} <= prepared
    # An even share each tick: a fifth of the 1s channels (5 ticks a candle), at most one 1m channel.
    assert max(per_tick) <= len(market.instruments) // 5 + 2
    assert len(computed) == len(prepared)
