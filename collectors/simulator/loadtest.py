"""Measure how many pushes per second the simulator delivers.

    python -m collectors.simulator.loadtest --channels 2000 --connections 4 --push-interval 0.05 --seconds 3

Starts the simulator CLI in its own process (so the server has a core to itself) and counts the frames that
raw clients receive. The clients speak just enough WebSocket to subscribe and count frame headers: a full
client library would measure the client's own parsing, not the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import orjson
from websockets.frames import Frame, Opcode

ARGS_PER_REQUEST = 100


@dataclass
class Count:
    frames: int = 0
    bytes: int = 0


def _masked_text(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=True, extensions=[])


async def _handshake(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=2**22)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/v5/business HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake refused: {head!r}")
    return reader, writer


async def _client(
    host: str, port: int, channels: list[tuple[str, str]], count: Count, counting: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    reader, writer = await _handshake(host, port)
    for start in range(0, len(channels), ARGS_PER_REQUEST):
        args = [{"channel": "candle" + bar, "instId": inst} for inst, bar in channels[start:start + ARGS_PER_REQUEST]]
        writer.write(_masked_text(orjson.dumps({"id": str(start), "op": "subscribe", "args": args})))
    buffer = bytearray()
    while not stop.is_set():
        data = await reader.read(2**20)
        if not data:
            break
        buffer += data
        position, end, frames = 0, len(buffer), 0
        # Walk frame headers only (server frames are unmasked): payload bytes are skipped, not parsed.
        while end - position >= 2:
            size = buffer[position + 1] & 0x7F
            header = 2
            if size == 126:
                if end - position < 4:
                    break
                size, header = int.from_bytes(buffer[position + 2:position + 4], "big"), 4
            elif size == 127:
                if end - position < 10:
                    break
                size, header = int.from_bytes(buffer[position + 2:position + 10], "big"), 10
            if end - position < header + size:
                break
            position += header + size
            frames += 1
        del buffer[:position]
        if counting.is_set():
            count.frames += frames
            count.bytes += position
    writer.close()


def spread_channels(total: int, bars: list[str], instruments: int) -> list[tuple[str, str]]:
    from .instruments import spot_names

    names = [f"{base}-USDT" for base in spot_names(instruments)]
    return [(names[i // len(bars)], bars[i % len(bars)]) for i in range(total)]


async def measure(host: str, port: int, channels: list[tuple[str, str]], connections: int, seconds: float,
                  warmup: float = 1.5) -> Count:
    count, counting, stop = Count(), asyncio.Event(), asyncio.Event()
    share = -(-len(channels) // connections)
    tasks = [
        asyncio.create_task(_client(host, port, channels[i * share:(i + 1) * share], count, counting, stop))
        for i in range(connections)
    ]
    await asyncio.sleep(warmup)  # let subscriptions settle before counting
    counting.set()
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    counting.clear()
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    count.frames = round(count.frames / elapsed)
    count.bytes = round(count.bytes / elapsed)
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m collectors.simulator.loadtest")
    parser.add_argument("--channels", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--push-interval", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--bars", default="1s,1m")
    parser.add_argument("--port", type=int, default=18_999)
    args = parser.parse_args(argv)
    bars = args.bars.split(",")
    instruments = -(-args.channels // len(bars))
    server = subprocess.Popen(
        [sys.executable, "-m", "collectors.simulator", "--port", str(args.port), "--instruments", str(instruments),
         "--bars", args.bars, "--push-interval", str(args.push_interval), "--new-connections-per-second", "1000"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        print(server.stdout.readline().strip())
        channels = spread_channels(args.channels, bars, instruments)
        rate = asyncio.run(measure("127.0.0.1", args.port, channels, args.connections, args.seconds))
        expected = args.channels / args.push_interval
        print(
            f"{args.channels} channels on {args.connections} connections, push every {args.push_interval}s: "
            f"{rate.frames:,} messages/s received ({rate.frames / expected:.0%} of {expected:,.0f} scheduled), "
            f"{rate.bytes / 2**20:.1f} MiB/s"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
