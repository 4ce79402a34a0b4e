"""The fast lane of the OKX WebSocket client: a websockets client connection that decodes OKX's many small text
frames itself and hands each message straight to a callback, leaving websockets every other frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State

_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)

# Bytes read from a connection per turn of the event loop (asyncio's default: 256 KiB).
FAST_LANE_READ_BYTES = 16 * 1024


def drop_message(message: str | bytes) -> None:
    """The callback of a connection whose reader has stopped: it delivers nothing more."""


class FastLaneConnection(ClientConnection):
    """websockets' client connection with a fast lane for the frames OKX sends by the thousand.

    Reading one message through websockets costs about 4 µs (a parser generator, a Frame, the message queue,
    a task switch); a candle push is worth less than that to parse. Here a complete, unfragmented,
    unmasked text frame on an open connection is decoded in `data_received` and handed to the callback given
    to `start_fast_lane` at once (about 0.8 µs). Every other frame (control frames, fragments, binary,
    oversized, anything odd) is fed whole to websockets' own protocol, whose data frames come back through
    `process_event` to the same callback: messages keep their order, and websockets keeps the protocol
    (closing handshake, answers to pings, size limits, errors). Only whole frames ever reach the protocol,
    so its parser and this one never disagree about where a frame starts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_message: Callable[[str | bytes], None] | None = None
        self._early: list[str | bytes] = []  # messages before start_fast_lane
        self._head = b""  # the handshake response, while it arrives
        self._rest = b""  # the start of a frame whose end has not arrived
        self._fragments: tuple[Opcode, list[bytes]] | None = None
        # From connection_made on, the upgrade request may be on its way: the server can count it whenever it
        # reads it, even after we gave up (see OkxWsClient._open).
        self.request_may_be_out = False
        limits = [size for size in (self.protocol.max_message_size, self.protocol.max_fragment_size) if size]
        self._max_fast = min(limits) if limits else 2**63

    def connection_made(self, transport: Any) -> None:
        # asyncio reads up to 256 KiB per ready socket per turn of the event loop: with a dozen busy
        # connections one turn handled seconds' worth of frames, and every other task of the loop (the
        # collector's buffer writes, its Redis replies, its timers) waited that long. Smaller reads keep a
        # turn short; at OKX's rates they cost a few hundred more recv() calls a second.
        if hasattr(transport, "max_size"):
            transport.max_size = FAST_LANE_READ_BYTES
        self.request_may_be_out = True
        super().connection_made(transport)

    def start_fast_lane(self, on_message: Callable[[str | bytes], None]) -> None:
        """Deliver every message to `on_message` from now on (those already received first)."""
        early, self._early = self._early, []
        self._on_message = on_message
        for message in early:
            on_message(message)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol.state is State.CONNECTING:
            # The protocol gets the handshake response alone: frames right behind it go through the lane.
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                super().data_received(data)
                return
            cut = len(data) - (len(self._head) - end - 4)
            self._head = b""
            super().data_received(data[:cut])
            data = data[cut:]
            if not data:
                return
        if self._rest:
            data, self._rest = self._rest + data, b""
        pos, size = 0, len(data)
        while size - pos >= 2:
            if protocol.state is not State.OPEN:
                super().data_received(data[pos:])  # closing: the protocol decides what is left
                return
            first, second = data[pos], data[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(data[start:start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(data[start:start + 8], "big")
                start += 8
            if second & 0x80:
                start += 4  # a masked frame from a server is an error: the protocol will say so
            end = start + length
            if end > size:
                break
            # 0x81: FIN, no extension bits, text.
            if first == 0x81 and not second & 0x80 and self._fragments is None and length <= self._max_fast:
                try:
                    text = data[start:end].decode()
                except UnicodeDecodeError:
                    super().data_received(data[pos:end])  # comes back to process_event, which fails it
                else:
                    self._deliver(text)
            else:
                super().data_received(data[pos:end])
            pos = end
        if pos < size:
            self._rest = data[pos:]

    def process_event(self, event: Any) -> None:
        if self.response is None or not isinstance(event, Frame) or event.opcode not in _DATA_OPCODES:
            super().process_event(event)  # the handshake, pings, pongs, close
            return
        if event.opcode is Opcode.CONT:
            if self._fragments is None:
                return  # the protocol refuses a stray continuation itself
            self._fragments[1].append(event.data)
        else:
            self._fragments = (event.opcode, [event.data])
        if not event.fin:
            return
        opcode, parts = self._fragments
        self._fragments = None
        payload = b"".join(parts)
        if opcode is Opcode.BINARY:
            self._deliver(payload)
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError as exc:
            self.protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            self.send_data()
            return
        self._deliver(text)

    def _deliver(self, message: str | bytes) -> None:
        if self._on_message is None:
            self._early.append(message)
        else:
            self._on_message(message)


