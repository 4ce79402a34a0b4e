"""What the OKX WebSocket client takes and what it tells its owner: its settings (`WsConfig`), the OKX codes it
acts on, the status of each connection (`ConnectionStatus`) and the callbacks (`WsHandler`).

The client (`collectors.okx.ws`), its shard connections (`collectors.okx.connection`) and their owners (the
collector runtime, benchmarks, tests) share these, so they live apart from any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.okx.candle_rows import CandleText, CandleUpdate
from collectors.okx.messages import DEFAULT_ARGS_PER_REQUEST, ErrorEvent
from collectors.okx.protocol import Channel, ProtocolError

NOTICE_SERVICE_UPGRADE = "64008"
# Error codes that say a channel itself is wrong: retrying it can only fail again.
INVALID_CHANNEL_CODES = frozenset({"60018", "64001", "64002", "60012", "60013"})
ERROR_TOO_FREQUENT = "60014"


@dataclass(frozen=True, slots=True)
class WsConfig:
    url: str
    channels_per_connection: int = 200
    connections_per_second: int = 3  # OKX's limit on new connections per IP, counted where they arrive
    # Room left under the limit by the even pace of starts: see `connection_spacing`.
    connect_jitter_margin_s: float = 0.5
    requests_per_hour: int = 480
    args_per_request: int = DEFAULT_ARGS_PER_REQUEST
    ping_after_s: float = 20.0
    pong_timeout_s: float = 8.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    # A link that stayed up this long resets the backoff; shorter lives keep growing it.
    stable_after_s: float = 30.0
    connect_timeout_s: float = 10.0  # to open TCP (and TLS): until then OKX has no upgrade request to count
    # How long an upgrade request already sent waits for its answer. A server may count it whenever it reads
    # it, even after we gave up and closed, so giving up early lets a late arrival crowd OKX's window.
    answer_timeout_s: float = 60.0
    # How long a 64008 handover waits for the replacement's acks before switching anyway.
    handover_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not 0 < self.ping_after_s < 30:
            raise ValueError("ping_after_s must be between 0 and 30: OKX closes silent connections after 30 s")
        if self.channels_per_connection < 1 or self.connections_per_second < 1 or self.requests_per_hour < 1:
            raise ValueError("channels_per_connection, connections_per_second and requests_per_hour must be ≥ 1")
        if self.connect_jitter_margin_s < 0:
            raise ValueError("connect_jitter_margin_s must not be negative")
        if not 0 < self.connect_timeout_s <= self.answer_timeout_s:
            raise ValueError("connect_timeout_s must be positive and answer_timeout_s at least as long")



def connection_spacing(config: WsConfig) -> float:
    """Seconds between two connection starts: an even pace with room under OKX's limit.

    The limit itself is kept by the gate's answered-connection window (`collectors.okx.pacing`), whatever the
    delays. The spacing keeps the pace steady below it, so that starts never come `connections_per_second`
    at once and the window only decides when answers are slow: at (1 + J) / N, any N + 1 starts span 1 + J
    seconds. With OKX's 3 per second and J = 0.5 s: one start every 0.5 s, 90 connections (27,000 channels
    at 300 each) in about 45 s.
    """
    return (1.0 + config.connect_jitter_margin_s) / config.connections_per_second



@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    shard: int
    state: str  # connecting, subscribing, open, handover, backoff, closed
    conn_id: str | None
    channels: int
    subscribed: int
    messages: int
    reconnects: int
    errors: int
    last_message_at: float | None  # wall-clock seconds
    detail: str = ""


class WsHandler:
    """What the client tells its owner. Override what you need; `on_candle` is the hot path: keep it fast."""

    # True: candles arrive as CandleText (numbers checked, kept as OKX's text, no Decimal built), for an
    # owner that stores them rather than computes with them.
    candles_as_text: bool = False

    def on_candle(self, update: CandleUpdate | CandleText, raw: str | bytes) -> None:
        pass

    def on_protocol_error(self, error: ProtocolError) -> None:
        pass

    def on_subscribed(self, channel: Channel) -> None:
        """After every (re)subscription of a channel: the moment to look for a gap behind it."""

    def on_invalid(self, channel: Channel, error: ErrorEvent) -> None:
        pass

    def on_error(self, error: ErrorEvent) -> None:
        pass

    def on_status(self, status: ConnectionStatus) -> None:
        pass
