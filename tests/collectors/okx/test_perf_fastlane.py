"""The fast lane of `FastLaneConnection` delivers exactly the messages websockets would, in order, however
the bytes are cut by the network, and leaves the rest of the protocol to websockets.

A real server on a real socket: the handshake by websockets' ServerProtocol, then frames written as raw
bytes in chunks of any size, text frames mixed with fragmented messages, binary ones and pings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import CloseCode, Frame, Opcode
from websockets.server import ServerProtocol

from collectors.okx.fast_lane import FastLaneConnection


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A server frame (unmasked) as it goes on the wire."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        return head + bytes([size]) + payload
    if size < 65_536:
        return head + bytes([126]) + size.to_bytes(2, "big") + payload
    return head + bytes([127]) + size.to_bytes(8, "big") + payload


TEXT, BINARY, CONT, PING = 0x1, 0x2, 0x0, 0x9


@contextlib.asynccontextmanager
async def raw_server(script: Callable[[asyncio.StreamReader, asyncio.StreamWriter, ServerProtocol], Awaitable[None]],
                     ) -> AsyncIterator[str]:
    """Accepts one WebSocket client, then runs `script`, which writes whatever bytes it likes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = ServerProtocol()
        events: list = []
        while not events:
            data = await reader.read(65_536)
            if not data:
                return
            protocol.receive_data(data)
            events = protocol.events_received()
        protocol.send_response(protocol.accept(events[0]))
        for data in protocol.data_to_send():
            writer.write(data)
        await script(reader, writer, protocol)
        # Until the client closes: websockets' protocol answers its close frame, as a server must.
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65_536):
                protocol.receive_data(data)
                protocol.events_received()
                for out in protocol.data_to_send():
                    if not out:  # the protocol's "close the TCP connection now"
                        writer.close()
                        return
                    writer.write(out)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.close()


async def connect(url: str) -> FastLaneConnection:
    return await websockets.connect(url, ping_interval=None, compression=None, max_queue=None,
                                    create_connection=FastLaneConnection)


async def collect(url: str, expected: int, timeout_s: float = 10.0) -> tuple[list[str | bytes], FastLaneConnection]:
    ws = await connect(url)
    got: list[str | bytes] = []
    ws.start_fast_lane(got.append)
    async with asyncio.timeout(timeout_s):
        while len(got) < expected:
            await asyncio.sleep(0.01)
    return got, ws


MESSAGES = st.lists(
    st.one_of(
        st.text(max_size=300).map(lambda text: ("text", text)),
        st.binary(max_size=50).map(lambda data: ("binary", data)),
        st.tuples(st.text(max_size=40), st.integers(1, 3)).map(lambda pair: ("fragmented", pair)),
        st.just(("text", "x" * 70_000)),  # a 64-bit length
    ),
    min_size=1, max_size=25,
)


def wire_of(messages) -> tuple[bytes, list[str | bytes]]:
    wire, expected = b"", []
    for kind, value in messages:
        if kind == "text":
            wire += frame(TEXT, value.encode())
            expected.append(value)
        elif kind == "binary":
            wire += frame(BINARY, value)
            expected.append(value)
        else:
            text, parts = value
            data = text.encode()
            cuts = [len(data) * k // (parts + 1) for k in range(1, parts + 1)]
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            wire += frame(TEXT, pieces[0], fin=False)
            for index, piece in enumerate(pieces[1:], start=1):
                wire += frame(PING, b"p%d" % index)  # control frames may come between fragments
                wire += frame(CONT, piece, fin=index == len(pieces) - 1)
            expected.append(text)
    return wire, expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MESSAGES, st.lists(st.integers(1, 700), min_size=1, max_size=40))
def test_messages_arrive_whole_and_in_order_however_the_bytes_are_cut(messages, cuts):
    wire, expected = wire_of(messages)
    pieces, pos = 0, 0
    while pos < len(wire):
        pos, pieces = pos + cuts[pieces % len(cuts)], pieces + 1
    # Each piece is a write and a turn of the event loop on both ends (about 50 µs on an idle machine): a
    # few megabytes cut into single bytes take longer than 10 s, and more on a busy machine. The guard only
    # catches a hang, so it grows with the work.
    timeout_s = 10.0 + pieces * 0.002

    async def script(reader, writer, protocol) -> None:
        pos, index = 0, 0
        while pos < len(wire):
            step = cuts[index % len(cuts)]
            writer.write(wire[pos:pos + step])
            await writer.drain()
            await asyncio.sleep(0)
            pos, index = pos + step, index + 1

    async def main() -> list[str | bytes]:
        async with raw_server(script) as url:
            got, ws = await collect(url, len(expected), timeout_s)
            await ws.close()
            return got

    assert asyncio.run(main()) == expected


def test_pings_are_answered_by_websockets_between_lane_messages():
    pongs: list[bytes] = []

    async def script(reader, writer, protocol) -> None:
        writer.write(frame(TEXT, b"one") + frame(PING, b"are you there") + frame(TEXT, b"two"))
        await writer.drain()
        async with asyncio.timeout(5):
            while not pongs:
                protocol.receive_data(await reader.read(65_536))
                pongs.extend(bytes(event.data) for event in protocol.events_received()
                             if isinstance(event, Frame) and event.opcode is Opcode.PONG)

    async def main() -> list:
        async with raw_server(script) as url:
            got, ws = await collect(url, 2)
            async with asyncio.timeout(5):
                while not pongs:
                    await asyncio.sleep(0.01)
            await ws.close()
            return got

    assert asyncio.run(main()) == ["one", "two"]
    assert pongs == [b"are you there"]


def test_invalid_utf8_in_a_text_frame_fails_the_connection_with_1007():
    async def script(reader, writer, protocol) -> None:
        writer.write(frame(TEXT, b"fine") + frame(TEXT, b"\xff\xfe broken"))
        await writer.drain()

    async def main() -> tuple[list, int | None]:
        async with raw_server(script) as url:
            ws = await connect(url)
            got: list = []
            ws.start_fast_lane(got.append)
            async with asyncio.timeout(5):
                await ws.wait_closed()
            return got, ws.protocol.close_sent.code if ws.protocol.close_sent else None

    got, code = asyncio.run(main())
    assert got == ["fine"]
    assert code == CloseCode.INVALID_DATA


def test_messages_before_the_lane_starts_are_delivered_first():
    async def script(reader, writer, protocol) -> None:
        writer.write(frame(TEXT, b"early") + frame(TEXT, b"also early"))
        await writer.drain()

    async def main() -> list:
        async with raw_server(script) as url:
            ws = await connect(url)
            await asyncio.sleep(0.2)  # both frames are in before anyone listens
            got: list = []
            ws.start_fast_lane(got.append)
            await ws.close()
            return got

    assert asyncio.run(main()) == ["early", "also early"]


@pytest.mark.parametrize("size", [125, 126, 65_535, 65_536])
def test_every_length_encoding_takes_the_lane(size):
    payload = "y" * size

    async def script(reader, writer, protocol) -> None:
        writer.write(frame(TEXT, payload.encode()))
        await writer.drain()

    async def main() -> list:
        async with raw_server(script) as url:
            got, ws = await collect(url, 1)
            await ws.close()
            return got

    assert asyncio.run(main()) == [payload]


def test_a_flood_is_read_in_small_bites_so_other_work_on_the_loop_keeps_its_turn():
    # 2 MB of frames written at once: each turn of the event loop reads at most FAST_LANE_READ_BYTES of them,
    # so another task of the same loop runs between the reads, not after the whole flood.
    from collectors.okx.fast_lane import FAST_LANE_READ_BYTES

    payload = b"z" * 1000
    count = 2000

    async def script(reader, writer, protocol) -> None:
        writer.write(frame(TEXT, payload) * count)
        await writer.drain()

    async def main() -> tuple[int, list[int]]:
        async with raw_server(script) as url:
            ws = await connect(url)
            got: list = []
            ticks: list[int] = []

            async def timer() -> None:
                while len(got) < count:
                    ticks.append(len(got))
                    await asyncio.sleep(0)

            ws.start_fast_lane(got.append)
            task = asyncio.create_task(timer())
            async with asyncio.timeout(10):
                await task
            size = ws.transport.max_size
            await ws.close()
            return size, ticks

    size, ticks = asyncio.run(main())
    assert size == FAST_LANE_READ_BYTES
    progress = sorted(set(ticks))
    assert len(progress) >= 2_000_000 // FAST_LANE_READ_BYTES // 2  # the timer ran between many small reads
