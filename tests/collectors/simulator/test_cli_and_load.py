"""The command line entry point, and a small throughput check with raw clients."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from collectors.simulator import run_in_thread
from collectors.simulator.loadtest import measure, spread_channels

from .conftest import roomy

REPO = Path(__file__).resolve().parents[3]


def test_cli_prints_its_urls_serves_and_stops_cleanly_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "collectors.simulator", "--port", "0", "--seed", "3", "--instruments", "2",
         "--swaps", "--bars", "1s,1m"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"okx-simulator listening ws://127\.0\.0\.1:(\d+)/ws/v5/business rest (http://\S+)", line)
        assert match, line
        assert match.group(2) == f"http://127.0.0.1:{match.group(1)}"
        body = httpx.get(match.group(2) + "/api/v5/public/instruments", params={"instType": "SWAP"}).json()
        assert [row["instId"] for row in body["data"]] == ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "REBASE-USDT-SWAP", ""]
        history = match.group(2) + "/api/v5/market/history-candles"
        bad_bar = httpx.get(history, params={"instId": "BTC-USDT", "bar": "1H"})
        assert bad_bar.json()["code"] == "51000"  # only the bars asked for are served
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_pushes_reach_raw_clients_at_close_to_the_scheduled_rate():
    config = roomy(instruments=250, swaps=False, bars=("1s", "1m"), push_interval=0.05)
    with run_in_thread(config) as sim:
        channels = spread_channels(500, ["1s", "1m"], 250)
        rate = asyncio.run(measure(sim.host, sim.port, channels, connections=2, seconds=1.5, warmup=0.5))
    scheduled = 500 / 0.05
    # Lenient: the clients share this process (and its GIL) with the server.
    assert rate.frames > 0.5 * scheduled, rate
