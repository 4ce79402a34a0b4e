"""The simulator's faults and its control: what a test or POST /sim/control does to it (drop every connection,
send 64008, ignore pings, send malformed frames, answer REST with 429 or late, omit confirms, list and delist
instruments, stall the loop) and the counters it reads back. Every method is safe from any thread.
"""

from __future__ import annotations

import time
from typing import Any

from . import messages, rest

NOTICE_CLOSE_CODE = 1012  # service restart
NOTICE_CLOSE_REASON = "Service upgrade"


class FaultControls:
    """Mixed into `Simulator`: its state (connections, market, counters, the loop) is the server's."""

    def drop_connections(self) -> int:
        """Abort every WebSocket transport without a close frame; returns how many were dropped."""
        def act() -> int:
            dropped = list(self._connections)
            for connection in dropped:
                connection.abort()
            self._stats["drops"] += len(dropped)
            return len(dropped)
        return self._on_loop(act)

    def send_notice(self, close_after: float = 1.0) -> int:
        """Send the 64008 upgrade notice to every connection and close them `close_after` seconds later."""
        def act() -> int:
            targets = [c for c in self._connections if c.accepts_pushes]
            for connection in targets:
                connection.write(messages.notice_frame(connection.conn_id))
            self._stats["notices_sent"] += len(targets)
            if targets and self._loop is not None:
                self._loop.call_later(close_after, self._close_all, targets, NOTICE_CLOSE_CODE, NOTICE_CLOSE_REASON)
            return len(targets)
        return self._on_loop(act)

    def ignore_pings(self, enabled: bool = True) -> None:
        """Stop (or resume) answering the text frame `ping`."""
        self._ignore_pings = bool(enabled)

    def send_malformed(self, count: int = 1) -> None:
        """Send `count` malformed frames on every connection, between the pushes of the next tick."""
        def act() -> None:
            for connection in self._connections:
                connection.malformed_pending += int(count)
        self._on_loop(act)

    def rest_429(self, count: int = 1) -> None:
        """The next `count` REST requests answer HTTP 429 (code 50011)."""
        self._rest_429_left = int(count)

    def rest_delay(self, seconds: float, count: int = 1) -> None:
        """The next `count` REST requests are answered `seconds` late."""
        self._rest_delay = (float(seconds), int(count))

    def set_confirm_omit_rate(self, rate: float) -> None:
        self._confirm_omit_rate = float(rate)

    def list_instrument(
        self, inst_id: str, list_time_ms: int | None = None, exp_time_ms: int | None = None, state: str = "live",
    ) -> dict[str, Any]:
        """List an instrument now (kind from its instId, see instruments.make_instrument); returns its REST row."""
        def act() -> dict[str, Any]:
            inst = self.market.list_instrument(inst_id, list_time_ms=list_time_ms, exp_time_ms=exp_time_ms,
                                               state=state)
            self._stats["instruments_listed"] += 1
            return rest.instrument_row(inst)
        return self._on_loop(act)

    def delist_instrument(self, inst_id: str) -> bool:
        """Stop listing and pushing an instrument at once, as an expiry does; False if unknown or gone already."""
        def act() -> bool:
            done = self.market.delist_instrument(inst_id)
            self._stats["instruments_delisted"] += int(done)
            return done
        return self._on_loop(act)

    def stats(self) -> dict[str, int]:
        def act() -> dict[str, int]:
            counters = dict.fromkeys(
                ("connections_total", "pushes_sent", "confirms_sent", "confirms_omitted", "rest_requests",
                 "rest_429s", "pings", "pongs", "malformed_sent", "notices_sent", "drops", "idle_closes",
                 "channel_cap_closes", "buffer_full_closes", "handshakes_rejected", "requests",
                 "errors_sent", "ticks", "ticks_skipped", "late_confirms", "tick_busy_ms", "tick_cpu_ms",
                 "tick_busy_ms_max", "handshakes", "handshakes_max_per_second"),
                0,
            )
            counters.update(self._stats)
            counters["connections"] = len(self._connections)
            counters["subscriptions"] = sum(len(c.subscriptions) for c in self._connections)
            return counters
        return self._on_loop(act)

    def stall(self, seconds: float) -> None:
        """Block the server's event loop for `seconds` from now, as a saturated machine does: upgrade requests
        that arrive meanwhile wait in the socket and are read (and counted) together when it ends."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("the simulator is not serving")
        self._stats["stalls"] += 1
        loop.call_soon_threadsafe(time.sleep, float(seconds))

    def handshake_arrivals(self) -> list[float]:
        """Seconds (monotonic clock) at which the last WebSocket upgrade requests arrived, oldest first."""
        return self._on_loop(lambda: list(self._arrivals))

    CONTROL_ACTIONS = (
        "drop_connections", "send_notice", "ignore_pings", "send_malformed", "rest_429", "rest_delay",
        "set_confirm_omit_rate", "stats", "list_instrument", "delist_instrument", "handshake_arrivals", "stall",
    )
    # OKX's names in control bodies ({"action": "list_instrument", "instId": ...}) -> the methods' parameters.
    CONTROL_PARAMS = {"instId": "inst_id", "listTime": "list_time_ms", "expTime": "exp_time_ms"}

    def control(self, action: str, **params: Any) -> Any:
        """Run a control method by name (what POST /sim/control does)."""
        if action not in self.CONTROL_ACTIONS:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(self.CONTROL_ACTIONS)}")
        params = {self.CONTROL_PARAMS.get(name, name): value for name, value in params.items()}
        return getattr(self, action)(**params)
