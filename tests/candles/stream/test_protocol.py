"""What a client may send to the stream, and what each mistake is called."""

from __future__ import annotations

import orjson
import pytest

from candles.stream.protocol import (
    INVALID_REQUEST,
    INVALID_SINCE,
    INVALID_TIMEFRAMES,
    SYMBOL_NOT_FOUND,
    TOO_MANY_SUBSCRIPTIONS,
    ProtocolError,
    StreamArg,
    parse_request,
    parse_since,
)


def test_a_subscribe_with_since_in_iso_or_epoch_ms():
    request = parse_request(orjson.dumps({"op": "subscribe", "args": [
        {"symbol": "BTC-USDT", "timeframe": "1m", "since": "2026-12-01T00:00:00Z"},
        {"symbol": "ETH-USDT-SWAP", "timeframe": "7m", "since": 1_796_083_200_000},
        {"symbol": "SOL-USDT", "timeframe": "1H"},
    ]}).decode())
    assert request.op == "subscribe"
    assert request.args == [StreamArg("BTC-USDT", "1m", 1_796_083_200_000),
                            StreamArg("ETH-USDT-SWAP", "7m", 1_796_083_200_000), StreamArg("SOL-USDT", "1H")]


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-01T08:00:00+08:00", 1_796_083_200_000),
    ("2026-12-01T00:00:00", 1_796_083_200_000),  # naive means UTC
    ("1796083200000", 1_796_083_200_000),
    ("2026-12-01T00:00:00.250Z", 1_796_083_200_250),
])
def test_since_forms(text, expected):
    assert parse_since(text) == expected


@pytest.mark.parametrize(("body", "code"), [
    ("{", INVALID_REQUEST),
    ("[]", INVALID_REQUEST),
    ('{"op": "publish", "args": [{"symbol": "BTC-USDT", "timeframe": "1m"}]}', INVALID_REQUEST),
    ('{"op": "subscribe", "args": []}', INVALID_REQUEST),
    ('{"op": "subscribe", "args": ["BTC-USDT"]}', INVALID_REQUEST),
    ('{"op": "subscribe", "args": [{"symbol": "BTC USDT", "timeframe": "1m"}]}', SYMBOL_NOT_FOUND),
    ('{"op": "subscribe", "args": [{"symbol": 7, "timeframe": "1m"}]}', INVALID_REQUEST),
    ('{"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "one minute"}]}', INVALID_TIMEFRAMES),
    ('{"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "since": "soon"}]}', INVALID_SINCE),
    ('{"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "since": true}]}', INVALID_SINCE),
    ('{"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "since": "99999-01-01"}]}',
     INVALID_SINCE),
    ('{"op": "unsubscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "since": 1}]}', INVALID_REQUEST),
    ('{"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "channel": "x"}]}', INVALID_REQUEST),
])
def test_each_mistake_has_its_code(body, code):
    with pytest.raises(ProtocolError) as caught:
        parse_request(body)
    assert caught.value.code == code
    assert str(caught.value)


def test_the_arg_at_fault_is_named():
    with pytest.raises(ProtocolError) as caught:
        parse_request('{"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "since": "x"}]}')
    assert caught.value.arg == {"symbol": "BTC-USDT", "timeframe": "1m"}


def test_too_many_args_in_one_message():
    args = [{"symbol": f"S{k}-USDT", "timeframe": "1m"} for k in range(101)]
    with pytest.raises(ProtocolError) as caught:
        parse_request(orjson.dumps({"op": "subscribe", "args": args}).decode())
    assert caught.value.code == TOO_MANY_SUBSCRIPTIONS


def test_a_price_kind_per_arg_trade_by_default():
    request = parse_request('{"op": "subscribe", "args": [{"symbol": "BTC-USDT-SWAP", "timeframe": "1m", '
                            '"price": "mark"}, {"symbol": "BTC-USDT-SWAP", "timeframe": "1m"}]}')
    assert [(a.price, a.echo()) for a in request.args] == [
        ("mark", {"symbol": "BTC-USDT-SWAP", "timeframe": "1m", "price": "mark"}),
        ("trade", {"symbol": "BTC-USDT-SWAP", "timeframe": "1m"})]
    with pytest.raises(ProtocolError) as caught:
        parse_request('{"op": "subscribe", "args": [{"symbol": "BTC-USD", "timeframe": "1m", "price": "last"}]}')
    assert caught.value.code == "INVALID_PRICE"
