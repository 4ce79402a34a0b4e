"""REST endpoints over real sockets: candle pages, parameters, limits, instruments, /sim/ endpoints."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from collectors.simulator import run_in_thread
from collectors.simulator.bars import BARS

from .conftest import roomy

CANDLES = "/api/v5/market/candles"
HISTORY = "/api/v5/market/history-candles"
# Key order of samples/instruments_spot_example (shared/okx/samples/rest_candles.json).
SAMPLE_INSTRUMENT_KEYS = [
    "instType", "instId", "baseCcy", "quoteCcy", "settleCcy", "instFamily", "uly", "ctVal", "ctType", "listTime",
    "expTime", "tickSz", "lotSz", "minSz", "state", "ruleType", "instIdCode",
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["code", "msg", "data"]
    assert body["code"] == "0"
    assert body["msg"] == ""
    return body["data"]


def test_candles_latest_page_is_newest_first_and_may_start_with_the_open_candle(sim, http):
    page = rows(http.get(CANDLES, params={"instId": "BTC-USDT", "bar": "1m"}))
    assert len(page) == 100
    stamps = [int(r[0]) for r in page]
    assert stamps == sorted(stamps, reverse=True)
    assert all(a - b == 60_000 for a, b in itertools.pairwise(stamps))
    assert page[0][8] == "0"
    assert all(r[8] == "1" for r in page[1:])
    assert stamps[0] == BARS["1m"].floor(now_ms()) or stamps[0] == BARS["1m"].floor(now_ms()) - 60_000
    market = sim.simulator.market
    for row in page[1:]:
        assert market.truth("BTC-USDT", "1m", int(row[0])) == row


def test_after_and_before_are_exclusive_and_before_alone_gives_the_latest_page(http):
    page = rows(http.get(CANDLES, params={"instId": "ETH-USDT", "bar": "1m", "limit": 10}))
    newest, fifth = int(page[0][0]), int(page[4][0])
    after = rows(http.get(CANDLES, params={"instId": "ETH-USDT", "bar": "1m", "after": fifth, "limit": 3}))
    assert [int(r[0]) for r in after] == [fifth - 60_000, fifth - 120_000, fifth - 180_000]
    before = rows(http.get(CANDLES, params={"instId": "ETH-USDT", "bar": "1m", "before": fifth}))
    assert [int(r[0]) for r in before][-1] == fifth + 60_000
    assert int(before[0][0]) >= newest
    both = rows(http.get(CANDLES, params={
        "instId": "ETH-USDT", "bar": "1m", "after": fifth, "before": fifth - 240_000,
    }))
    assert [int(r[0]) for r in both] == [fifth - k * 60_000 for k in (1, 2, 3)]


def test_limit_defaults_to_100_and_is_capped_at_300(http):
    assert len(rows(http.get(HISTORY, params={"instId": "SOL-USDT", "bar": "1m"}))) == 100
    assert len(rows(http.get(HISTORY, params={"instId": "SOL-USDT", "bar": "1m", "limit": 1000}))) == 300
    assert len(rows(http.get(HISTORY, params={"instId": "SOL-USDT", "bar": "1m", "limit": 7}))) == 7


def test_candles_serves_only_the_latest_1440(http):
    walked: list[list[str]] = []
    after = None
    while True:
        params = {"instId": "XRP-USDT", "bar": "1m", "limit": 300}
        if after:
            params["after"] = after
        page = rows(http.get(CANDLES, params=params))
        if not page:
            break
        walked += page
        after = page[-1][0]
    assert len(walked) == 1440


def test_walking_history_back_returns_each_candle_once_down_to_list_time(sim, http):
    market = sim.simulator.market
    walked: list[list[str]] = []
    after = None
    while True:
        params = {"instId": "BTC-USDT-SWAP", "bar": "1H", "limit": 300}
        if after:
            params["after"] = after
        page = rows(http.get(HISTORY, params=params))
        if not page:
            break
        walked += page
        after = page[-1][0]
    stamps = [int(r[0]) for r in walked]
    assert len(stamps) == len(set(stamps))
    assert stamps == sorted(stamps, reverse=True)
    assert stamps[-1] == market.first_open("BTC-USDT-SWAP", "1H")
    assert stamps[0] >= BARS["1H"].floor(now_ms()) - 2 * 3_600_000
    assert all(r[8] == "1" for r in walked)
    assert walked[::-1] == market.truth_range("BTC-USDT-SWAP", "1H", stamps[-1], stamps[0])


def test_history_serves_1s_but_candles_does_not(http):
    assert len(rows(http.get(HISTORY, params={"instId": "BTC-USDT", "bar": "1s", "limit": 5}))) == 5
    response = http.get(CANDLES, params={"instId": "BTC-USDT", "bar": "1s"})
    assert response.status_code == 400
    assert response.json() == {"code": "51000", "msg": "Parameter bar error", "data": []}


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        (CANDLES, {"bar": "1m"}, "51000"),
        (CANDLES, {"instId": "NOPE-USDT"}, "51001"),
        (CANDLES, {"instId": "BTC-USDT", "bar": "5D"}, "51000"),
        (HISTORY, {"instId": "BTC-USDT", "bar": "5Dutc"}, "51000"),
        (HISTORY, {"instId": "BTC-USDT", "bar": "1h"}, "51000"),
        (HISTORY, {"instId": "BTC-USDT", "after": "yesterday"}, "51000"),
        ("/api/v5/public/instruments", {}, "51000"),
        ("/api/v5/public/instruments", {"instType": "spot"}, "51000"),
    ],
)
def test_parameter_errors(http, path, params, code):
    response = http.get(path, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code
    assert body["data"] == []
    assert body["msg"]


def test_instruments_look_like_the_sample(http):
    spot = rows(http.get("/api/v5/public/instruments", params={"instType": "SPOT"}))
    listed = [row for row in spot if row["instId"]]
    assert [row["instId"] for row in listed][:3] == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    for row in spot:
        assert [key for key in row if key in SAMPLE_INSTRUMENT_KEYS] == SAMPLE_INSTRUMENT_KEYS
        assert all(type(value) is str for key, value in row.items() if key != "instIdCode")
    btc = listed[0]
    assert (btc["instType"], btc["baseCcy"], btc["quoteCcy"], btc["tickSz"], btc["lotSz"], btc["state"]) == (
        "SPOT", "BTC", "USDT", "0.1", "0.00000001", "live",
    )
    assert int(btc["listTime"]) < now_ms()
    empty = [row for row in spot if not row["instId"]]
    assert len(empty) == 1
    assert empty[0]["baseCcy"] == ""
    assert empty[0]["listTime"] == ""
    assert {row["state"] for row in listed} == {"live", "rebase"}
    swaps = rows(http.get("/api/v5/public/instruments", params={"instType": "SWAP"}))
    btc_swap = next(row for row in swaps if row["instId"] == "BTC-USDT-SWAP")
    assert (btc_swap["ctVal"], btc_swap["settleCcy"], btc_swap["instFamily"], btc_swap["ctType"]) == (
        "0.01", "USDT", "BTC-USDT", "linear",
    )
    assert rows(http.get("/api/v5/public/instruments", params={"instType": "FUTURES"})) == []


def test_rate_limit_answers_429_over_the_limit_and_recovers():
    with run_in_thread(roomy(rest_candles_limit=(5, 1.0))) as sim, httpx.Client(base_url=sim.rest_url) as http:
        params = {"instId": "BTC-USDT", "limit": 1}
        statuses = [http.get(CANDLES, params=params).status_code for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        limited = http.get(CANDLES, params=params)
        assert limited.json() == {"msg": "Too Many Requests", "code": "50011"}
        # Another endpoint has its own budget.
        assert http.get(HISTORY, params=params).status_code == 200
        time.sleep(1.05)
        assert http.get(CANDLES, params=params).status_code == 200
        assert sim.simulator.stats()["rest_429s"] == 4


def test_forced_429_and_delay_via_control(sim, http):
    sim.simulator.rest_429(2)
    params = {"instId": "BTC-USDT", "limit": 1}
    assert [http.get(CANDLES, params=params).status_code for _ in range(3)] == [429, 429, 200]
    response = http.post("/sim/control", json={"action": "rest_delay", "seconds": 0.4, "count": 1})
    assert response.json() == {"ok": True, "result": None}
    started = time.monotonic()
    assert http.get(CANDLES, params=params).status_code == 200
    assert time.monotonic() - started >= 0.35
    started = time.monotonic()
    http.get(CANDLES, params=params)
    assert time.monotonic() - started < 0.3


def test_sim_truth_and_stats(sim, http):
    market = sim.simulator.market
    end = BARS["1m"].floor(now_ms()) - 60_000
    start = end - 5 * 60_000
    body = http.get("/sim/truth", params={"instId": "SOL-USDT", "bar": "1m", "start": start, "end": end}).json()
    assert body == {"data": market.truth_range("SOL-USDT", "1m", start, end)}
    assert [int(r[0]) for r in body["data"]] == list(range(start, end + 1, 60_000))
    assert http.get("/sim/truth", params={"instId": "NOPE", "bar": "1m"}).status_code == 400
    stats = http.get("/sim/stats").json()
    assert stats["rest_requests"] > 0
    assert "pushes_sent" in stats
    assert "connections" in stats


def test_sim_control_rejects_unknown_actions(http):
    response = http.post("/sim/control", json={"action": "explode"})
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert http.post("/sim/control", json={"action": "set_confirm_omit_rate", "rate": 0.0}).json()["ok"] is True
