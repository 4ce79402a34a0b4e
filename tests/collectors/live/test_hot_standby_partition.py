"""Hot standby across two hosts: a partition of one collector host, then the death of the other, cost no candle.

Two test hosts (Linux network namespaces with veth links, tests/support/netns.py) each run a collector
(`manage.py run_collector`, COLLECTOR_REPLICAS=2). Redis, PostgreSQL and the OKX simulator are reached over those
links, at the machine's service address. The test:

1. waits until both collectors hold every shard;
2. cuts host a's link for three lease TTLs (its leases lapse; host b carries every channel alone), restores it,
   and waits until host a holds its slots again (whatever it kept in memory while cut is written now, stale);
3. SIGKILLs host b's collector; host a carries every channel alone;
4. flushes, detects gaps and runs the repair: no gap, no REST request, and every closed candle of the whole
   window is the simulator's truth.

Skipped, with the reason, where namespaces cannot be made (not root, no iproute2, no veth).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis as redis_lib
from django.db import connection

from candles.bars import ms_to_datetime
from candles.models import Gap, Instrument, Subscription, Timeframe
from collectors.live.flush import buffer_flush
from collectors.repair.detect import detection_advance
from collectors.repair.schedule import repair_run
from collectors.simulator import SimulatorConfig, run_in_thread
from tests.support import wait_for
from tests.support.netns import namespaced_hosts, why_no_namespaces
from tests.support.standby import ROOT, collector_command, collector_env, held_by, wrong_candles

INSTRUMENTS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
SHARDS, TTL_S = 2, 2.0

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def net() -> Iterator:
    reason = why_no_namespaces()
    if reason:
        pytest.skip(f"two test hosts cannot be made here: {reason}")
    with namespaced_hosts(["a", "b"]) as net:
        yield net


def test_a_partitioned_host_then_the_other_host_s_death_cost_no_candle_and_no_rest_request(
    net, keys, redis, settings
):
    one_s = Timeframe.objects.get(code="1s")
    for inst_id in INSTRUMENTS:
        Subscription.objects.create(instrument=Instrument.objects.create(inst_id=inst_id, inst_type="SPOT"),
                                    timeframe=one_s)
    r = redis
    db = connection.settings_dict
    redis_port = redis_lib.connection.parse_url(settings.REDIS_URL).get("port", 6379)
    pg, rd = net.forward(int(db["PORT"] or 5432)), net.forward(int(redis_port))
    config = SimulatorConfig(seed=13, instruments=len(INSTRUMENTS), bars=("1s",), push_interval=0.2)
    with run_in_thread(config, host=net.service_ip, port=0) as sim:
        settings.OKX_REST_URL = sim.rest_url
        market = sim.simulator.market
        procs = {}
        for name in ("a", "b"):
            env = collector_env(database_url=f"postgres://{db['USER']}@{net.service_ip}:{pg}/{db['NAME']}",
                                redis_url=f"redis://{net.service_ip}:{rd}/0", prefix=keys.prefix,
                                ws_url=sim.ws_url, replicas=2, shards=SHARDS, ttl_s=TTL_S, host=f"host-{name}")
            procs[name] = net.run(name, collector_command(name), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)

        both = {"a", "b"}
        wait_for(lambda: all(held == both for held in held_by(r, keys, SHARDS, 2)), 40, "both hosts on every shard")
        wait_for(lambda: sim.simulator.stats()["subscriptions"] == 2 * len(INSTRUMENTS), 30,
                 "every channel subscribed from both hosts")
        time.sleep(2.0)
        buffer_flush(redis=r, keys=keys)
        start_ms = int(time.time()) * 1000 - 2000
        Subscription.objects.update(detected_through=ms_to_datetime(start_ms - 1))

        # 1. Host a is cut off: its leases lapse, host b carries every channel.
        net.cut("a")
        wait_for(lambda: not net.reaches("a", rd), 10, "host a to be cut off")
        time.sleep(3 * TTL_S)
        assert all(held == {"b"} for held in held_by(r, keys, SHARDS, 2)), "host a's slots did not lapse"
        buffer_flush(redis=r, keys=keys)

        # 2. The link comes back: host a writes what it kept (stale by now) and takes its slots again.
        net.restore("a")
        wait_for(lambda: all(held == both for held in held_by(r, keys, SHARDS, 2)), 40,
                 "host a back on every shard")
        time.sleep(2.0)

        # 3. Host b's collector dies: host a alone carries every channel.
        procs["b"].send_signal(signal.SIGKILL)
        procs["b"].wait(10)
        time.sleep(2 * TTL_S + 2)
        end_ms = int(time.time()) * 1000 - 2000
        time.sleep(1.5)
        buffer_flush(redis=r, keys=keys)
        rest_before = sim.simulator.stats()["rest_requests"]

        detected = detection_advance(settle=timedelta(seconds=0))
        repair_run(budget_s=2.0)
        rest_after = sim.simulator.stats()["rest_requests"]
        wrong = wrong_candles(market, INSTRUMENTS, "1s", start_ms, end_ms)

    window = f"{(end_ms - start_ms) / 1000:g} s window"
    assert (detected.gaps, Gap.objects.count(), rest_after - rest_before) == (0, 0, 0), window
    assert wrong == [], f"{window}: {wrong[:5]}"

