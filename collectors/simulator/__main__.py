"""python -m collectors.simulator --port 8765: serve until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from .bars import ALL_BARS
from .config import SimulatorConfig
from .server import Simulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m collectors.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--instruments", type=int, default=10)
    parser.add_argument("--swaps", nargs="?", type=int, const=True, default=False, metavar="COUNT",
                        help="a -USDT-SWAP per spot instrument, or COUNT of them")
    parser.add_argument("--futures", type=int, default=0, metavar="COUNT",
                        help="FUTURES contracts (BTC-USDT-YYMMDD, BTC-USD-YYMMDD, ...), 8 per underlying")
    parser.add_argument("--bars", default=",".join(ALL_BARS), help="comma-separated, case-sensitive")
    parser.add_argument("--push-interval", type=float, default=1.0)
    parser.add_argument("--confirm-omit-rate", type=float, default=0.0)
    parser.add_argument("--quiet-fraction", type=float, default=0.0)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--max-channels-per-connection", type=int, default=0)
    parser.add_argument("--requests-per-hour", type=int, default=480)
    parser.add_argument("--new-connections-per-second", type=int, default=3)
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--write-buffer-limit", type=int, default=16 * 2**20,
                        help="bytes queued for a slow reader before it is closed with 4005")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        seed=args.seed, instruments=args.instruments, swaps=args.swaps, futures=args.futures,
        bars=tuple(bar for bar in args.bars.split(",") if bar), push_interval=args.push_interval,
        confirm_omit_rate=args.confirm_omit_rate, quiet_fraction=args.quiet_fraction, idle_timeout=args.idle_timeout,
        max_channels_per_connection=args.max_channels_per_connection, requests_per_hour=args.requests_per_hour,
        new_connections_per_second=args.new_connections_per_second, history_days=args.history_days,
        write_buffer_limit=args.write_buffer_limit,
    )


async def serve_until_signalled(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(config).serve(host, port) as info:
        print(f"okx-simulator listening {info.ws_url} rest {info.rest_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.run(serve_until_signalled(config_from(args), args.host, args.port))


if __name__ == "__main__":
    main()
