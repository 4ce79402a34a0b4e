"""OKX WebSocket messages the simulator sends, as ready-to-write WebSocket frames (server frames: unmasked).

Key order follows samples/ws_frames.jsonl. Pushes are encoded once per version and shared by every
connection subscribed to the channel, which is what keeps the server fast.
"""

from __future__ import annotations

from typing import Any

import orjson

CANDLE_PREFIX = "candle"
MARK_CANDLE_PREFIX = "mark-price-candle"
INDEX_CANDLE_PREFIX = "index-candle"
NOTICE_MSG = "The connection will soon be closed for a service upgrade. Please reconnect."
TOO_FREQUENT_MSG = "Requests too frequent."


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed text frame carrying `payload` (UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65_536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


PONG_FRAME = text_frame(b"pong")


def push_frame(channel: str, inst_id: str, row: list[str]) -> bytes:
    return text_frame(orjson.dumps({"arg": {"channel": channel, "instId": inst_id}, "data": [row]}))


def push_prefix(channel: str, inst_id: str) -> bytes:
    """The start of every push of one channel, up to its row: `push_frame_of` completes it."""
    return orjson.dumps({"arg": {"channel": channel, "instId": inst_id}, "data": [[]]})[:-3]


def push_frame_of(prefix: bytes, row: list[str]) -> bytes:
    """`push_frame` of a row of the market's own numbers (digits, "." and "-": nothing JSON escapes), at
    half the cost: pushes are most of the simulator's work."""
    return text_frame(b"".join((prefix, b'"', '","'.join(row).encode(), b'"]]}')))


def _with_id(request_id: Any, body: dict[str, Any]) -> bytes:
    if request_id is not None:
        body = {"id": request_id, **body}
    return text_frame(orjson.dumps(body))


def ack_frame(request_id: Any, op: str, arg: dict[str, Any], conn_id: str) -> bytes:
    return _with_id(request_id, {"event": op, "arg": arg, "connId": conn_id})


def error_frame(request_id: Any, code: str, msg: str, conn_id: str) -> bytes:
    return _with_id(request_id, {"event": "error", "code": code, "msg": msg, "connId": conn_id})


def channel_missing_msg(channel: Any, inst_id: Any) -> str:
    return (
        f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. "
        "Please use the correct URL, channel and parameters referring to API document."
    )


def invalid_request_msg(text: str) -> str:
    return f"Invalid request: {text}"


def notice_frame(conn_id: str) -> bytes:
    return text_frame(orjson.dumps({"event": "notice", "code": "64008", "msg": NOTICE_MSG, "connId": conn_id}))


def malformed_frames(inst_id: str, channel: str, open_ms: int) -> list[bytes]:
    """Frames a client must reject without breaking: one of each kind, in a fixed order.

    The first five fail any parser (not JSON, an array, a short row, a non-numeric price, a non-candle
    channel); the sixth parses but names a channel that nobody subscribed and OKX does not have.
    """
    ts = str(open_ms)
    return [
        text_frame(b'{"arg": {"channel": "' + channel.encode() + b'", "instId": '),  # not JSON (cut short)
        text_frame(b'[["' + ts.encode() + b'", "1", "2", "1", "2", "3", "4", "5", "0"]]'),  # a JSON array
        text_frame(orjson.dumps({"arg": {"channel": channel, "instId": inst_id}, "data": [[ts, "1", "2"]]})),
        text_frame(orjson.dumps(
            {"arg": {"channel": channel, "instId": inst_id}, "data": [[ts, "abc", "2", "1", "2", "3", "4", "5", "0"]]}
        )),
        text_frame(orjson.dumps(  # not a candle channel at all
            {"arg": {"channel": "tickers", "instId": inst_id}, "data": [{"instId": inst_id, "last": "1"}]}
        )),
        text_frame(orjson.dumps(  # a channel nobody subscribed (and that OKX does not have)
            {"arg": {"channel": "candle7m", "instId": inst_id}, "data": [[ts, "1", "2", "1", "2", "3", "4", "5", "0"]]}
        )),
    ]
