"""Pacing of new connections: OKX allows 3 per second per IP, counted where they arrive.

The unit tests drive the client's gate on an injected clock; the last test runs the real client against the
simulator over real sockets, with random arrival delays added to every connection, and asks the simulator
how many upgrade requests it saw in its busiest second.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
import websockets

from collectors.okx.messages import Channel
from collectors.okx.ws import OkxWsClient, WsConfig, WsHandler, connection_spacing
from collectors.simulator import Simulator, SimulatorConfig


def busiest_second(times: list[float]) -> int:
    """The most events within any 1 s: this one and those in the second before it, as the server counts."""
    times = sorted(times)
    most, first = 0, 0
    for last, now in enumerate(times):
        while times[first] <= now - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_the_spacing_leaves_half_a_second_of_jitter_under_okx_limit():
    assert connection_spacing(WsConfig(url="ws://x/")) == pytest.approx(0.5)
    assert connection_spacing(WsConfig(url="ws://x/", connect_jitter_margin_s=0.2)) == pytest.approx(0.4)
    assert connection_spacing(WsConfig(url="ws://x/", connections_per_second=1000)) == pytest.approx(0.0015)
    with pytest.raises(ValueError, match="margin"):
        WsConfig(url="ws://x/", connect_jitter_margin_s=-0.1)


def open_at_once(count: int, refuse: set[int] = frozenset()) -> tuple[list[float], list[object]]:
    """`count` shards asking for a connection at once, on an injected clock: when each connection started, and
    what each `_open` gave (the n-th start, counting from 1, in `refuse` is refused with HTTP 429)."""
    async def main() -> tuple[list[float], list[object]]:
        now = [1000.0]
        starts: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            # Only the gate sleeps here, and it sleeps under its lock: one sleeper at a time. The connection
            # that passed the gate just before starts in a task of its own: let it run before time moves on.
            for _ in range(3):
                await asyncio.sleep(0)
            now[0] += seconds

        async def fake_connect(url: str, **options) -> object:
            starts.append(now[0])
            if len(starts) in refuse:
                raise websockets.exceptions.InvalidStatus(websockets.http11.Response(
                    429, "Too Many Requests", websockets.datastructures.Headers()))
            return object()

        client = OkxWsClient(WsConfig(url="ws://x/"), WsHandler(), connect=fake_connect, clock=lambda: now[0],
                             sleep=fake_sleep)
        results = await asyncio.gather(*(client._open() for _ in range(count)), return_exceptions=True)
        return starts, results

    return asyncio.run(main())


def test_a_storm_of_connections_is_paced_on_the_injected_clock_and_survives_any_jitter_within_the_margin():
    # 40 shards asking at once, as after every connection dropped together.
    starts, _ = open_at_once(40)

    assert len(starts) == 40
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) == pytest.approx(0.5)
    # Arrivals delayed by anything from 0 to 0.49 s, the worst way round: still 3 at most in any second.
    rng = random.Random(5)
    for _ in range(200):
        assert busiest_second([t + rng.uniform(0, 0.49) for t in starts]) <= 3
    worst = [t + (0.49 if index % 4 == 0 else 0.0) for index, t in enumerate(starts)]
    assert busiest_second(worst) <= 3


def test_a_refused_upgrade_holds_every_next_connection_for_a_second():
    starts, results = open_at_once(4, refuse={2})  # OKX counted the second one over its limit

    assert sum(isinstance(r, websockets.exceptions.InvalidStatus) for r in results) == 1
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([0.5, 1.0, 0.5])


def test_the_old_gate_of_exactly_three_per_second_was_pushed_over_by_jitter():
    # What the client did before: 3 starts at once each second. Late arrivals of one second meet early ones
    # of the next.
    starts = [second + 0.0 for second in range(10) for _ in range(3)]
    delayed = [t + (0.3 if index % 3 == 0 else 0.0) for index, t in enumerate(starts)]
    assert busiest_second(delayed) > 3


def test_connections_and_a_full_reconnect_storm_reach_the_simulator_within_its_limit_despite_jitter():
    """12 connections, every one dropped at once, 12 reconnects: no 429, never more than 3 in a second."""

    async def main() -> None:
        sim = Simulator(SimulatorConfig(seed=3, instruments=12, bars=("1s", "1m"), push_interval=0.5,
                                        new_connections_per_second=3))
        rng = random.Random(11)

        async def jittery_connect(*args, **kwargs):
            # Random extra delay before each arrival: the lag a busy event loop or a network adds. 0.3 s of the
            # 0.5 s margin, the rest left for this machine's own scheduling.
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            return await websockets.connect(*args, **kwargs)

        async with sim.serve(host="127.0.0.1", port=0) as server:
            instruments = [inst for inst in sim.market.instruments if inst and not inst.startswith("REBASE")][:12]
            channels = [Channel(inst, bar) for inst in instruments for bar in ("1s", "1m")]
            assert len(channels) == 24
            client = OkxWsClient(
                WsConfig(url=server.ws_url, channels_per_connection=2, backoff_base_s=0.05, backoff_cap_s=0.5,
                         ping_after_s=5.0),
                WsHandler(), connect=jittery_connect,
            )
            client.set_channels(channels)
            runner = asyncio.get_running_loop().create_task(client.run())
            try:
                await wait_for(lambda: len(client.statuses()) == 12
                               and all(s.state == "open" for s in client.statuses()), timeout=12)
                assert sim.stats()["connections"] == 12
                assert sim.drop_connections() == 12
                await wait_for(lambda: all(s.reconnects >= 1 and s.state == "open" for s in client.statuses()),
                               timeout=12)
                stats = sim.stats()
            finally:
                await client.stop()
                await runner
        assert stats["handshakes"] == 24
        assert stats["handshakes_rejected"] == 0
        assert stats["handshakes_max_per_second"] <= 3
        assert stats["connections"] == 12
        assert busiest_second(sim.handshake_arrivals()) == stats["handshakes_max_per_second"]

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 30


async def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
