"""The whole OKX universe: SPOT, SWAP and FUTURES counts, futures expiries, listing and delisting at runtime."""

from __future__ import annotations

import asyncio
import calendar
import datetime
import time
from collections import Counter

import httpx
import orjson
import pytest
import websockets

from collectors.simulator import Simulator, SimulatorConfig, run_in_thread
from collectors.simulator.instruments import FUTURES_PER_UNDERLYING, expiry_of, futures_expiries
from collectors.simulator.market import Market

from .conftest import roomy

INSTRUMENTS = "/api/v5/public/instruments"
NOW = calendar.timegm((2026, 3, 18, 13, 27, 41)) * 1000  # a Wednesday


def listed(http: httpx.Client, inst_type: str) -> list[dict]:
    response = http.get(INSTRUMENTS, params={"instType": inst_type})
    assert response.status_code == 200, response.text
    return [row for row in response.json()["data"] if row["instId"]]



def test_counts_of_each_kind_and_swaps_true_still_means_one_per_spot():
    market = Market(SimulatorConfig(instruments=60, swaps=30, futures=10, list_time_ms=NOW - 86_400_000),
                    clock=lambda: NOW)
    kinds = Counter(inst.inst_type for inst in market.instruments.values())
    assert kinds == {"SPOT": 61, "SWAP": 30, "FUTURES": 10}  # SPOT includes REBASE-USDT
    legacy = Market(SimulatorConfig(instruments=5, swaps=True), clock=lambda: NOW)
    assert [i for i in legacy.instruments if i.endswith("-SWAP")] == [
        "BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP", "XRP-USDT-SWAP", "DOGE-USDT-SWAP", "REBASE-USDT-SWAP"]
    assert SimulatorConfig(instruments=5, swaps=False).swap_count == 0
    with pytest.raises(ValueError, match="futures"):
        SimulatorConfig(futures=-1)


def test_futures_expire_on_fridays_at_eight_utc_weekly_and_quarterly():
    expiries = futures_expiries(NOW)
    moments = [datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC) for ms in expiries.values()]
    assert all(m.weekday() == 4 and (m.hour, m.minute) == (8, 0) for m in moments)
    assert [m.date() for m in moments] == [
        datetime.date(2026, 3, 20), datetime.date(2026, 3, 27), datetime.date(2026, 6, 26),
        datetime.date(2026, 9, 25)]
    # The March quarterly is the bi-weekly's expiry: the quarter rolls to June.
    market = Market(SimulatorConfig(instruments=3, futures=FUTURES_PER_UNDERLYING + 2, list_time_ms=NOW - 86_400_000),
                    clock=lambda: NOW)
    futures = [inst for inst in market.instruments.values() if inst.inst_type == "FUTURES"]
    assert [inst.inst_id for inst in futures] == [
        "BTC-USDT-260320", "BTC-USDT-260327", "BTC-USDT-260626", "BTC-USDT-260925",
        "BTC-USD-260320", "BTC-USD-260327", "BTC-USD-260626", "BTC-USD-260925", "ETH-USDT-260320", "ETH-USDT-260327"]
    assert all(inst.exp_time_ms == expiry_of(inst.inst_id) for inst in futures)
    # A Friday after 08:00 already lists the next Friday as this week's.
    friday_noon = calendar.timegm((2026, 3, 20, 12, 0, 0)) * 1000
    assert futures_expiries(friday_noon)["this_week"] == calendar.timegm((2026, 3, 27, 8, 0, 0)) * 1000


def test_futures_are_listed_like_okx_and_have_candles_and_truth():
    config = roomy(instruments=4, swaps=2, futures=16)
    market_now = int(time.time() * 1000)

    with run_in_thread(config) as sim, httpx.Client(base_url=sim.rest_url, timeout=5) as http:
        futures = listed(http, "FUTURES")
        assert len(futures) == 16
        assert len(listed(http, "SWAP")) == 2
        assert len(listed(http, "SPOT")) == 5
        linear = next(row for row in futures if row["instId"].startswith("BTC-USDT-"))
        inverse = next(row for row in futures if row["instId"].startswith("BTC-USD-"))
        assert (linear["instType"], linear["settleCcy"], linear["instFamily"], linear["ctType"], linear["state"]) == (
            "FUTURES", "USDT", "BTC-USDT", "linear", "live")
        assert (inverse["settleCcy"], inverse["instFamily"], inverse["ctVal"], inverse["ctValCcy"],
                inverse["ctType"]) == ("BTC", "BTC-USD", "100", "USD", "inverse")
        for row in futures:
            assert int(row["expTime"]) == expiry_of(row["instId"]) > market_now
            assert int(row["listTime"]) < market_now
            assert row["instId"][-6:].isdigit()
        inst_id = linear["instId"]
        page = http.get("/api/v5/market/candles", params={"instId": inst_id, "bar": "1m", "limit": 5}).json()["data"]
        assert len(page) == 5
        truth = http.get("/sim/truth", params={"instId": inst_id, "bar": "1m", "start": page[-1][0],
                                               "end": page[1][0]}).json()["data"]
        assert truth[::-1] == page[1:]


async def _pushes_of(ws, inst_id: str, seconds: float) -> list[dict]:
    frames, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
        if frame.get("arg", {}).get("instId") == inst_id and "data" in frame:
            frames.append(frame)
    return frames


def test_list_and_delist_at_runtime_over_control():
    async def scenario() -> None:
        sim = Simulator(roomy(instruments=3, futures=2))
        async with sim.serve("127.0.0.1", 0) as server, httpx.AsyncClient(base_url=server.rest_url, timeout=5) as http:
                async def post(**body) -> object:
                    response = await http.post("/sim/control", json=body)
                    assert response.status_code == 200, response.text
                    return response.json()["result"]

                async def ids(inst_type: str) -> set[str]:
                    response = await http.get(INSTRUMENTS, params={"instType": inst_type})
                    return {row["instId"] for row in response.json()["data"] if row["instId"]}

                bad = await http.post("/sim/control", json={"action": "list_instrument", "instId": "NOT/AN/ID"})
                assert bad.status_code == 400
                assert "instId" in bad.json()["error"]
                row = await post(action="list_instrument", instId="NEWCOIN-USDT")
                assert (row["instType"], row["instId"], row["state"]) == ("SPOT", "NEWCOIN-USDT", "live")
                assert "NEWCOIN-USDT" in await ids("SPOT")
                future = await post(action="list_instrument", instId="BTC-USDT-991231")
                assert future["instType"] == "FUTURES"
                assert future["expTime"] == str(expiry_of("BTC-USDT-991231"))
                assert "BTC-USDT-991231" in await ids("FUTURES")

                async with websockets.connect(server.ws_url) as ws:
                    await ws.send(orjson.dumps({"id": "1", "op": "subscribe", "args": [
                        {"channel": "candle1s", "instId": "NEWCOIN-USDT"},
                        {"channel": "candle1s", "instId": "BTC-USDT-991231"}]}).decode())
                    assert len(await _pushes_of(ws, "NEWCOIN-USDT", 0.8)) >= 2
                    assert await post(action="delist_instrument", instId="NEWCOIN-USDT") is True
                    assert await post(action="delist_instrument", instId="NEWCOIN-USDT") is False
                    await _collect(ws, 0.3)  # pushes already on their way when it was delisted
                    assert await _pushes_of(ws, "NEWCOIN-USDT", 0.8) == []
                    assert "NEWCOIN-USDT" not in await ids("SPOT")
                    await ws.send(orjson.dumps({"id": "2", "op": "subscribe", "args": [
                        {"channel": "candle1m", "instId": "NEWCOIN-USDT"}]}).decode())
                    refused = [f for f in await _collect(ws, 0.5) if f.get("id") == "2"]
                    assert [frame["code"] for frame in refused] == ["60018"]
                    # The other channel on the connection carries on, and the truth of the gone one stays.
                    assert await _pushes_of(ws, "BTC-USDT-991231", 0.6)
                truth = await http.get("/sim/truth", params={"instId": "NEWCOIN-USDT", "bar": "1s"})
                assert truth.status_code == 200
                assert truth.json()["data"]
                stats = (await http.get("/sim/stats")).json()
                assert (stats["instruments_listed"], stats["instruments_delisted"]) == (2, 1)

    asyncio.run(scenario())


async def _collect(ws, seconds: float) -> list[dict]:
    frames, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return frames


def test_a_future_past_its_expiry_stops_being_listed_and_pushed():
    async def scenario() -> None:
        sim = Simulator(roomy(instruments=2))
        async with sim.serve("127.0.0.1", 0) as server:
            expires = int(time.time() * 1000) + 1200
            sim.list_instrument("ETH-USD-991231", exp_time_ms=expires)
            async with httpx.AsyncClient(base_url=server.rest_url, timeout=5) as http:
                response = await http.get(INSTRUMENTS, params={"instType": "FUTURES"})
                assert [row["expTime"] for row in response.json()["data"]] == [str(expires)]
                async with websockets.connect(server.ws_url) as ws:
                    await ws.send(orjson.dumps({"id": "1", "op": "subscribe", "args": [
                        {"channel": "candle1s", "instId": "ETH-USD-991231"}]}).decode())
                    before = await _pushes_of(ws, "ETH-USD-991231", 0.8)
                    assert before
                    # Pushes sent before the expiry wait in the socket: read them away first.
                    await _collect(ws, max(0.0, expires / 1000 - time.time()) + 0.3)
                    assert await _pushes_of(ws, "ETH-USD-991231", 0.8) == []
                response = await http.get(INSTRUMENTS, params={"instType": "FUTURES"})
                assert response.json()["data"] == []

    asyncio.run(scenario())
