"""Mark-price and index candle channels over real sockets: acks, 60018 errors, six-field pushes, confirms."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import websockets

from .test_ws import SAMPLE_ACK_KEYS, SAMPLE_ERROR_KEYS, collect, recv_json, run


def request(*args: tuple[str, str], request_id: str = "1", op: str = "subscribe") -> str:
    return orjson.dumps({"id": request_id, "op": op, "args": [
        {"channel": channel, "instId": inst_id} for channel, inst_id in args
    ]}).decode()


def test_mark_and_index_channels_ack_like_candle_channels_and_push_six_field_rows():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(request(("mark-price-candle1m", "BTC-USDT-SWAP"), ("index-candle1m", "BTC-USDT"),
                                  ("candle1m", "BTC-USDT"), request_id="77"))
            acks = [await recv_json(ws) for _ in range(3)]
            assert [list(ack) for ack in acks] == [SAMPLE_ACK_KEYS] * 3
            assert [ack["arg"] for ack in acks] == [
                {"channel": "mark-price-candle1m", "instId": "BTC-USDT-SWAP"},
                {"channel": "index-candle1m", "instId": "BTC-USDT"},
                {"channel": "candle1m", "instId": "BTC-USDT"},
            ]
            frames = await collect(ws, 1.05)
        for channel, width in [("mark-price-candle1m", 6), ("index-candle1m", 6), ("candle1m", 9)]:
            pushes = [frame for frame in frames if frame["arg"]["channel"] == channel]
            assert 4 <= len(pushes) <= 7  # one push per 0.2 s
            for push in pushes:
                assert list(push) == ["arg", "data"]
                [row] = push["data"]
                assert len(row) == width
                assert all(type(value) is str for value in row)
        for channel, series_id, price in [("mark-price-candle1m", "BTC-USDT-SWAP", "mark"),
                                          ("index-candle1m", "BTC-USDT", "index")]:
            for frame in frames:
                row = frame["data"][0]
                if frame["arg"]["channel"] == channel and row[5] == "0":
                    # An open version: the candle's open, and within the final candle's range once it closes.
                    assert row[1] == sim.market.current(series_id, "1m", int(row[0]), price=price)[1]

    run(scenario, push_interval=0.2)


@pytest.mark.parametrize(
    ("channel", "inst_id"),
    [
        ("index-candle1m", "BTC-USDT-SWAP"),  # an instrument id where an index belongs
        ("index-candle1m", "NOPE-USDT"),
        ("mark-price-candle1m", "BTC-USDT"),  # a spot pair has no mark price
        ("mark-price-candle1m", "NOPE-USDT-SWAP"),
        ("mark-price-candle1s", "BTC-USDT-SWAP"),  # no 1s mark or index channels
        ("index-candle1s", "BTC-USDT"),
        ("mark-price-candle1h", "BTC-USDT-SWAP"),  # bars are case-sensitive
        ("mark-price-candle", "BTC-USDT-SWAP"),
    ],
)
def test_wrong_instruments_and_bars_answer_60018_for_that_arg(channel, inst_id):
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(request((channel, inst_id), ("index-candle1H", "ETH-USDT"), request_id="9"))
            error, other = await recv_json(ws), await recv_json(ws)
            assert list(error) == SAMPLE_ERROR_KEYS
            assert (error["event"], error["code"], error["id"]) == ("error", "60018", "9")
            assert error["msg"] == (
                f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. "
                "Please use the correct URL, channel and parameters referring to API document."
            )
            assert other["event"] == "subscribe"
            assert sim.stats()["subscriptions"] == 1

    run(scenario, push_interval=60.0)


def test_mark_and_index_channels_live_on_business_only():
    async def scenario(sim, server):
        async with websockets.connect(server.public_ws_url) as ws:
            await ws.send(request(("mark-price-candle1m", "BTC-USDT-SWAP"), ("index-candle1m", "BTC-USDT")))
            assert [(await recv_json(ws))["code"] for _ in range(2)] == ["60018", "60018"]

    run(scenario, push_interval=60.0)


def forge_last_push(sim, open_ms: int) -> None:
    """Make every subscription look last pushed at `open_ms`, as if the candle opened then had just closed."""
    sim._on_loop(lambda: [
        connection.subscriptions.update(dict.fromkeys(connection.subscriptions, open_ms))
        for connection in sim._connections
    ])


def test_a_closed_candle_gets_a_confirm_push_equal_to_the_truth_and_rest_agrees():
    async def scenario(sim, server):
        args = [("mark-price-candle1m", "ETH-USDT-SWAP"), ("index-candle1m", "ETH-USDT")]
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(request(*args))
            await recv_json(ws), await recv_json(ws)
            first = await recv_json(ws)
            previous = int(first["data"][0][0]) - 60_000
            # 1m candles close once a minute: instead of waiting, the next tick is told the last push was of
            # the previous candle, so it confirms that one first, as it does at a real close.
            forge_last_push(sim, previous)
            frames = await collect(ws, 0.5)
        confirms = {f["arg"]["channel"]: f["data"][0] for f in frames if f["data"][0][5] == "1"}
        assert set(confirms) == {"mark-price-candle1m", "index-candle1m"}
        mark, index = confirms["mark-price-candle1m"], confirms["index-candle1m"]
        assert int(mark[0]) == int(index[0]) == previous
        assert sim.market.truth("ETH-USDT-SWAP", "1m", previous, price="mark") == mark
        assert sim.market.truth("ETH-USDT", "1m", previous, price="index") == index
        async with httpx.AsyncClient(base_url=server.rest_url) as http:
            for path, inst_id, row in [("mark-price-candles", "ETH-USDT-SWAP", mark),
                                       ("history-index-candles", "ETH-USDT", index)]:
                body = (await http.get(f"/api/v5/market/{path}", params={
                    "instId": inst_id, "bar": "1m", "after": previous + 1, "limit": 1,
                })).json()
                assert body["data"] == [row]

    run(scenario, push_interval=0.2)


def test_confirm_omissions_apply_to_mark_and_index_channels():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(request(("mark-price-candle1m", "BTC-USDT-SWAP"), ("index-candle1m", "BTC-USDT")))
            await recv_json(ws), await recv_json(ws)
            first = await recv_json(ws)
            forge_last_push(sim, int(first["data"][0][0]) - 60_000)  # as if the previous candle just closed
            frames = await collect(ws, 0.6)
        assert all(frame["data"][0][5] == "0" for frame in frames)
        assert sim.stats()["confirms_omitted"] >= 2

    run(scenario, push_interval=0.2, confirm_omit_rate=1.0)


def test_unsubscribe_and_ping_work_as_on_candle_channels():
    async def scenario(sim, server):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(request(("index-candle5m", "SOL-USDT"), ("mark-price-candle5m", "SOL-USDT-SWAP")))
            await recv_json(ws), await recv_json(ws)
            await ws.send(request(("index-candle5m", "SOL-USDT"), op="unsubscribe"))
            frames = await collect(ws, 0.5)
            ack = next(frame for frame in frames if "event" in frame)
            assert (ack["event"], ack["arg"]) == ("unsubscribe", {"channel": "index-candle5m", "instId": "SOL-USDT"})
            after = frames[frames.index(ack) + 1:]
            assert after
            assert {frame["arg"]["channel"] for frame in after} == {"mark-price-candle5m"}
            await ws.send("ping")
            texts = [await asyncio.wait_for(ws.recv(), 2) for _ in range(4)]
            assert "pong" in texts

    run(scenario, push_interval=0.1)
