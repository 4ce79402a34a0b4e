"""Pacing of new connections: OKX allows 3 per second per IP, counted where they arrive.

The unit tests drive the client's gate on an injected clock; the last test runs the real client against the
simulator over real sockets while the simulator's loop is blocked (upgrade requests held, then read together),
and asks the simulator how many upgrade requests it saw in its busiest second.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
import websockets

from collectors.okx.pacing import Attempt, ConnectionGate, next_start
from collectors.okx.protocol import Channel
from collectors.okx.ws import OkxWsClient
from collectors.okx.ws_contract import WsConfig, WsHandler, connection_spacing
from collectors.simulator import SimulatorConfig, run_in_thread
from collectors.simulator.arrivals import busiest_second


def test_starts_are_spaced_to_leave_half_a_second_of_room_under_okx_limit():
    assert connection_spacing(WsConfig(url="ws://x/")) == pytest.approx(0.5)
    assert connection_spacing(WsConfig(url="ws://x/", connect_jitter_margin_s=0.2)) == pytest.approx(0.4)
    assert connection_spacing(WsConfig(url="ws://x/", connections_per_second=1000)) == pytest.approx(0.0015)
    with pytest.raises(ValueError, match="margin"):
        WsConfig(url="ws://x/", connect_jitter_margin_s=-0.1)
    with pytest.raises(ValueError, match="answer_timeout_s"):
        WsConfig(url="ws://x/", connect_timeout_s=10.0, answer_timeout_s=5.0)


def open_at_once(count: int, refuse: set[int] = frozenset(), share: int = 1) -> tuple[list[float], list[object]]:
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
        client.share_connection_limit(share)
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


@pytest.mark.parametrize(("share", "busiest_second"), [(1, 2), (2, 1), (3, 1)])
def test_clients_sharing_an_ip_split_okx_limit_so_together_they_stay_within_it(share, busiest_second):
    # Alone a client starts 2 in its busiest second (0.5 s apart): two such clients on one IP would start 4,
    # over OKX's 3. Sharing, each starts its part: together at most 3.
    starts, _ = open_at_once(12, share=share)

    busiest = max(sum(1 for t in starts if first <= t < first + 1.0) for first in starts)
    assert busiest == busiest_second
    assert busiest * share <= 3


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


def held_by_the_server(limit: int, count: int, answer_at: float) -> list[float]:
    """`count` connections through a gate of `limit` (spacing 0.5 s, window 1.25 s) on an injected clock, to a
    server that holds every upgrade request until `answer_at`, then reads and answers them together (each
    later one at once): when each connection started."""

    async def main() -> list[float]:
        now = [0.0]

        async def fake_sleep(seconds: float) -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            now[0] += seconds

        gate = ConnectionGate(limit=limit, window_s=1.25, spacing_s=0.5, clock=lambda: now[0], sleep=fake_sleep)
        server_reads = asyncio.Event()
        starts: list[float] = []

        async def connect() -> None:
            attempt = await gate.start()
            starts.append(now[0])
            await server_reads.wait()
            gate.answered(attempt)

        tasks = [asyncio.get_running_loop().create_task(connect()) for _ in range(count)]
        for _ in range(1000):  # until every start is made or the gate waits for an answer (the clock stands)
            await asyncio.sleep(0)
            if len(starts) == count or gate.in_flight == limit:
                break
        assert now[0] <= answer_at
        now[0] = answer_at
        server_reads.set()
        await asyncio.gather(*tasks)
        return starts

    return asyncio.run(main())


def test_a_server_holding_requests_gets_no_fourth_start_before_it_answered_one():
    starts = held_by_the_server(limit=3, count=5, answer_at=3.0)

    assert starts == pytest.approx([0.0, 0.5, 1.0, 4.25, 4.75])
    # Every request arrives between its start and its answer: at worst the first three at 3.0 together, the
    # fourth at its start. Never 4 within a second.
    assert busiest_second([3.0, 3.0, 3.0, *starts[3:]]) == 3


def test_even_spacing_alone_lets_a_server_holding_requests_read_five_at_once():
    # What the client did before the window: starts 0.5 s apart whatever became of the earlier ones.
    starts = held_by_the_server(limit=10**9, count=5, answer_at=3.0)

    assert starts == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert busiest_second([3.0] * 5) == 5


def test_the_next_start_waits_for_the_answer_that_frees_the_window():
    def attempts(*answered: float | None) -> list[Attempt]:
        return [Attempt(started_at=0.0, answered_at=at) for at in answered]

    assert next_start(5.0, limit=3, window_s=1.25, not_before=5.5, attempts=attempts(4.0, None)) == 5.5
    # Full: the oldest answer leaves the window first.
    assert next_start(5.0, limit=3, window_s=1.25, not_before=0.0, attempts=attempts(4.5, 4.0, None)) == 5.25
    assert next_start(5.0, limit=3, window_s=1.25, not_before=6.0, attempts=attempts(4.5, 4.0, None)) == 6.0
    # Three still in flight: only an answer can free a place.
    assert next_start(5.0, limit=3, window_s=1.25, not_before=0.0, attempts=attempts(None, 4.9, None, None)) is None


def test_connections_and_a_reconnect_storm_stay_within_the_limit_while_the_simulator_holds_upgrades():
    """4 connections, then every one dropped and reopened, each time while the simulator's loop is blocked for
    2.5 s (a saturated machine): the requests it held are read together, and still no second has more than 3.
    The stall outlasts `connect_timeout_s`: a request already sent waits for its answer instead of being
    given up and sent again (the server would read both: 17 upgrade requests instead of 8)."""

    with run_in_thread(SimulatorConfig(seed=3, instruments=4, bars=("1m",), push_interval=0.5,
                                       new_connections_per_second=3)) as handle:
        sim = handle.simulator

        async def main() -> None:
            instruments = [inst for inst in sim.market.instruments if inst and not inst.startswith("REBASE")][:4]
            client = OkxWsClient(
                WsConfig(url=handle.ws_url, channels_per_connection=1, backoff_base_s=0.05, backoff_cap_s=0.5,
                         ping_after_s=5.0, connect_timeout_s=0.5),
                WsHandler(),
            )
            client.set_channels(Channel(inst, "1m") for inst in instruments)
            sim.stall(2.5)
            runner = asyncio.get_running_loop().create_task(client.run())
            try:
                await wait_for(lambda: len(client.statuses()) == 4
                               and all(s.state == "open" for s in client.statuses()), timeout=10)
                assert sim.drop_connections() == 4
                sim.stall(2.5)
                await wait_for(lambda: all(s.reconnects >= 1 and s.state == "open" for s in client.statuses()),
                               timeout=10)
            finally:
                await client.stop()
                await runner

        started = time.monotonic()
        asyncio.run(main())
        took = time.monotonic() - started
        stats, arrivals = sim.stats(), sim.handshake_arrivals()
    assert stats["stalls"] == 2
    assert stats["handshakes"] == 8  # no refusal, so no retry
    assert stats["handshakes_rejected"] == 0
    # The stalls did bunch arrivals: three requests held and read together each time (evenly spaced starts
    # would never put 3 in a second), but a fourth was not started before one of them was answered.
    assert busiest_second(arrivals) == stats["handshakes_max_per_second"] == 3
    assert took < 15


def test_a_connection_that_never_opens_is_given_up_after_the_connect_timeout_and_frees_the_gate():
    async def main() -> tuple[float, int]:
        async def never_opens(url: str, **options) -> object:
            await asyncio.sleep(3600)  # no TCP connection: nothing reached the server to count

        client = OkxWsClient(WsConfig(url="ws://x/", connect_timeout_s=0.2), WsHandler(), connect=never_opens)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no WebSocket upgrade: no connection \(TCP, TLS\) in 0.2 s"):
            await client._open()
        return time.monotonic() - started, client._gate.in_flight

    took, in_flight = asyncio.run(main())
    assert 0.2 <= took < 1.0
    assert in_flight == 0


async def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
