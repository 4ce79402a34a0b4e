"""One WebSocket session of the simulator, as OKX runs it: the upgrade (paced per IP like OKX's new-connection
limit), then requests (subscribe, unsubscribe, the text ping) answered with OKX's events and error codes, and
the housekeeping that closes idle connections and those over the channel cap.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson
from websockets.server import ServerProtocol

from . import messages, rest
from .connection import Channel, WsConnection
from .http import HttpRequest, encode_response
from .market import wall_clock_ms
from .reference import INDEX, MARK, NO_SECOND_BARS, TRADE, has_mark
from .web import BUSINESS_PATH, PUBLIC_PATH

IDLE_REASON = "No data received in 30s"  # OKX's wording, whatever the configured timeout
CHANNEL_CAP_CLOSE_CODE = 4008
CHANNEL_CAP_REASON = "Too many channels subscribed on this connection"
HOUSEKEEPING_INTERVAL_S = 0.05
MAX_REQUEST_BYTES = 64 * 1024  # OKX's limit on one subscribe/unsubscribe request
MAX_REQUEST_ID_LENGTH = 32  # ids are up to 32 alphanumerics
HANDSHAKE_LOG = 10_000  # upgrade arrivals kept for `handshake_arrivals`


class WsSessions:
    """Mixed into `Simulator`: its connections, feeds and counters are the server's."""

    async def _websocket(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        if request.path not in (BUSINESS_PATH, PUBLIC_PATH):
            writer.write(encode_response(404, b"Not Found", content_type="text/plain", keep_alive=False))
            return
        now = time.monotonic()
        self._count_arrival(peer, now)
        if not self._handshakes.allow(peer, now):
            self._stats["handshakes_rejected"] += 1
            writer.write(encode_response(429, rest.TOO_MANY_REQUESTS[1], keep_alive=False))
            return
        protocol = ServerProtocol(max_size=2**20)
        protocol.receive_data(request.raw_head)
        (handshake,) = protocol.events_received()
        response = protocol.accept(handshake)
        protocol.send_response(response)
        for data in protocol.data_to_send():
            writer.write(data)
        if response.status_code != 101:
            return
        connection = WsConnection(
            protocol, writer, public=request.path == PUBLIC_PATH, requests_per_hour=self.config.requests_per_hour,
            peer=peer,
        )
        self._connections.add(connection)
        self._stats["connections_total"] += 1
        try:
            while True:
                data = await reader.read(65_536)
                if not data:
                    connection.receive_eof()
                    break
                for text in connection.receive(data):
                    self._on_message(connection, text)
                if writer.is_closing():
                    break
        finally:
            self._connections.discard(connection)

    def _count_arrival(self, peer: str, now: float) -> None:
        """Count an upgrade request: `handshakes`, and `handshakes_max_per_second`, the most that arrived from
        one IP within any 1 s (the window the limit applies: this one and those of the last second)."""
        self._stats["handshakes"] += 1
        self._arrivals.append(now)
        recent = self._arrivals_by_peer.setdefault(peer, deque())
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        recent.append(now)
        if len(recent) > self._stats["handshakes_max_per_second"]:
            self._stats["handshakes_max_per_second"] = len(recent)

    def _close_all(self, connections: list[WsConnection], code: int, reason: str) -> None:
        for connection in connections:
            connection.close(code, reason, self.config.close_timeout)

    # --- WebSocket requests -----------------------------------------------------------------------

    def _on_message(self, connection: WsConnection, text: str) -> None:
        if text == "ping":
            self._stats["pings"] += 1
            if not self._ignore_pings:
                connection.write(messages.PONG_FRAME)
                self._stats["pongs"] += 1
            return
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            body = None
        request_id = body.get("id") if isinstance(body, dict) else None
        op = body.get("op") if isinstance(body, dict) else None
        args = body.get("args") if isinstance(body, dict) else None
        if (
            len(text) > MAX_REQUEST_BYTES
            or (request_id is not None and not _valid_request_id(request_id))
            or op not in ("subscribe", "unsubscribe")
            or not isinstance(args, list) or not args
            or not all(isinstance(arg, dict) and isinstance(arg.get("channel"), str) for arg in args)
        ):
            self._error(connection, request_id, "60012", messages.invalid_request_msg(text))
            return
        self._stats["requests"] += 1
        if not connection.requests.allow(None, time.monotonic()):
            self._error(connection, request_id, "60014", messages.TOO_FREQUENT_MSG)
            return
        frames = []
        for arg in args:
            channel_name, inst_id = arg.get("channel"), arg.get("instId")
            channel = self._known_channel(connection, channel_name, inst_id)
            if channel is None:
                self._stats["errors_sent"] += 1
                frames.append(messages.error_frame(
                    request_id, "60018", messages.channel_missing_msg(channel_name, inst_id), connection.conn_id
                ))
                continue
            if op == "subscribe":
                connection.subscriptions.setdefault(channel, None)
            else:
                connection.subscriptions.pop(channel, None)
            frames.append(messages.ack_frame(
                request_id, op, {"channel": channel_name, "instId": inst_id}, connection.conn_id
            ))
        connection.write_many(frames)
        cap = self.config.max_channels_per_connection
        if cap and len(connection.subscriptions) > cap:
            self._stats["channel_cap_closes"] += 1
            connection.close(CHANNEL_CAP_CLOSE_CODE, CHANNEL_CAP_REASON, self.config.close_timeout)

    def _known_channel(self, connection: WsConnection, channel_name: str, inst_id: Any) -> Channel | None:
        """The channel a subscribe arg names, or None when OKX would answer 60018: candles live on /business;
        candle{bar} takes a listed instrument, mark-price-candle{bar} a listed swap or future, index-candle{bar}
        an index (not an instrument id); mark and index candles have no 1s bar."""
        if connection.public or not isinstance(inst_id, str):
            return None
        market = self.market
        parsed = _parse_channel_name(channel_name)
        if parsed is None:
            return None
        price, bar_name = parsed
        if bar_name not in market.bars or (price != TRADE and bar_name in NO_SECOND_BARS):
            return None
        if price == INDEX:
            return Channel(inst_id, bar_name, INDEX) if inst_id in market.indices else None
        if not market.is_listed(inst_id, wall_clock_ms()):
            return None
        if price == MARK and not has_mark(market.instruments[inst_id]):
            return None
        return Channel(inst_id, bar_name, price)

    def _error(self, connection: WsConnection, request_id: Any, code: str, msg: str) -> None:
        self._stats["errors_sent"] += 1
        connection.write(messages.error_frame(request_id, code, msg, connection.conn_id))

    # --- housekeeping -----------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            now = time.monotonic()
            for connection in list(self._connections):
                if connection.close_deadline is not None:
                    if now > connection.close_deadline:
                        connection.abort()
                elif now - connection.last_activity > self.config.idle_timeout:
                    self._stats["idle_closes"] += 1
                    connection.close(4004, IDLE_REASON, self.config.close_timeout)


# Longest prefix first: "mark-price-candle1m" must not read as the trade channel of bar "1m".

_PRICES_BY_PREFIX = (
    (messages.MARK_CANDLE_PREFIX, MARK), (messages.INDEX_CANDLE_PREFIX, INDEX), (messages.CANDLE_PREFIX, TRADE),
)


def _parse_channel_name(name: str) -> tuple[str, str] | None:
    """(price, bar) of a candle channel's name, None for other channels."""
    for prefix, price in _PRICES_BY_PREFIX:
        if name.startswith(prefix):
            return price, name[len(prefix):]
    return None


def _valid_request_id(request_id: Any) -> bool:
    return isinstance(request_id, str) and 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH and request_id.isalnum()

