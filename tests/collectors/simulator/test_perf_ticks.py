"""The simulator counts its push ticks, and the ticks it let pass while its process was starved of CPU."""

from __future__ import annotations

import time

import httpx

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
