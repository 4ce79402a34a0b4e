"""An asyncio client for OKX's business WebSocket that keeps a set of candle channels subscribed.

Channels are spread over shards of at most `channels_per_connection`; each shard owns one live
connection (a *link*) at a time. Around it:

* every new connection (first ones, reconnects, 64008 replacements) passes one gate of the client
  (`collectors.okx.pacing`): starts an even `connection_spacing` apart, and none while OKX's
  `connections_per_second` are in flight or were answered within the last 1.25 s, so that OKX never counts
  more than its limit in a second however late they reach it; each link keeps within `requests_per_hour`
  subscribe/unsubscribe requests;
* a watchdog sends OKX's text `ping` after `ping_after_s` of silence and drops the link if nothing answers
  within `pong_timeout_s` (reading stays a bare `async for`, so the hot path pays no per-frame timer);
* any drop reconnects with capped exponential backoff and jitter and subscribes everything again;
* notice 64008 opens the replacement link and subscribes it *before* the old one is closed, so no push
  is missed (duplicates during the overlap are harmless: the newest version of a candle wins downstream);
* error 60018 (channel or instrument does not exist) marks the channel invalid: it is reported once, with
  the `Channel` (its price kind included: OKX answers an instrument id on `index-candle*`, or a spot pair on
  `mark-price-candle*`, with 60018), and not subscribed again until `clear_invalid` is called;
* every state change and the counters go to the handler's `on_status`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import websockets
from websockets.exceptions import InvalidStatus

from collectors.okx.connection import ShardConnection
from collectors.okx.fast_lane import FastLaneConnection
from collectors.okx.messages import ErrorEvent
from collectors.okx.pacing import WINDOW_MARGIN_S, ConnectionGate
from collectors.okx.protocol import Channel, check_subscribable
from collectors.okx.ws_contract import ConnectionStatus, WsConfig, WsHandler, connection_spacing

logger = logging.getLogger(__name__)

Connect = Callable[..., Awaitable[Any]]

# How long no new connection starts after OKX refused one with HTTP 429 (its window is one second). The gate
# keeps this client's own starts under the limit; a refusal means someone else on the IP connects too.
REFUSED_HOLD_S = 1.0


class OkxWsClient:
    """Keeps `channels` subscribed on OKX's business WebSocket and feeds every event to `handler`."""

    def __init__(
        self,
        config: WsConfig,
        handler: WsHandler,
        *,
        connect: Connect = websockets.connect,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ):
        self.config = config
        self.handler = handler
        self._connect_fn = connect
        self.clock, self.wall_clock, self.sleep, self.rng = clock, wall_clock, sleep, rng
        # One gate for every connection of the client: first connections, reconnects after a drop (a storm
        # of them when everything dropped at once) and 64008 replacements all queue here, in order.
        self._gate = ConnectionGate(limit=config.connections_per_second, window_s=1.0 + WINDOW_MARGIN_S,
                                    spacing_s=connection_spacing(config), clock=clock, sleep=sleep)
        self._shards: list[ShardConnection] = []
        self._shard_ids = 0
        self.invalid: dict[Channel, ErrorEvent] = {}
        self._running = False
        self._stopped = asyncio.Event()
        self._closing: set[asyncio.Task] = set()

    # --- the channel set -----------------------------------------------------------------------

    @property
    def channels(self) -> set[Channel]:
        return {c for shard in self._shards for c in shard.assigned}

    def share_connection_limit(self, parts: int) -> None:
        """`parts` clients share this IP (OKX's new-connection limit is per IP): each starts at most its share,
        `connections_per_second // parts` a second (at least one), evenly spaced. Applies from the next start."""
        limit = max(1, self.config.connections_per_second // max(1, parts))
        self._gate.limit = limit
        self._gate.spacing_s = (1.0 + self.config.connect_jitter_margin_s) / limit

    def set_channels(self, channels: Iterable[Channel]) -> None:
        """Make `channels` the subscribed set (minus invalid ones), without reconnecting anything.

        Raises ValueError, changing nothing, if one of them is a channel OKX does not have (1s mark-price or
        index candles: `messages.check_subscribable`)."""
        wanted = {c for c in channels if c not in self.invalid}
        for channel in wanted:
            check_subscribable(channel)
        current = self.channels
        self.remove(current - wanted)
        self.add(wanted - current)

    def add(self, channels: Iterable[Channel]) -> None:
        """Subscribe `channels` too. Raises ValueError, adding none, if one of them is a channel OKX does not
        have (`messages.check_subscribable`)."""
        current = self.channels  # once: the property builds a set of every channel (27,000 at full breadth)
        pending = sorted(c for c in set(channels) if c not in self.invalid and c not in current)
        for channel in pending:
            check_subscribable(channel)
        cap = self.config.channels_per_connection
        for shard in self._shards:
            room = cap - len(shard.assigned)
            if room > 0 and pending:
                shard.add(pending[:room])
                pending = pending[room:]
        while pending:
            shard = self._new_shard()
            shard.add(pending[:cap])
            pending = pending[cap:]

    def remove(self, channels: Iterable[Channel]) -> None:
        gone = set(channels)
        for shard in list(self._shards):
            mine = shard.assigned & gone
            if mine:
                shard.remove(mine)
            if not shard.assigned:
                self._shards.remove(shard)
                shard.close()
                # Its connection must go too, or its reader would keep delivering pushes.
                closing = asyncio.get_running_loop().create_task(shard.wait_closed())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    def clear_invalid(self, channel: Channel) -> None:
        """Allow a channel marked invalid to be subscribed again (e.g. after the operator fixed it)."""
        self.invalid.pop(channel, None)

    def statuses(self) -> list[ConnectionStatus]:
        return [shard.status() for shard in self._shards]

    # --- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()`; shards start as channels are added."""
        self._running = True
        for shard in self._shards:
            shard.start()
        await self._stopped.wait()

    async def stop(self) -> None:
        self._running = False
        shards, self._shards = self._shards, []
        for shard in shards:
            shard.close()
        await asyncio.gather(*(shard.wait_closed() for shard in shards), return_exceptions=True)
        self._stopped.set()

    def _new_shard(self) -> ShardConnection:
        shard = ShardConnection(self, self._shard_ids)
        self._shard_ids += 1
        self._shards.append(shard)
        if self._running:
            shard.start()
        return shard

    async def _open(self) -> Any:
        cfg = self.config
        attempt = await self._gate.start()
        made: list[FastLaneConnection] = []

        def create_connection(*args: Any, **kwargs: Any) -> FastLaneConnection:
            made.append(FastLaneConnection(*args, **kwargs))
            return made[-1]

        async def connect() -> Any:  # websockets.connect is awaitable, not a coroutine a task can take
            return await self._connect_fn(cfg.url, ping_interval=None, compression=None, max_queue=None,
                                          open_timeout=None, create_connection=create_connection)

        opening = asyncio.get_running_loop().create_task(connect())
        try:
            await asyncio.wait({opening}, timeout=cfg.connect_timeout_s)
            request_out = bool(made) and made[-1].request_may_be_out
            if not opening.done() and request_out:
                # The gate can only count this attempt as over once OKX answered: wait for the answer rather
                # than retry while this request may still be read.
                await asyncio.wait({opening}, timeout=cfg.answer_timeout_s - cfg.connect_timeout_s)
            if not opening.done():
                raise TimeoutError("no WebSocket upgrade: " + (
                    f"no answer to the request in {cfg.answer_timeout_s:g} s" if request_out
                    else f"no connection (TCP, TLS) in {cfg.connect_timeout_s:g} s"))
            return opening.result()
        except InvalidStatus as exc:
            if exc.response.status_code == 429:
                # Starts this gate did not see (another client or process on this IP) took OKX's window: a
                # pause for every connection of this client, so one refusal does not become a run of them.
                self._gate.hold(REFUSED_HOLD_S)
            raise
        finally:
            if not opening.done():  # given up, or this shard is closing
                opening.cancel()
                await asyncio.gather(opening, return_exceptions=True)
            self._gate.answered(attempt)  # a success, a refusal, a failure or a cancellation: it is over

    def _mark_invalid(self, channel: Channel, error: ErrorEvent) -> None:
        if channel in self.invalid:
            return
        self.invalid[channel] = error
        logger.warning("OKX refused %s (%s %s); not subscribing it again", channel, error.code, error.msg)
        for shard in self._shards:
            shard.assigned.discard(channel)
        self.handler.on_invalid(channel, error)

