"""Mark-price and index candles beside trade candles: channel names both ways, six-field rows on the exact and
the text path, 1s refused, and a 60018 refusal reaching the owner with the channel's price kind.

Frames come from `samples/ws_price_frames.jsonl` (each names its source); frames built here say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import serve

from collectors.okx.candle_rows import (
    CandleText,
    CandleUpdate,
    parse_candle_row,
    parse_candle_text,
    parse_price_row,
    parse_price_text,
)
from collectors.okx.messages import ErrorEvent, SubscribeAck, build_requests, parse_message
from collectors.okx.protocol import INDEX, MARK, PRICE_KINDS, TRADE, Channel, ProtocolError, check_subscribable
from collectors.okx.ws import OkxWsClient
from collectors.okx.ws_contract import WsConfig, WsHandler

SAMPLES = Path(__file__).resolve().parent / "samples"


def samples(direction: str = "recv") -> list[tuple[str, dict]]:
    lines = (SAMPLES / "ws_price_frames.jsonl").read_text().splitlines()
    return [(s["source"], s["frame"]) for s in map(json.loads, lines) if s["dir"] == direction]


def sample(source_part: str) -> dict:
    [frame] = [f for s, f in samples() if source_part in s]
    return frame


# --- channels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("price", "name"), [
    (TRADE, "candle1m"), (MARK, "mark-price-candle1m"), (INDEX, "index-candle1m"),
])
def test_each_price_kind_names_its_channel_and_is_named_by_it(price, name):
    channel = Channel("BTC-USD-SWAP" if price != INDEX else "BTC-USD", "1m", price)
    assert channel.name == name
    assert channel.arg() == {"channel": name, "instId": channel.inst_id}
    assert str(channel) == f"{name}:{channel.inst_id}"
    ack = orjson.dumps({"event": "subscribe", "arg": channel.arg(), "connId": "c"})
    [event] = parse_message(ack)
    assert event == SubscribeAck(channel, "c", None)
    assert event.channel.price == price
    request = orjson.loads(build_requests("subscribe", [channel])[0].payload)
    assert request["args"] == [{"channel": name, "instId": channel.inst_id}]


@pytest.mark.parametrize("name", ["candle", "mark-price-candle", "index-candle", "mark-candle1m", "index1m",
                                  "mark-price1m", "tickers"])
def test_a_name_that_is_no_candle_channel_of_any_kind_is_refused(name):
    raw = orjson.dumps({"arg": {"channel": name, "instId": "BTC-USD"}, "data": [["1", "1", "1", "1", "1", "0"]]})
    with pytest.raises(ProtocolError, match="not a candle channel"):
        parse_message(raw)


def test_the_docs_samples_name_their_channels_both_ways():
    for (source, sent) in samples("send"):
        [arg] = sent["args"]
        ack = next(f for s, f in samples() if f.get("event") == "subscribe" and f["arg"] == arg)
        [event] = parse_message(json.dumps(ack))
        assert event.channel.arg() == arg, source
        assert event.request_id == sent["id"]
    assert {e.channel.price for e in (parse_message(json.dumps(f))[0] for _, f in samples() if "arg" in f)} == {
        MARK, INDEX}


def test_a_trade_channel_is_still_the_pair_it_was_and_other_kinds_are_not_equal_to_it():
    trade = Channel("BTC-USDT-SWAP", "1m")
    assert trade == Channel("BTC-USDT-SWAP", "1m", "trade") == ("BTC-USDT-SWAP", "1m")
    assert hash(trade) == hash(("BTC-USDT-SWAP", "1m"))
    inst_id, bar = trade  # code keyed by (inst_id, bar) pairs keeps working for trade channels
    assert (inst_id, bar, trade.price) == ("BTC-USDT-SWAP", "1m", TRADE)
    mark, index = Channel("BTC-USDT-SWAP", "1m", MARK), Channel("BTC-USDT-SWAP", "1m", INDEX)
    assert len({trade, mark, index}) == 3
    assert ("BTC-USDT-SWAP", "1m") not in {mark, index}
    assert sorted([mark, trade, index]) == [trade, index, mark]  # any mix sorts (the client sorts its args)
    for channel in (trade, mark, index):
        assert pickle.loads(pickle.dumps(channel)) == channel
        assert type(pickle.loads(pickle.dumps(channel))) is Channel
        assert repr(channel) == f"Channel(inst_id='BTC-USDT-SWAP', bar='1m', price={channel.price!r})"
    assert PRICE_KINDS == ("trade", "mark", "index")


def test_an_unknown_price_kind_is_refused():
    with pytest.raises(ValueError, match="price must be one of"):
        Channel("BTC-USD", "1m", "last")


# --- rows --------------------------------------------------------------------------------------------


def test_every_recorded_price_frame_parses_alike_in_both_modes():
    for source, frame in samples():
        raw = json.dumps(frame)
        exact, text = parse_message(raw), parse_message(raw, text=True)
        assert len(exact) == len(text) >= 1, source
        for e, t in zip(exact, text, strict=True):
            if isinstance(e, CandleUpdate):
                assert type(t) is CandleText
                assert t.exact() == e, source
                assert (e.vol, e.vol_ccy, e.vol_ccy_quote) == (None, None, None)
                assert (t.vol, t.vol_ccy, t.vol_ccy_quote) == (None, None, None)
                assert e.price in (MARK, INDEX)
            else:
                assert t == e


def test_the_docs_mark_price_push_gives_one_exact_candle_per_row():
    frame = sample("Mark price candlesticks channel, push data example")
    first, second = parse_message(orjson.dumps(frame))
    assert first == CandleUpdate("BTC-USD-190628", "1D", 1597026383085, Decimal("3.721"), Decimal("3.743"),
                                 Decimal("3.677"), Decimal("3.708"), None, None, None, False, MARK)
    assert (second.close, second.confirmed, second.price) == (Decimal("3.72"), True, MARK)
    assert str(second.close) == "3.72"
    assert first.channel == Channel("BTC-USD-190628", "1D", MARK)


@pytest.mark.parametrize(("source_part", "expected"), [
    ("Index candlesticks channel, push data example", ("BTC-USD", "30m", 1597026383085, "3811.31", "3811.31",
                                                       "3811.31", "3811.31", False)),
    ("BTC-USDT open candle", ("BTC-USDT", "1m", 1761824220000, "110015.9", "110016", "109963.7", "109963.7", False)),
    ("XRP-USDT open candle", ("XRP-USDT", "1m", 1761824220000, "2.5515", "2.5519", "2.5499", "2.5499", False)),
    ("closed index-candle15m", ("OL-USDT", "15m", 1734787800000, "0.231277", "0.234458", "0.228937", "0.233068",
                                True)),
])
def test_each_recorded_index_push_keeps_every_digit(source_part, expected):
    raw = json.dumps(sample(source_part))
    [exact], [text] = parse_message(raw), parse_message(raw, text=True)
    inst_id, bar, ts, o, h, low, c, confirmed = expected
    assert (exact.inst_id, exact.bar, exact.open_time_ms, exact.confirmed, exact.price) == (
        inst_id, bar, ts, confirmed, INDEX)
    assert [str(v) for v in (exact.open, exact.high, exact.low, exact.close)] == [o, h, low, c]
    assert (text.open, text.high, text.low, text.close, text.price) == (o, h, low, c, INDEX)


def test_a_mark_and_a_trade_update_of_one_instrument_and_bar_are_never_equal_and_carry_their_kind():
    # Built here: the same instrument, bar, open time and prices on the trade channel and the mark channel.
    ts, o, h, low, c = "1705420800000", "43253.6", "43440.2", "43000", "43250.9"
    trade_frame = orjson.dumps({"arg": {"channel": "candle1H", "instId": "BTC-USDT-SWAP"},
                                "data": [[ts, o, h, low, c, "0", "0", "0", "1"]]})
    mark_frame = orjson.dumps({"arg": {"channel": "mark-price-candle1H", "instId": "BTC-USDT-SWAP"},
                               "data": [[ts, o, h, low, c, "1"]]})
    index_frame = orjson.dumps({"arg": {"channel": "index-candle1H", "instId": "BTC-USDT-SWAP"},
                                "data": [[ts, o, h, low, c, "1"]]})
    for text in (False, True):
        [trade], [mark], [index] = (parse_message(f, text=text) for f in (trade_frame, mark_frame, index_frame))
        assert (trade.price, mark.price, index.price) == (TRADE, MARK, INDEX)
        assert trade[:7] == mark[:7] == index[:7]  # same instrument, bar, open time and prices
        assert len({trade, mark, index}) == 3
        assert len({trade.channel, mark.channel, index.channel}) == 3
        assert mark != mark._replace(price=INDEX)


def test_existing_positional_construction_still_gives_a_trade_candle():
    one = Decimal(1)
    update = CandleUpdate("BTC-USDT", "1m", 0, one, one, one, one, one, one, None, True)
    text = CandleText("BTC-USDT", "1m", 0, "1", "1", "1", "1", "1", "1", None, True)
    assert update.price == text.price == TRADE
    # A trade candle is still the 11-tuple it was: code unpacking it (the collector's ingest does) keeps working.
    _, bar, open_ms, *_numbers, confirmed = text
    assert (bar, open_ms, confirmed) == ("1m", 0, True)
    assert update == CandleUpdate("BTC-USDT", "1m", 0, one, one, one, one, one, one, None, True, TRADE)
    assert len(update) == len(text) == 11
    mark = parse_price_text("BTC-USDT-SWAP", "1m", MARK, ROW, "r")
    assert len(mark) == len(mark.exact()) == 12
    assert mark._asdict()["price"] == MARK
    assert repr(mark).endswith("confirmed=False, price='mark')")
    assert pickle.loads(pickle.dumps(mark)) == mark
    assert update.channel == Channel("BTC-USDT", "1m")
    assert text.exact() == update
    assert parse_candle_row("BTC-USDT", "1m", ["0", "1", "1", "1", "1", "1", "1", "", "1"], "r") == update


ROW = ["1597026383085", "3.721", "3.743", "3.677", "3.708", "0"]


@pytest.mark.parametrize(("row", "reason"), [
    (ROW[:5], "index candle row must be a list of at least 6 strings"),
    ([], "index candle row must be a list of at least 6 strings"),
    ("1597026383085,3.721", "index candle row must be a list of at least 6 strings"),
    (["-5", *ROW[1:]], "ts is not epoch milliseconds: '-5'"),
    ([1597026383085, *ROW[1:]], "ts is not epoch milliseconds: 1597026383085"),
    (["\u0661\u0662", *ROW[1:]], "ts is not epoch milliseconds"),
    ([*ROW[:1], "abc", *ROW[2:]], "o is not a number: 'abc'"),
    ([*ROW[:2], "NaN", *ROW[3:]], "h is not a finite number: 'NaN'"),
    ([*ROW[:3], "-Infinity", *ROW[4:]], "l is not a finite number: '-Infinity'"),
    ([*ROW[:4], None, ROW[5]], "c is not a string: None"),
    ([*ROW[:4], 3.708, ROW[5]], "c is not a string: 3.708"),
    ([*ROW[:5], "2"], "confirm must be '0' or '1': '2'"),
    ([*ROW[:5], 1], "confirm must be '0' or '1': 1"),
    ([*ROW[:5], ""], "confirm must be '0' or '1': ''"),
    # A trade row where a six-field one belongs: its vol lands where confirm should be.
    ([*ROW[:5], "45247", "529.58", "5529.58", "0"], "confirm must be '0' or '1': '45247'"),
])
def test_a_malformed_six_field_row_raises_the_same_protocol_error_in_both_modes(row, reason):
    raw = orjson.dumps({"arg": {"channel": "index-candle30m", "instId": "BTC-USD"}, "data": [row]})
    errors = []
    for text in (False, True):
        with pytest.raises(ProtocolError) as caught:
            parse_message(raw, text=text)
        assert caught.value.raw == raw
        errors.append(caught.value.reason)
    assert errors[0] == errors[1]
    assert errors[0].startswith(reason)


def test_a_mark_row_error_names_the_mark_kind():
    with pytest.raises(ProtocolError, match=r"^mark candle row must be a list of at least 6 strings"):
        parse_price_row("BTC-USD-SWAP", "1m", MARK, ROW[:4], "raw")


def test_a_six_field_row_on_a_trade_channel_is_still_an_error():
    raw = orjson.dumps({"arg": {"channel": "candle30m", "instId": "BTC-USD"}, "data": [ROW]})
    for text in (False, True):
        with pytest.raises(ProtocolError, match="candle row must be a list of at least 7 strings"):
            parse_message(raw, text=text)


def test_fields_okx_may_add_after_the_sixth_are_ignored():
    longer = [*ROW, "1597026443085", "x"]
    raw = orjson.dumps({"arg": {"channel": "mark-price-candle1m", "instId": "BTC-USD-SWAP"}, "data": [longer]})
    [exact], [text] = parse_message(raw), parse_message(raw, text=True)
    assert exact == parse_price_row("BTC-USD-SWAP", "1m", MARK, ROW, "r")
    assert text == parse_price_text("BTC-USD-SWAP", "1m", MARK, ROW, "r")


def test_the_public_row_parsers_take_a_price_kind():
    assert parse_candle_row("BTC-USD", "1m", ROW, "r", INDEX) == parse_price_row("BTC-USD", "1m", INDEX, ROW, "r")
    assert parse_candle_text("BTC-USD", "1m", ROW, "r", price=MARK) == parse_price_text("BTC-USD", "1m", MARK, ROW,
                                                                                         "r")


NUMBER = st.sampled_from(["3.721", "0", "-0", "1E-8", "0.00000001", "+1", " 1", "1_0", "NaN", "inf", "", "abc",
                          "\u0661", "43000.0", "1e999999"]) | st.text(max_size=5)
PRICE_ROW = st.builds(
    lambda ts, numbers, confirm, extra: [ts, *numbers, *confirm, *extra],
    st.sampled_from(["1597026383085", "0", "-5", "1_0", "", "\u0661"]),
    st.lists(NUMBER, min_size=4, max_size=4),
    st.sampled_from([[], ["0"], ["1"], ["2"], [""], [1]]),
    st.sampled_from([[], ["x"], [None]]),
)


def outcome(parse, row):
    try:
        return parse("BTC-USD", "1m", INDEX, row, "raw")
    except ProtocolError as error:
        return error


@settings(max_examples=600, deadline=None)
@given(PRICE_ROW | st.lists(NUMBER | st.none() | st.integers(), max_size=8))
@example(["1597026383085", "0.1000000000000000001", "1E-8", "-0", "+1", "1"])
def test_the_text_parser_takes_exactly_the_six_field_rows_of_the_exact_parser_and_keeps_their_numbers(row):
    exact, text = outcome(parse_price_row, row), outcome(parse_price_text, row)
    if isinstance(exact, ProtocolError):
        assert isinstance(text, ProtocolError)
        assert text.reason == exact.reason
        return
    assert type(text) is CandleText
    assert text.exact() == exact
    for kept, original, number in zip(text[3:7], row[1:5], exact[3:7], strict=True):
        assert Decimal(kept).as_tuple() == number.as_tuple()
        assert kept in (original, str(number))


# --- requests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("price", [MARK, INDEX])
def test_1s_is_refused_for_mark_and_index_channels_before_any_request(price):
    channel = Channel("BTC-USD-SWAP", "1s", price)
    with pytest.raises(ValueError, match="1s candles exist for trade prices only"):
        check_subscribable(channel)
    for op in ("subscribe", "unsubscribe"):
        with pytest.raises(ValueError, match="trade prices only"):
            build_requests(op, [Channel("BTC-USD-SWAP", "1m", price), channel])
    assert build_requests("subscribe", [Channel("BTC-USDT", "1s")])  # trade 1s candles exist


def test_the_websocket_client_refuses_a_1s_mark_channel_and_changes_nothing():
    client = OkxWsClient(WsConfig(url="ws://127.0.0.1:9/"), WsHandler())
    with pytest.raises(ValueError, match="trade prices only"):
        client.add([Channel("BTC-USD-SWAP", "1m", MARK), Channel("BTC-USD-SWAP", "1s", MARK)])
    with pytest.raises(ValueError, match="trade prices only"):
        client.set_channels([Channel("BTC-USD", "1s", INDEX)])
    assert client.channels == set()


# --- errors ------------------------------------------------------------------------------------------


def test_60018_for_an_instrument_id_on_an_index_channel_is_an_error_event_like_any_other():
    [error] = parse_message(json.dumps(sample("burakoner/OKX.Api#34")))
    assert error == ErrorEvent("60018", "channel:index-candle1m,instId:ETH-USDC-SWAP doesn't exist", None, None)


class Recorder(WsHandler):
    candles_as_text = True

    def __init__(self) -> None:
        self.candles: list[CandleText] = []
        self.invalid: list[tuple[Channel, ErrorEvent]] = []
        self.subscribed: list[Channel] = []

    def on_candle(self, update, raw):
        self.candles.append(update)

    def on_invalid(self, channel, error):
        self.invalid.append((channel, error))

    def on_subscribed(self, channel):
        self.subscribed.append(channel)


async def okx_like(ws) -> None:
    """A stand-in for OKX's business WebSocket (built here, following PROTOCOL.md and the samples): acks each arg
    and pushes one candle on it, except that an instrument id (`-SWAP`) on `index-candle*` gets OKX's 60018,
    worded and without the request id as in burakoner/OKX.Api#34."""
    async for message in ws:
        if message == "ping":
            await ws.send("pong")
            continue
        request = json.loads(message)
        for arg in request["args"]:
            name, inst_id = arg["channel"], arg["instId"]
            if request["op"] != "subscribe":
                await ws.send(json.dumps({"id": request["id"], "event": request["op"], "arg": arg, "connId": "c1"}))
            elif name.startswith("index-candle") and inst_id.endswith("-SWAP"):
                await ws.send(json.dumps({"event": "error", "code": "60018",
                                          "msg": f"channel:{name},instId:{inst_id} doesn't exist"}))
            else:
                await ws.send(json.dumps({"id": request["id"], "event": "subscribe", "arg": arg, "connId": "c1"}))
                row = ["1761824220000", "110015.9", "110016", "109963.7", "109963.7"]
                row += ["0", "0", "0", "0"] if name.startswith("candle") else ["0"]
                await ws.send(json.dumps({"arg": arg, "data": [row]}))


def test_a_60018_refusal_marks_that_channel_invalid_with_its_price_kind_and_the_rest_flow():
    mark = Channel("BTC-USD-SWAP", "1m", MARK)
    index = Channel("BTC-USD", "1m", INDEX)
    trade = Channel("BTC-USD-SWAP", "1m")
    bogus = Channel("ETH-USDC-SWAP", "1m", INDEX)
    # The same instrument and bar as a mark channel that works: only the index one is refused.
    also_bogus = Channel("BTC-USD-SWAP", "1m", INDEX)

    async def main() -> tuple[Recorder, OkxWsClient]:
        async with serve(okx_like, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            rec = Recorder()
            client = OkxWsClient(WsConfig(url=f"ws://127.0.0.1:{port}/", backoff_base_s=0.05, backoff_cap_s=0.2), rec)
            client.set_channels([mark, index, trade, bogus, also_bogus])
            runner = asyncio.create_task(client.run())
            try:
                deadline = time.monotonic() + 10
                while len(rec.invalid) < 2 or len({c.channel for c in rec.candles}) < 3:
                    assert time.monotonic() < deadline, (rec.invalid, rec.candles)
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)  # nothing more comes: no retry of the refused channels
            finally:
                await client.stop()
                with contextlib.suppress(Exception):
                    await runner
            return rec, client

    rec, client = asyncio.run(main())
    assert sorted(channel for channel, _ in rec.invalid) == sorted([bogus, also_bogus])
    assert all(error.code == "60018" and channel.price == INDEX for channel, error in rec.invalid)
    assert set(client.invalid) == {bogus, also_bogus}
    assert {c.channel for c in rec.candles} == {mark, index, trade}
    assert {(c.channel, c.price, c.vol) for c in rec.candles} == {(mark, MARK, None), (index, INDEX, None),
                                                                   (trade, TRADE, "0")}
    assert sorted(rec.subscribed) == sorted([mark, index, trade])


@pytest.mark.parametrize("price", [TRADE, "last"])
def test_the_six_field_parsers_refuse_a_kind_without_six_field_rows(price):
    for parse in (parse_price_row, parse_price_text):
        with pytest.raises(ValueError, match="six-field rows are mark or index candles"):
            parse("BTC-USD", "1m", price, ROW, "raw")
    with pytest.raises(ValueError, match="six-field rows"):
        parse_candle_row("BTC-USD", "1m", ROW, "raw", "last")
