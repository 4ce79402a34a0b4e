"""OKX frames parse into typed events with exact values; anything that is not OKX is a ProtocolError."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.okx.candle_rows import CandleUpdate, parse_candle_row
from collectors.okx.messages import (
    MAX_REQUEST_BYTES,
    ErrorEvent,
    Notice,
    OtherEvent,
    Pong,
    SubscribeAck,
    UnsubscribeAck,
    build_requests,
    parse_message,
)
from collectors.okx.protocol import Channel, ProtocolError

SAMPLES = Path(__file__).resolve().parent / "samples"  # recorded OKX frames, copied from shared/okx/samples


def received_samples() -> list[tuple[str, dict]]:
    lines = (SAMPLES / "ws_frames.jsonl").read_text().splitlines()
    return [(s["source"], s["frame"]) for s in map(json.loads, lines) if s["dir"] == "recv"]


def test_the_samples_are_where_the_tests_expect_them():
    assert len(received_samples()) == 12


def test_every_recorded_frame_parses_without_error():
    for source, frame in received_samples():
        events = parse_message(json.dumps(frame))
        assert events, source


def test_a_closed_1h_candle_keeps_every_digit():
    frame = {"arg": {"channel": "candle1H", "instId": "BTC-USDT"}, "data": [[
        "1705420800000", "43253.6", "43440.2", "43000", "43250.9", "942.87870026", "40743115.773175484",
        "40743115.773175484", "1"]]}
    [event] = parse_message(orjson.dumps(frame))
    assert event == CandleUpdate(
        "BTC-USDT", "1H", 1705420800000, Decimal("43253.6"), Decimal("43440.2"), Decimal("43000"),
        Decimal("43250.9"), Decimal("942.87870026"), Decimal("40743115.773175484"),
        Decimal("40743115.773175484"), True,
    )
    assert str(event.vol_ccy) == "40743115.773175484"


@pytest.mark.parametrize(("source_part", "expected"), [
    ("WS candlesticks channel, push example", ("BTC-USDT", "1D", 1597026383085, "8533.02", "8553.74", "8527.17",
                                               "8548.26", "45247", "529.5858061", "5529.5858061", False)),
    ("Chinese page", ("BTC-USDT", "1D", 1629993600000, "42500", "48199.9", "41006.1", "41006.1", "3587.41204591",
                      "166741046.22583129", "166741046.22583129", False)),
    ("open 1H candle", ("BTC-USDT", "1H", 1705435200000, "43169.8", "43370", "43168", "43239", "297.60067612",
                        "12874025.740848533", "12874025.740848533", False)),
    ("zero-trade", ("XMR-USDT-SWAP", "1H", 1691312400000, "160.36", "160.36", "160.36", "160.36", "0", "0", "0",
                    False)),
    ("7-field", ("BTC-USDT", "1m", 1626690720000, "31334", "31334", "31334", "31334", "0.0077", "241.2718", None,
                 False)),
])
def test_each_recorded_push_gives_exact_decimals(source_part, expected):
    [(_, frame)] = [(s, f) for s, f in received_samples() if source_part in s]
    [event] = parse_message(json.dumps(frame))
    inst, bar, ts, *numbers, confirmed = expected
    assert (event.inst_id, event.bar, event.open_time_ms, event.confirmed) == (inst, bar, ts, confirmed)
    values = [event.open, event.high, event.low, event.close, event.vol, event.vol_ccy, event.vol_ccy_quote]
    assert [None if v is None else str(v) for v in values] == numbers


def test_the_old_seven_field_row_has_no_quote_volume_and_is_not_confirmed():
    [(_, frame)] = [(s, f) for s, f in received_samples() if "7-field" in s]
    [event] = parse_message(json.dumps(frame))
    assert event.vol_ccy_quote is None
    assert event.confirmed is False


def test_every_row_of_data_is_an_event_with_its_own_open_time():
    frame = {"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": [
        ["1678928700000", "24324.1", "24347.6", "24321.7", "24341.4", "2565", "10.5401", "256500", "1"],
        ["1678928760000", "24341.4", "24344", "24313.2", "24323", "628", "2.5819", "62800", "0"],
    ]}
    events = parse_message(json.dumps(frame))
    assert [(e.open_time_ms, e.confirmed) for e in events] == [(1678928700000, True), (1678928760000, False)]


def test_acks_errors_notices_and_pong_become_their_events():
    by_source = {source: parse_message(json.dumps(frame))[0] for source, frame in received_samples()}
    ack = by_source["OKX docs, subscribe ack (one per arg)"]
    assert ack == SubscribeAck(Channel("BTC-USDT", "1D"), conn_id="a4d3ae55", request_id="1512")
    assert by_source["OKX docs, unsubscribe ack"] == UnsubscribeAck(Channel("BTC-USDT", "1m"), "d0b44253", None)
    error = next(e for s, e in by_source.items() if "sieblyio" in s)
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.conn_id) == ("60018", "2b5dc6ac")
    moved = next(e for s, e in by_source.items() if "DogsTailFarmer" in s)
    assert (moved.code, moved.conn_id) == ("64001", None)
    notice = by_source["OKX docs, notice before a service-upgrade disconnect"]
    assert notice == Notice("64008", notice.msg, "a4d3ae55")
    assert parse_message("pong") == [Pong()]
    assert parse_message(b"pong") == [Pong()]


def test_an_unknown_event_is_kept_not_refused():
    [event] = parse_message('{"event": "channel-conn-count", "channel": "candle1m", "connCount": "2"}')
    assert isinstance(event, OtherEvent)
    assert event.event == "channel-conn-count"


@pytest.mark.parametrize("raw", [
    "not json",
    "[1, 2]",
    "{}",
    '{"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": []}',
    '{"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": [["1", "2", "3"]]}',
    '{"arg": {"channel": "tickers", "instId": "BTC-USDT"}, "data": [["1","1","1","1","1","1","1"]]}',
    '{"arg": {"channel": "candle1m"}, "data": [["1","1","1","1","1","1","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","abc","1","1","1","1","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","NaN","1","1","1","1","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["-5","1","1","1","1","1","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","1","1","1","1","1",null,"2"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [[1,"1","1","1","1","1","1"]]}',
    '{"event": "error", "msg": "no code"}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","Infinity","1","1","1","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","1","1","1","-inf","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","1","1","1","1","sNaN"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["\u0661\u0662","1","1","1","1","1","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","1","1","1","1","1","2","x"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","1","1","1","1.2.3","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","1","1","1","-","1"]]}',
    '{"arg": {"channel": "candle1m", "instId": "X"}, "data": [["1","1","1","1","1","1",1.5]]}',
])
def test_a_frame_that_is_not_okx_raises_a_protocol_error_carrying_the_raw_frame(raw):
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw)
    assert caught.value.raw == raw
    assert caught.value.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(
        st.sampled_from(["arg", "data", "event", "code", "msg", "channel", "instId", "id", "connId"]), inner,
        max_size=5),
    max_leaves=30,
).map(lambda body: orjson.dumps(body))))
def test_no_input_makes_the_parser_raise_anything_but_a_protocol_error(raw):
    outcome: object
    try:
        outcome = parse_message(raw)
    except ProtocolError as error:
        outcome = error
    if isinstance(outcome, ProtocolError):
        assert outcome.raw == raw
    else:
        assert isinstance(outcome, list)


def test_a_row_of_the_common_shape_and_one_with_unusual_but_valid_fields_parse_alike():
    common = ["1705431600000", "43016", "43183.8", "42946", "43169.7", "404.7", "17447600.2", "17447600.2", "1"]
    unusual = [*common[:7], None, "1"]  # a null quote volume takes the careful path
    fast = parse_candle_row("BTC-USDT", "1H", common, raw="r")
    careful = parse_candle_row("BTC-USDT", "1H", unusual, raw="r")
    assert fast[:9] == careful[:9]
    assert fast.confirmed is careful.confirmed is True
    assert (fast.vol_ccy_quote, careful.vol_ccy_quote) == (Decimal("17447600.2"), None)
    assert type(fast) is type(careful) is CandleUpdate


def test_rest_rows_use_the_same_row_parser():
    row = ["1705431600000", "43016", "43183.8", "42946", "43169.7", "404.74017381", "17447600.212916623",
           "17447600.212916623", "1"]
    update = parse_candle_row("BTC-USDT", "1H", row, raw="page")
    assert update.vol_ccy == Decimal("17447600.212916623")
    assert update.confirmed is True


def test_requests_are_batched_under_the_size_limit_with_ids_that_map_back_to_their_channels():
    channels = [Channel(f"INSTRUMENT{i:05d}-USDT-SWAP", "1Dutc") for i in range(2000)]
    requests = build_requests("subscribe", channels, args_per_request=10_000)
    assert len(requests) > 1
    assert all(len(r.payload) <= MAX_REQUEST_BYTES for r in requests)
    assert [c for r in requests for c in r.channels] == channels
    assert len({r.request_id for r in requests}) == len(requests)
    body = orjson.loads(requests[0].payload)
    assert body["op"] == "subscribe"
    assert body["id"] == requests[0].request_id
    assert body["args"][0] == {"channel": "candle1Dutc", "instId": "INSTRUMENT00000-USDT-SWAP"}


def test_small_batches_keep_an_error_traceable_to_few_args():
    requests = build_requests("unsubscribe", [Channel("BTC-USDT", b) for b in ("1m", "1M", "1s")], args_per_request=2)
    assert [len(r.channels) for r in requests] == [2, 1]
    assert orjson.loads(requests[1].payload)["args"] == [{"channel": "candle1s", "instId": "BTC-USDT"}]


def test_a_request_id_is_at_most_32_alphanumerics():
    [request] = build_requests("subscribe", [Channel("BTC-USDT", "1m")])
    assert request.request_id.isalnum()
    assert len(request.request_id) <= 32


def test_an_unknown_op_is_refused():
    with pytest.raises(ValueError, match="subscribe or unsubscribe"):
        build_requests("login", [Channel("BTC-USDT", "1m")])


def test_a_channels_acks_and_pushes_share_one_channel_object():
    # The collector keeps every acked channel in several sets and dicts: one object per channel, not one per ack.
    ack = b'{"event":"subscribe","arg":{"channel":"candle1m","instId":"SHARE-USDT"},"connId":"c1"}'
    push = (b'{"arg":{"channel":"candle1m","instId":"SHARE-USDT"},'
            b'"data":[["1700000000000","1","2","0.5","1.5","10","15","15","0"]]}')
    first, again = parse_message(ack)[0].channel, parse_message(ack)[0].channel
    candle = parse_message(push, text=True)[0]
    assert first == Channel("SHARE-USDT", "1m")
    assert first is again
    assert candle.inst_id is first.inst_id
    assert candle.bar is first.bar
