"""Connection pacing as the server sees it, at full breadth and under CPU load.

    .venv/bin/python bench/connection_pacing.py [--instruments 1000] [--bars all] [--per-connection 300]
        [--load 3] [--storms 2] [--jitter 0] [--spacing-only]

Starts the simulator in a process of its own (`python -m collectors.simulator`, every open candle pushed every
2 s, OKX's 3 new connections a second per IP: over it, HTTP 429), `--load` busy-loop processes of its own
(each ends by itself after `--load-seconds` and is stopped by pid at the end), then runs the real WebSocket
client in this process for `--instruments` × `--bars` channels, `--per-connection` a connection (1,000 × 27
bars = 27,000 channels, 90 connections). It waits until every connection is open, then drops every connection
at the simulator `--storms` times and waits for every one to come back, and prints what the simulator counted:
upgrade requests, 429s, the busiest second (the most arrivals within any 1 s, the window OKX's limit applies
to), and how late this process's event loop and the simulator's push loop ran. `--jitter` adds a random delay
before every connection (a slow network); `--spacing-only` gives the client the gate it had before the
answered-connection window (even starts and the 429 hold only), to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402

from collectors.okx.pacing import ConnectionGate  # noqa: E402
from collectors.okx.protocol import Channel  # noqa: E402
from collectors.okx.ws import OkxWsClient  # noqa: E402
from collectors.okx.ws_contract import ConnectionStatus, WsConfig, WsHandler  # noqa: E402
from collectors.simulator.arrivals import busiest_second  # noqa: E402
from collectors.simulator.bars import ALL_BARS, BARS  # noqa: E402

PUSH_INTERVAL_S = 2.0
OPEN_TIMEOUT_S = 300.0
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"



class CountingHandler(WsHandler):
    candles_as_text = True  # as the collector runtime takes them

    def __init__(self) -> None:
        self.candles = 0
        self.failures: Counter[str] = Counter()  # failed connection attempts by exception type

    def on_candle(self, update: Any, raw: str | bytes) -> None:
        self.candles += 1

    def on_status(self, status: ConnectionStatus) -> None:
        found = re.match(r"(?:handover )?connect failed: (\w+)", status.detail) if status.state == "backoff" else None
        if found:
            self.failures[found.group(1)] += 1


class LoopLag:
    """How late this event loop wakes a task that asked to sleep 50 ms: the stall every connection start sees."""

    def __init__(self) -> None:
        self.worst_s = 0.0

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(0.05)
            self.worst_s = max(self.worst_s, time.monotonic() - asked - 0.05)


def start_simulator(instruments: int, bars: tuple[str, ...]) -> tuple[subprocess.Popen, str, str]:
    """The simulator on a free port of 127.0.0.1; (process, WebSocket URL, REST URL)."""
    command = [sys.executable, "-m", "collectors.simulator", "--host", "127.0.0.1", "--port", "0",
               "--instruments", str(instruments), "--bars", ",".join(bars), "--push-interval", str(PUSH_INTERVAL_S),
               "--history-days", "1", "--new-connections-per-second", "3"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    found = re.search(r"listening (\S+) rest (\S+)", line)
    if not found:
        process.kill()
        raise RuntimeError(f"the simulator did not start: {line!r}")
    return process, found.group(1), found.group(2)


def sim_get(rest_url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{rest_url}{path}", timeout=30) as response:
        return json.load(response)


def sim_control(rest_url: str, action: str) -> Any:
    request = urllib.request.Request(f"{rest_url}/sim/control", data=json.dumps({"action": action}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["result"]


def instrument_ids(rest_url: str, count: int) -> list[str]:
    rows = sim_get(rest_url, "/api/v5/public/instruments?instType=SPOT")["data"]
    ids = [row["instId"] for row in rows if row["instId"] and row["state"] == "live"]
    return ids[:count]


async def wait_until(condition, timeout: float) -> float | None:
    """Seconds until `condition()` held, or None after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            return None
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def run(args: argparse.Namespace, ws_url: str, rest_url: str) -> dict[str, Any]:
    inst_ids = instrument_ids(rest_url, args.instruments)
    channels = [Channel(inst_id, bar) for inst_id in inst_ids for bar in args.bars]
    rng = random.Random(args.seed)

    async def connect(*options: Any, **kwargs: Any) -> Any:
        if args.jitter > 0:
            await asyncio.sleep(rng.uniform(0.0, args.jitter))
        return await websockets.connect(*options, **kwargs)

    handler = CountingHandler()
    client = OkxWsClient(WsConfig(url=ws_url, channels_per_connection=args.per_connection), handler, connect=connect)
    if args.spacing_only:
        # No limit on starts in flight or answered: the even spacing and the 429 hold alone, as before.
        client._gate = ConnectionGate(limit=10**9, window_s=client._gate.window_s, spacing_s=client._gate.spacing_s,
                                      clock=client.clock, sleep=client.sleep)
    client.set_channels(channels)
    lag = LoopLag()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(client.run()), loop.create_task(lag.run())]
    connections = len(client.statuses())
    result: dict[str, Any] = {"channels": len(channels), "connections": connections}
    try:
        opened = await wait_until(lambda: all(s.state == "open" for s in client.statuses()), OPEN_TIMEOUT_S)
        result["first_open_s"] = None if opened is None else round(opened, 1)
        for storm in range(1, args.storms + 1):
            await asyncio.sleep(args.settle)
            dropped = sim_control(rest_url, "drop_connections")
            await asyncio.sleep(0.2)
            reopened = await wait_until(
                lambda: all(s.reconnects >= storm and s.state == "open" for s in client.statuses()),  # noqa: B023
                OPEN_TIMEOUT_S)
            result[f"storm_{storm}_dropped_reopened_s"] = (dropped, None if reopened is None else round(reopened, 1))
        stats = sim_get(rest_url, "/sim/stats")
        arrivals = sim_control(rest_url, "handshake_arrivals")
    finally:
        await client.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.update({
        "handshakes": stats["handshakes"], "handshakes_rejected_429": stats["handshakes_rejected"],
        "handshakes_max_per_second": stats["handshakes_max_per_second"],
        "busiest_second_of_the_arrival_log": busiest_second(arrivals),
        "client_loop_lag_max_s": round(lag.worst_s, 3),
        "simulator_tick_busy_ms_max": stats.get("tick_busy_ms_max"),
        "connect_failures_by_type": dict(handler.failures),
        "candles_received": handler.candles,
    })
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--bars", default="all", help="'all' (the 27 OKX bars) or a comma-separated list")
    parser.add_argument("--per-connection", type=int, default=300, help="channels a connection")
    parser.add_argument("--load", type=int, default=3, help="busy-loop processes started for the run")
    parser.add_argument("--load-seconds", type=float, default=900.0, help="the longest a busy loop runs")
    parser.add_argument("--storms", type=int, default=2, help="times every connection is dropped at once")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of pushes before each storm")
    parser.add_argument("--jitter", type=float, default=0.0, help="largest random delay before a connection (s)")
    parser.add_argument("--spacing-only", action="store_true",
                        help="the gate before the answered-connection window: even starts and the 429 hold")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.bars = tuple(ALL_BARS) if args.bars == "all" else tuple(b for b in args.bars.split(",") if b)
    unknown = [bar for bar in args.bars if bar not in BARS]
    if unknown:
        parser.error(f"unknown bars {unknown}")

    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=args.load_seconds)])
            for _ in range(args.load)]
    simulator = None
    try:
        simulator, ws_url, rest_url = start_simulator(args.instruments, args.bars)
        result = asyncio.run(run(args, ws_url, rest_url))
    finally:
        for process in [*busy, *([simulator] if simulator else [])]:
            process.kill()  # by pid: only what this run started
            process.wait()
    gate = "spacing only (before)" if args.spacing_only else "spacing + answered-connection window"
    print(f"gate: {gate}; {args.load} busy loops on {os.cpu_count()} cores; jitter ≤ {args.jitter} s; "
          f"{args.storms} drop-everything storms")
    for name, value in result.items():
        print(f"  {name}: {value}")


if __name__ == "__main__":
    main()
