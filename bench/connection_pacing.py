"""Connection pacing as the server sees it: N connections, all dropped at once, N reconnects.

Runs the real WebSocket client against the simulator over 127.0.0.1 with a random arrival delay added to
every connection (the jitter of a busy event loop or a network) and prints what the simulator counted: upgrade
requests, 429s, the busiest second. `--old-gate` puts back the gate the client had before (3 starts at once
per second, a sliding window of 3 per 1 s) to compare.

    .venv/bin/python bench/connection_pacing.py --connections 20 --jitter 0.3 [--old-gate]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets

from collectors.okx.messages import Channel
from collectors.okx.ws import OkxWsClient, SlidingWindow, WsConfig, WsHandler
from collectors.simulator import Simulator, SimulatorConfig


async def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def run(connections: int, jitter: float, old_gate: bool, seed: int) -> dict[str, float]:
    sim = Simulator(SimulatorConfig(seed=3, instruments=connections, bars=("1m",), push_interval=1.0))
    rng = random.Random(seed)

    async def jittery_connect(*args, **kwargs):
        await asyncio.sleep(rng.uniform(0.0, jitter))
        return await websockets.connect(*args, **kwargs)

    async with sim.serve(host="127.0.0.1", port=0) as server:
        instruments = [inst for inst in sim.market.instruments if inst and not inst.startswith("REBASE")]
        channels = [Channel(inst, "1m") for inst in instruments[:connections]]
        client = OkxWsClient(
            WsConfig(url=server.ws_url, channels_per_connection=1, backoff_base_s=0.05, backoff_cap_s=0.5),
            WsHandler(), connect=jittery_connect,
        )
        if old_gate:
            client._gate = SlidingWindow(3, 1.0, client.clock, client.sleep)
        client.set_channels(channels)
        runner = asyncio.get_running_loop().create_task(client.run())
        started = time.monotonic()
        try:
            opened = await wait_for(lambda: all(s.state == "open" for s in client.statuses()), 120)
            first = time.monotonic() - started
            sim.drop_connections()
            started = time.monotonic()
            await asyncio.sleep(0.2)
            reopened = await wait_for(
                lambda: all(s.reconnects >= 1 and s.state == "open" for s in client.statuses()), 120)
            second = time.monotonic() - started
            stats = sim.stats()
        finally:
            await client.stop()
            await runner
    return {"all_open": opened and reopened, "first_open_s": round(first, 1), "reopen_s": round(second, 1),
            "handshakes": stats["handshakes"], "handshakes_rejected_429": stats["handshakes_rejected"],
            "handshakes_max_per_second": stats["handshakes_max_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--jitter", type=float, default=0.3, help="largest random arrival delay added (s)")
    parser.add_argument("--old-gate", action="store_true", help="the gate before: 3 per sliding 1 s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(run(args.connections, args.jitter, args.old_gate, args.seed))
    print(("old gate (3 / 1 s)" if args.old_gate else "paced gate") + f", jitter ≤ {args.jitter} s:")
    for name, value in result.items():
        print(f"  {name}: {value}")


if __name__ == "__main__":
    main()
