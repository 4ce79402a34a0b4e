"""One WebSocket connection: websockets' sans-I/O protocol for framing, plus what OKX tracks per connection."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from typing import NamedTuple

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from .ratelimit import SlidingWindow

REQUESTS_PERIOD_S = 3600.0


class Channel(NamedTuple):
    """A subscribed channel: candle{bar} of an instrument (price "trade"), mark-price-candle{bar} of a swap or
    future ("mark") or index-candle{bar} of an index ("index")."""

    inst_id: str
    bar: str
    price: str = "trade"


class WsConnection:
    def __init__(
        self, protocol: ServerProtocol, writer: asyncio.StreamWriter, *, public: bool, requests_per_hour: int,
        peer: str,
    ):
        self.protocol = protocol
        self.writer = writer
        self.transport = writer.transport
        self.public = public
        self.peer = peer
        self.conn_id = secrets.token_hex(4)
        # channel -> open time of the last candle pushed on it (None until the first push)
        self.subscriptions: dict[Channel, int | None] = {}
        self.requests = SlidingWindow(requests_per_hour, REQUESTS_PERIOD_S)
        self.last_activity = time.monotonic()
        self.malformed_pending = 0
        self.malformed_sent = 0
        self.close_deadline: float | None = None  # set once we sent a close frame
        self._fragments: list[bytes] = []

    @property
    def accepts_pushes(self) -> bool:
        return self.close_deadline is None and self.protocol.state is State.OPEN and not self.transport.is_closing()

    def write(self, frame: bytes) -> None:
        if self.accepts_pushes:
            self.transport.write(frame)
            self.last_activity = time.monotonic()

    def write_many(self, frames: Iterable[bytes]) -> None:
        if self.accepts_pushes:
            self.transport.write(b"".join(frames))
            self.last_activity = time.monotonic()

    def close(self, code: int, reason: str, close_timeout: float) -> None:
        """Start the closing handshake; the TCP link is dropped if the client has not answered in time."""
        if self.close_deadline is not None or self.protocol.state is not State.OPEN:
            return
        self.protocol.send_close(code, reason)
        self.close_deadline = time.monotonic() + close_timeout
        self.flush()

    def abort(self) -> None:
        """Drop the TCP link without a close frame (what a network failure looks like to the client)."""
        self.transport.abort()

    def flush(self) -> None:
        """Write what the protocol queued (pongs to protocol pings, close frames); EOF means we are done."""
        for data in self.protocol.data_to_send():
            if data:
                if not self.transport.is_closing():
                    self.transport.write(data)
            else:
                self.writer.close()

    def receive(self, data: bytes) -> list[str]:
        """Feed bytes from the network; returns the complete text messages they finished."""
        self.last_activity = time.monotonic()
        self.protocol.receive_data(data)
        messages: list[str] = []
        for event in self.protocol.events_received():
            if not isinstance(event, Frame) or event.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                continue
            self._fragments.append(event.data)
            if event.fin:
                payload = b"".join(self._fragments)
                self._fragments.clear()
                messages.append(payload.decode("utf-8", "replace"))
        self.flush()
        return messages

    def receive_eof(self) -> None:
        self.protocol.receive_eof()
        self.flush()
