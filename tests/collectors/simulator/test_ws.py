"""WebSocket side over real sockets: acks and errors shaped like the samples, pushes, closes, faults."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from collectors.simulator import ServerInfo, Simulator, run_in_thread

from .conftest import roomy

SAMPLE_ACK_KEYS = ["id", "event", "arg", "connId"]  # samples/ws_frames.jsonl, subscribe ack
SAMPLE_ERROR_KEYS = ["id", "event", "code", "msg", "connId"]  # samples/ws_frames.jsonl, 60012 error

Scenario = Callable[[Simulator, ServerInfo], Awaitable[None]]


def run(scenario: Scenario, **changes) -> None:
    async def main() -> None:
        sim = Simulator(roomy(**changes))
        async with sim.serve("127.0.0.1", 0) as server:
            await scenario(sim, server)

    asyncio.run(main())


def subscribe(*channels: tuple[str, str], request_id: str | None = "1", op: str = "subscribe") -> str:
    body: dict = {"op": op, "args": [{"channel": "candle" + bar, "instId": inst} for inst, bar in channels]}
    if request_id is not None:
        body = {"id": request_id, **body}
    return orjson.dumps(body).decode()


async def recv_json(ws) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), 3))


async def collect(ws, seconds: float) -> list[dict]:
    """Every JSON frame received within `seconds`."""
    frames, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return frames


async def read_until_closed(ws) -> tuple[list[str], ConnectionClosed]:
    """Every frame until the connection closes, and how it closed."""
    frames: list[str] = []
    while True:
        try:
            frames.append(await asyncio.wait_for(ws.recv(), 3))
        except ConnectionClosed as closed:
            return frames, closed


def test_subscribe_and_unsubscribe_acks_have_the_sample_shape():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1m"), ("ETH-USDT-SWAP", "1H"), request_id="1512"))
            first, second = await recv_json(ws), await recv_json(ws)
            assert list(first) == SAMPLE_ACK_KEYS
            assert first["id"] == "1512"
            assert first["event"] == "subscribe"
            assert first["arg"] == {"channel": "candle1m", "instId": "BTC-USDT"}
            assert len(first["connId"]) == 8
            int(first["connId"], 16)
            assert second["arg"] == {"channel": "candle1H", "instId": "ETH-USDT-SWAP"}
            assert second["connId"] == first["connId"]
            await ws.send(subscribe(("BTC-USDT", "1m"), request_id=None, op="unsubscribe"))
            ack = await recv_json(ws)
            assert list(ack) == ["event", "arg", "connId"]
            assert ack["event"] == "unsubscribe"
            assert sim.stats()["subscriptions"] == 1

    run(scenario)


@pytest.mark.parametrize(
    ("path", "channel", "inst_id"),
    [
        ("/ws/v5/business", "candle1h", "BTC-USDT"),  # bars are case-sensitive
        ("/ws/v5/business", "candle1m", "NOPE-USDT"),
        ("/ws/v5/business", "tickers", "BTC-USDT"),
        ("/ws/v5/public", "candle1m", "BTC-USDT"),  # candles live on /business only
    ],
)
def test_unknown_channels_answer_60018_for_that_arg(path, channel, inst_id):
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url.replace("/ws/v5/business", path)) as ws:
            await ws.send(orjson.dumps({"id": "9", "op": "subscribe", "args": [
                {"channel": channel, "instId": inst_id}, {"channel": "candle1m", "instId": "ETH-USDT"},
            ]}).decode())
            error, other = await recv_json(ws), await recv_json(ws)
            assert list(error) == SAMPLE_ERROR_KEYS
            assert error["code"] == "60018"
            assert error["id"] == "9"
            assert error["msg"] == (
                f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. "
                "Please use the correct URL, channel and parameters referring to API document."
            )
            assert other["event"] == ("error" if path.endswith("public") else "subscribe")

    run(scenario)


@pytest.mark.parametrize(
    "text",
    [
        '{"op": "subscribe", "argss":[{ "channel" : "candle1D", "instId" : "BTC-USD-191227"}]}',
        "{not json",
        '{"op": "login", "args": [{"channel": "candle1m", "instId": "BTC-USDT"}]}',
        '{"op": "subscribe", "args": []}',
        '["subscribe"]',
        '{"id": "not-alphanumeric", "op": "subscribe", "args": [{"channel": "candle1m", "instId": "BTC-USDT"}]}',
        '{"id": "' + "1" * 33 + '", "op": "subscribe", "args": [{"channel": "candle1m", "instId": "BTC-USDT"}]}',
        orjson.dumps({"op": "subscribe", "args": [{"channel": "candle1m", "instId": "BTC-USDT"}] * 2000}).decode(),
    ],
    ids=["argss", "not-json", "login", "no-args", "array", "bad-id", "long-id", "over-64KB"],
)
def test_invalid_requests_answer_60012_quoting_the_request(text):
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(text)
            error = await recv_json(ws)
            assert error["event"] == "error"
            assert error["code"] == "60012"
            assert error["msg"] == f"Invalid request: {text}"
            assert "connId" in error

    run(scenario)


def test_text_ping_gets_a_text_pong_and_can_be_ignored():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 2) == "pong"
            sim.ignore_pings(True)
            await ws.send("ping")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
            sim.ignore_pings(False)
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 2) == "pong"
            assert sim.stats()["pings"] == 3
            assert sim.stats()["pongs"] == 2

    run(scenario)


def test_pushes_arrive_at_the_configured_rate_with_the_right_arg():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("SOL-USDT", "1m"), ("BTC-USDT-SWAP", "15m")))
            await recv_json(ws), await recv_json(ws)
            frames = await collect(ws, 2.05)
        for name, inst_id in (("candle1m", "SOL-USDT"), ("candle15m", "BTC-USDT-SWAP")):
            pushes = [f for f in frames if f["arg"] == {"channel": name, "instId": inst_id}]
            assert 8 <= len(pushes) <= 12  # 2 s at one push per 0.2 s
            for push in pushes:
                assert list(push) == ["arg", "data"]
                [row] = push["data"]
                assert len(row) == 9
                assert all(type(v) is str for v in row)
        assert len(frames) == sum(1 for f in frames if "arg" in f)

    run(scenario, push_interval=0.2)


def test_a_closing_candle_gets_one_confirm_push_equal_to_the_truth_then_the_next_candle():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1s"), ("DOGE-USDT", "1s")))
            await recv_json(ws), await recv_json(ws)
            frames = await collect(ws, 3.1)
        for inst_id in ("BTC-USDT", "DOGE-USDT"):
            rows = [f["data"][0] for f in frames if f["arg"]["instId"] == inst_id]
            confirms = [row for row in rows if row[8] == "1"]
            assert len(confirms) >= 2
            assert len({row[0] for row in confirms}) == len(confirms)
            for row in confirms:
                assert sim.market.truth(inst_id, "1s", int(row[0])) == row
                following = rows[rows.index(row) + 1]
                assert int(following[0]) == int(row[0]) + 1000
                assert following[8] == "0"
            for earlier, later in itertools.pairwise(rows):
                assert int(later[0]) >= int(earlier[0])

    run(scenario, push_interval=0.2)


def test_every_confirm_push_is_omitted_at_rate_one():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1s")))
            await recv_json(ws)
            frames = await collect(ws, 2.5)
        rows = [f["data"][0] for f in frames]
        assert len({row[0] for row in rows}) >= 2  # candles did close
        assert all(row[8] == "0" for row in rows)
        assert sim.stats()["confirms_omitted"] >= 1

    run(scenario, push_interval=0.25, confirm_omit_rate=1.0)


def test_unsubscribed_channels_stop_pushing():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1m"), ("ETH-USDT", "1m")))
            await recv_json(ws), await recv_json(ws)
            await collect(ws, 0.3)
            await ws.send(subscribe(("BTC-USDT", "1m"), op="unsubscribe"))
            frames = await collect(ws, 0.8)
            # Pushes of both may still arrive before the ack: they were on their way when the request left.
            acked = next(i for i, f in enumerate(frames) if f.get("event") == "unsubscribe")
            pushes = [f for f in frames[acked:] if "data" in f]
            assert pushes
            assert {f["arg"]["instId"] for f in pushes[1:]} == {"ETH-USDT"}

    run(scenario, push_interval=0.1)


def test_a_silent_connection_is_closed_4004():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url, ping_interval=None) as ws:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert 0.9 <= time.monotonic() - started <= 2.5
            assert closed.value.rcvd.code == 4004
            assert closed.value.rcvd.reason == "No data received in 30s"

    run(scenario, idle_timeout=1.0)


def test_notice_64008_then_close_while_pushes_continue():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1m")))
            ack = await recv_json(ws)
            await collect(ws, 0.2)
            sim.send_notice(close_after=0.8)
            texts, closed = await read_until_closed(ws)
            frames = [orjson.loads(text) for text in texts]
            assert closed.rcvd.code in (1001, 1012)
            notices = [f for f in frames if f.get("event") == "notice"]
            assert notices == [{
                "event": "notice", "code": "64008",
                "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
                "connId": ack["connId"],
            }]
            assert sum(1 for f in frames[frames.index(notices[0]):] if "data" in f) >= 5

    run(scenario, push_interval=0.1)


def test_drop_connections_aborts_without_a_close_frame():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1m")))
            await recv_json(ws)
            assert sim.drop_connections() == 1
            _, closed = await read_until_closed(ws)
            assert closed.rcvd is None
        await asyncio.sleep(0.1)
        assert sim.stats()["connections"] == 0

    run(scenario, push_interval=0.1)


def test_malformed_frames_come_between_normal_pushes():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1m")))
            await recv_json(ws)
            await collect(ws, 0.15)
            sim.send_malformed(6)
            raw: list[str] = []
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                raw.append(await asyncio.wait_for(ws.recv(), 1))
        bad = []
        for text in raw:
            try:
                body = orjson.loads(text)
            except orjson.JSONDecodeError:
                bad.append("not json")
                continue
            if not isinstance(body, dict):
                bad.append("array")
            elif body["arg"]["channel"] != "candle1m":
                bad.append(body["arg"]["channel"])
            elif len(body["data"][0]) != 9:
                bad.append("short row")
            elif not body["data"][0][1].replace(".", "").isdigit():
                bad.append("non-numeric")
        assert sorted(bad) == sorted(["not json", "array", "short row", "non-numeric", "tickers", "candle7m"])
        assert raw.index(next(t for t in raw if t.startswith('{"arg": {"channel": "candle1m", "instId": '))) > 0
        assert sim.stats()["malformed_sent"] == 6

    run(scenario, push_interval=0.1)


def test_request_budget_answers_60014():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            for n in range(3):
                await ws.send(subscribe(("BTC-USDT", "1m"), request_id=str(n)))
                assert (await recv_json(ws))["event"] == "subscribe"
            await ws.send(subscribe(("ETH-USDT", "1m"), request_id="7"))
            error = await recv_json(ws)
            assert (error["event"], error["code"], error["msg"], error["id"]) == (
                "error", "60014", "Requests too frequent.", "7",
            )

    run(scenario, requests_per_hour=3, push_interval=60.0)


def test_too_many_channels_close_the_connection_4008():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1m"), ("ETH-USDT", "1m")))
            await recv_json(ws), await recv_json(ws)
            await ws.send(subscribe(("SOL-USDT", "1m")))
            _, closed = await read_until_closed(ws)
            assert closed.rcvd.code == 4008

    run(scenario, max_channels_per_connection=2, push_interval=60.0)


def test_new_connections_over_the_per_second_limit_get_http_429():
    async def scenario(sim, server):
        first = await websockets.connect(server.ws_url)
        second = await websockets.connect(server.ws_url)
        with pytest.raises(InvalidStatus) as rejected:
            await websockets.connect(server.ws_url)
        assert rejected.value.response.status_code == 429
        await first.close()
        await second.close()
        await asyncio.sleep(1.0)
        third = await websockets.connect(server.ws_url)
        await third.close()
        assert sim.stats()["handshakes_rejected"] == 1

    run(scenario, new_connections_per_second=2)


def test_plain_http_on_a_websocket_path_and_unknown_paths():
    async def scenario(sim, server):
        with pytest.raises(InvalidStatus) as rejected:
            await websockets.connect(server.ws_url.replace("/ws/v5/business", "/ws/v5/private-nope"))
        assert rejected.value.response.status_code == 404

    run(scenario)


def test_control_works_from_another_thread_and_over_http(sim, http):
    async def scenario() -> None:
        async with websockets.connect(sim.ws_url) as ws:
            await ws.send(subscribe(("BTC-USDT", "1m")))
            await recv_json(ws)
            result = await asyncio.to_thread(http.post, "/sim/control", json={"action": "drop_connections"})
            assert result.json() == {"ok": True, "result": 1}
            _, closed = await read_until_closed(ws)
            assert closed.rcvd is None

    asyncio.run(scenario())
    assert sim.simulator.stats()["drops"] >= 1


def test_a_client_that_stops_reading_is_closed_4005_then_dropped():
    config = roomy(
        instruments=300, swaps=False, bars=("1s", "1m"), push_interval=0.05, write_buffer_limit=256 * 1024,
        close_timeout=0.5,
    )
    with run_in_thread(config) as sim, socket.socket() as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep the kernel from absorbing the backlog
        raw.connect((sim.host, sim.port))
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall(
            f"GET /ws/v5/business HTTP/1.1\r\nHost: {sim.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert raw.recv(12) == b"HTTP/1.1 101"
        names = list(sim.simulator.market.instruments)
        for start in range(0, len(names), 100):
            request = subscribe(*((name, bar) for name in names[start:start + 100] for bar in ("1s", "1m")))
            raw.sendall(Frame(Opcode.TEXT, request.encode()).serialize(mask=True, extensions=[]))
        deadline = time.monotonic() + 8
        while sim.simulator.stats()["buffer_full_closes"] == 0:
            assert time.monotonic() < deadline, sim.simulator.stats()
            time.sleep(0.05)
        while sim.simulator.stats()["connections"]:
            assert time.monotonic() < deadline + 2
            time.sleep(0.05)
