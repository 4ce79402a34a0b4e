"""What waits to be written to one WebSocket: live frames never wait for room, replay frames do.

A live frame that finds the outbox full means the client reads more slowly than candles arrive: the connection
is closed (CLOSE_SLOW_CONSUMER) instead of holding anything up. Replay frames fill at most half of it, paced by
the client, so a replay alone never trips that limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable


class Outbox:
    def __init__(self, *, send: Callable[[bytes], Awaitable[None]], on_full: Callable[[int], None], limit: int) -> None:
        self._send = send
        self._on_full = on_full
        self._limit = max(2, limit)
        self._frames: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._frames)

    def put_live(self, frame: bytes) -> bool:
        if self.closed:
            return False
        if len(self._frames) >= self._limit:
            self.closed = True
            self._on_full(len(self._frames))
            return False
        self._frames.append(frame)
        self._ready.set()
        return True

    async def put_replay(self, frame: bytes) -> None:
        while len(self._frames) >= self._limit // 2 and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise asyncio.CancelledError  # the connection is going; its tasks are being cancelled anyway
        self._frames.append(frame)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._room.set()

    async def run(self) -> None:
        """Write frames in order until cancelled."""
        frames = self._frames
        while True:
            while not frames:
                self._ready.clear()
                await self._ready.wait()
            frame = frames.popleft()
            if len(frames) < self._limit // 2:
                self._room.set()
            await self._send(frame)
