"""The OKX simulator as bench/firehose.py runs it: `python -m collectors.simulator`, plus REST counts per endpoint.

    .venv/bin/python bench/firehose_sim.py --port 8765 --instruments 600 --swaps 300 --futures 100 ...

Every option is the simulator's own (see `python -m collectors.simulator --help`). The benchmark reports REST
requests per class (candles / history-candles); the simulator counts them only in total, so this launcher
counts each endpoint in the stats as `rest_<endpoint>` (e.g. `rest_history-candles`) and `rest_429_<endpoint>`,
without changing what the simulator answers.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collectors.simulator.__main__ import config_from, parse_args  # noqa: E402
from collectors.simulator.config import SimulatorConfig  # noqa: E402
from collectors.simulator.http import HttpRequest  # noqa: E402
from collectors.simulator.server import Simulator  # noqa: E402


class CountingSimulator(Simulator):
    """The simulator, counting its REST answers by endpoint (the last path segment) and 429s among them."""

    async def _rest(self, request: HttpRequest, peer: str):  # type: ignore[override]
        answer = await super()._rest(request, peer)
        endpoint = request.path.rsplit("/", 1)[-1]
        self._stats[f"rest_{endpoint}"] += 1
        if answer[0] == 429:
            self._stats[f"rest_429_{endpoint}"] += 1
        return answer


async def serve(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with CountingSimulator(config).serve(host, port) as info:
        print(f"okx-simulator (firehose) listening {info.ws_url} rest {info.rest_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.run(serve(config_from(args), args.host, args.port))


if __name__ == "__main__":
    main()
