"""The WebSocket client against the OKX simulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

import pytest

from collectors.okx.candle_rows import CandleUpdate
from collectors.okx.messages import ErrorEvent
from collectors.okx.pacing import backoff_delay
from collectors.okx.protocol import Channel, ProtocolError
from collectors.okx.ws import OkxWsClient
from collectors.okx.ws_contract import ConnectionStatus, WsConfig, WsHandler
from collectors.simulator import Simulator, SimulatorConfig

BTC_1S = Channel("BTC-USDT", "1s")
ETH_1S = Channel("ETH-USDT", "1s")


class Recorder(WsHandler):
    def __init__(self) -> None:
        self.candles: list[CandleUpdate] = []
        self.received_at: list[float] = []
        self.protocol_errors: list[ProtocolError] = []
        self.subscribed: list[Channel] = []
        self.invalid: list[tuple[Channel, ErrorEvent]] = []
        self.statuses: list[ConnectionStatus] = []

    def on_candle(self, update, raw):
        self.candles.append(update)
        self.received_at.append(time.monotonic())

    def on_protocol_error(self, error):
        self.protocol_errors.append(error)

    def on_subscribed(self, channel):
        self.subscribed.append(channel)

    def on_invalid(self, channel, error):
        self.invalid.append((channel, error))

    def on_status(self, status):
        self.statuses.append(status)

    def channels_seen(self) -> set[Channel]:
        return {c.channel for c in self.candles}


async def wait_for(condition, timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def run(scenario, **sim_options):
    """Run `scenario(sim, server, make_client)` with a simulator and clean up every client it made."""

    async def main():
        sim = Simulator(SimulatorConfig(seed=7, instruments=5, bars=("1s", "1m"), **sim_options))
        clients: list[OkxWsClient] = []
        async with sim.serve(host="127.0.0.1", port=0) as server:

            def make_client(handler: WsHandler, **options) -> OkxWsClient:
                defaults = {"ping_after_s": 5.0, "pong_timeout_s": 2.0, "backoff_base_s": 0.05, "backoff_cap_s": 0.5}
                client = OkxWsClient(WsConfig(url=server.ws_url, **{**defaults, **options}), handler)
                clients.append(client)
                return client

            runners = []
            try:
                result = await scenario(sim, server, make_client, runners)
            finally:
                for client in clients:
                    await client.stop()
                await asyncio.gather(*runners, return_exceptions=True)
            return result

    return asyncio.run(main())


def start(client: OkxWsClient, runners: list) -> None:
    runners.append(asyncio.get_running_loop().create_task(client.run()))


def started(make_client, runners: list, channels, **options) -> tuple[Recorder, OkxWsClient]:
    """A running client subscribed to `channels`, with a Recorder as its handler."""
    rec = Recorder()
    client = make_client(rec, **options)
    client.set_channels(channels)
    start(client, runners)
    return rec, client


def test_subscribed_channels_receive_candles_and_report_each_subscription():
    async def scenario(sim, server, make_client, runners):
        rec, client = started(make_client, runners, [BTC_1S, ETH_1S])
        await wait_for(lambda: rec.channels_seen() == {BTC_1S, ETH_1S})
        assert sorted(rec.subscribed) == sorted([BTC_1S, ETH_1S])
        await wait_for(lambda: client.statuses()[0].state == "open")
        status = client.statuses()[0]
        assert (status.channels, status.subscribed, status.reconnects) == (2, 2, 0)
        assert status.conn_id

    run(scenario, push_interval=0.1)


def test_pushed_values_match_the_simulators_ground_truth_when_confirmed():
    async def scenario(sim, server, make_client, runners):
        rec, _client = started(make_client, runners, [BTC_1S])
        await wait_for(lambda: sum(c.confirmed for c in rec.candles) >= 2)
        for candle in (c for c in rec.candles if c.confirmed):
            truth = sim.market.truth("BTC-USDT", "1s", candle.open_time_ms)
            assert [str(v) for v in candle[3:10]] == truth[1:8]

    run(scenario, push_interval=0.1)


def test_the_client_reconnects_after_an_abrupt_drop_and_subscribes_again():
    async def scenario(sim, server, make_client, runners):
        rec, client = started(make_client, runners, [BTC_1S])
        await wait_for(lambda: rec.candles)
        sim.drop_connections()
        await wait_for(lambda: client.statuses()[0].reconnects >= 1)
        count = len(rec.candles)
        await wait_for(lambda: len(rec.candles) > count + 3)
        assert rec.subscribed == [BTC_1S, BTC_1S]
        assert any(s.state == "backoff" for s in rec.statuses)

    run(scenario, push_interval=0.1)


def test_keepalive_pings_hold_a_silent_connection_past_the_idle_timeout():
    async def scenario(sim, server, make_client, runners):
        _rec, client = started(make_client, runners, [BTC_1S], ping_after_s=0.4, pong_timeout_s=1.0)
        await wait_for(lambda: client.statuses() and client.statuses()[0].state == "open")
        await asyncio.sleep(3.5)  # more than twice the idle timeout with no push at all
        assert client.statuses()[0].reconnects == 0
        assert sim.stats()["pings"] >= 4

    run(scenario, push_interval=60.0, idle_timeout=1.5)


def test_without_pings_the_simulator_closes_an_idle_connection_and_the_client_comes_back():
    async def scenario(sim, server, make_client, runners):
        rec, client = started(make_client, runners, [BTC_1S], ping_after_s=29.0)
        await wait_for(lambda: client.statuses() and client.statuses()[0].reconnects >= 1, timeout=6)
        await wait_for(lambda: rec.subscribed.count(BTC_1S) >= 2)

    run(scenario, push_interval=60.0, idle_timeout=1.0)


def test_an_unanswered_ping_drops_the_connection_and_reconnects():
    async def scenario(sim, server, make_client, runners):
        _rec, client = started(make_client, runners, [BTC_1S], ping_after_s=0.3, pong_timeout_s=0.5)
        await wait_for(lambda: client.statuses() and client.statuses()[0].state == "open")
        sim.ignore_pings(True)
        await wait_for(lambda: client.statuses()[0].reconnects >= 1, timeout=5)
        sim.ignore_pings(False)
        await wait_for(lambda: client.statuses()[0].state == "open")

    run(scenario, push_interval=60.0, idle_timeout=30.0)


def test_notice_64008_hands_over_to_a_new_connection_without_missing_a_push():
    async def scenario(sim, server, make_client, runners):
        rec, client = started(make_client, runners, [BTC_1S, ETH_1S])
        await wait_for(lambda: rec.channels_seen() == {BTC_1S, ETH_1S})
        before = time.monotonic()
        sim.send_notice(close_after=1.0)
        await wait_for(lambda: client.statuses()[0].reconnects >= 1, timeout=5)
        await asyncio.sleep(1.5)
        after = time.monotonic()
        # Every second of the window has its confirmed candle on both channels: nothing fell between links.
        confirmed = defaultdict(set)
        for candle in rec.candles:
            if candle.confirmed:
                confirmed[candle.channel].add(candle.open_time_ms)
        first = (int(time.time() - (after - before)) + 1) * 1000
        last = (int(time.time()) - 1) * 1000
        for channel in (BTC_1S, ETH_1S):
            missing = [t for t in range(first, last, 1000) if t not in confirmed[channel]]
            assert missing == [], (channel, missing)
        window = [t for t in rec.received_at if t >= before]
        assert max(b - a for a, b in itertools.pairwise(window)) < 0.5
        assert not any(s.state == "backoff" for s in rec.statuses)

    run(scenario, push_interval=0.1)


def test_a_channel_okx_says_does_not_exist_is_marked_invalid_once_and_not_retried():
    async def scenario(sim, server, make_client, runners):
        rec = Recorder()
        client = make_client(rec)
        bogus = Channel("NOPE-USDT", "1s")
        client.set_channels([BTC_1S, bogus])
        start(client, runners)
        await wait_for(lambda: rec.invalid)
        await wait_for(lambda: BTC_1S in rec.channels_seen())
        [(channel, error)] = rec.invalid
        assert (channel, error.code) == (bogus, "60018")
        assert bogus in client.invalid
        client.set_channels([BTC_1S, bogus])  # a reconcile asking again does not resubscribe it
        requests = sim.stats()["requests"]
        await asyncio.sleep(1.0)
        assert sim.stats()["requests"] == requests
        assert bogus not in client.channels

    run(scenario, push_interval=0.1)


def test_channels_are_added_and_removed_at_runtime_without_reconnecting():
    async def scenario(sim, server, make_client, runners):
        rec, client = started(make_client, runners, [BTC_1S])
        await wait_for(lambda: BTC_1S in rec.channels_seen())
        client.set_channels([BTC_1S, ETH_1S])
        await wait_for(lambda: ETH_1S in rec.channels_seen())
        client.set_channels([ETH_1S])
        await asyncio.sleep(0.5)
        cut = len(rec.candles)
        await asyncio.sleep(1.0)
        assert {c.channel for c in rec.candles[cut:]} == {ETH_1S}
        assert client.statuses()[0].reconnects == 0
        assert sim.stats()["connections"] == 1

    run(scenario, push_interval=0.1)


def test_removing_the_last_channel_of_a_connection_stops_its_pushes_and_closes_it():
    async def scenario(sim, server, make_client, runners):
        rec, client = started(make_client, runners, [BTC_1S, ETH_1S], channels_per_connection=1)
        await wait_for(lambda: rec.channels_seen() == {BTC_1S, ETH_1S})
        client.set_channels([ETH_1S])
        await wait_for(lambda: sim.stats()["connections"] == 1)
        cut = len(rec.candles)
        await asyncio.sleep(1.0)
        assert {c.channel for c in rec.candles[cut:]} == {ETH_1S}

    run(scenario, push_interval=0.1)


def test_channels_are_spread_over_connections_within_the_cap():
    async def scenario(sim, server, make_client, runners):
        rec = Recorder()
        client = make_client(rec, channels_per_connection=2)
        channels = [Channel(inst, "1s") for inst in ("BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT")]
        client.set_channels(channels)
        start(client, runners)
        await wait_for(lambda: rec.channels_seen() == set(channels))
        assert [s.channels for s in client.statuses()] == [2, 2, 1]
        assert sim.stats()["connections"] == 3

    run(scenario, push_interval=0.1)


def test_malformed_frames_are_reported_and_the_client_keeps_running():
    async def scenario(sim, server, make_client, runners):
        rec, client = started(make_client, runners, [BTC_1S])
        await wait_for(lambda: rec.candles)
        sim.send_malformed(5)
        await wait_for(lambda: len(rec.protocol_errors) >= 4)
        assert all(error.raw for error in rec.protocol_errors)
        count = len(rec.candles)
        await wait_for(lambda: len(rec.candles) > count + 3)
        assert client.statuses()[0].reconnects == 0

    run(scenario, push_interval=0.1)


def test_backoff_grows_exponentially_and_is_capped_with_jitter():
    delays_low = [backoff_delay(n, base=0.5, cap=30.0, rng=lambda: 0.0) for n in range(10)]
    delays_high = [backoff_delay(n, base=0.5, cap=30.0, rng=lambda: 1.0) for n in range(10)]
    assert delays_high[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays_high[6:] == [30.0] * 4
    assert delays_low == [d / 2 for d in delays_high]
    assert backoff_delay(10_000, base=0.5, cap=30.0) <= 30.0


def test_reconnect_attempts_against_a_dead_port_back_off_up_to_the_cap():
    async def main():
        sleeps: list[float] = []

        async def recording_sleep(seconds: float) -> None:
            # The connection gate sleeps here too (1.5 ms between starts at 1000 per second): backoffs only.
            if seconds >= 0.01:
                sleeps.append(seconds)
            await asyncio.sleep(0)

        client = OkxWsClient(
            WsConfig(url="ws://127.0.0.1:9/ws/v5/business", backoff_base_s=0.1, backoff_cap_s=1.6,
                     connections_per_second=1000),
            WsHandler(), sleep=recording_sleep, rng=lambda: 1.0,
        )
        client.set_channels([BTC_1S])
        runner = asyncio.get_running_loop().create_task(client.run())
        while len(sleeps) < 8:
            await asyncio.sleep(0.01)
        await client.stop()
        await runner
        return sleeps[:8]

    assert asyncio.run(main()) == [0.1, 0.2, 0.4, 0.8, 1.6, 1.6, 1.6, 1.6]


def test_a_ping_interval_of_thirty_seconds_or_more_is_refused():
    with pytest.raises(ValueError, match="30"):
        WsConfig(url="ws://127.0.0.1:1/", ping_after_s=30)
