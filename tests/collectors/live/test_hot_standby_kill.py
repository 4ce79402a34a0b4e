"""Hot standby: with COLLECTOR_REPLICAS=2, a SIGKILL of one collector costs no candle, no gap and no REST request.

Two `manage.py run_collector` processes collect the same shards from the OKX simulator over real sockets, into the
real Redis buffer and PostgreSQL (the test database). One is killed with SIGKILL; the survivor alone carries
every channel on. Then the flush, gap detection and a repair run: nothing to detect, nothing to ask OKX for, and
every candle of the window is the simulator's truth. With one replica the same kill leaves holes (the control:
the test can tell the difference).
"""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta

import pytest
from django.db import connection

from candles.bars import ms_to_datetime
from candles.models import Gap, Instrument, Subscription, Timeframe
from collectors.live.flush import buffer_flush
from collectors.repair.detect import detection_advance
from collectors.repair.schedule import repair_run
from collectors.simulator import SimulatorConfig, run_in_thread
from okxproject.keys import Keys
from tests.support import wait_for
from tests.support.standby import ROOT, collector_command, collector_env, held_by, wrong_candles

INSTRUMENTS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
SHARDS, TTL_S = 2, 2.0

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def sim(settings):
    config = SimulatorConfig(seed=11, instruments=len(INSTRUMENTS), bars=("1s", "1m"), push_interval=0.2)
    with run_in_thread(config, port=0) as sim:
        settings.OKX_REST_URL = sim.rest_url
        yield sim


def collector(name: str, replicas: int, keys: Keys, sim, settings) -> subprocess.Popen:
    db = connection.settings_dict
    env = collector_env(database_url=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
                        redis_url=settings.REDIS_URL, prefix=keys.prefix, ws_url=sim.ws_url, replicas=replicas,
                        shards=SHARDS, ttl_s=TTL_S, host=f"host-{name}")
    # A session of its own, so the SIGKILL reaches this process only (never the test's).
    return subprocess.Popen(collector_command(name), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.parametrize("replicas", [2, 1])
def test_a_collector_killed_with_a_standby_costs_no_candle_no_gap_and_no_rest_request(
    replicas, keys, redis, sim, settings
):
    one_s = Timeframe.objects.get(code="1s")
    for inst_id in INSTRUMENTS:
        Subscription.objects.create(instrument=Instrument.objects.create(inst_id=inst_id, inst_type="SPOT"),
                                    timeframe=one_s)
    procs = {name: collector(name, replicas, keys, sim, settings) for name in ("a", "b")[:replicas]}
    try:
        names = set(procs)
        wait_for(lambda: all(held == names for held in held_by(redis, keys, SHARDS, replicas)), 30,
                 f"{replicas} collectors on every shard")
        wait_for(lambda: sim.simulator.stats()["subscriptions"] == replicas * len(INSTRUMENTS), 30,
                 "every channel subscribed by every replica")
        time.sleep(2.0)
        buffer_flush(redis=redis, keys=keys)
        # Detection looks from here on: every series' watermark is the last second flushed.
        start_ms = int(time.time()) * 1000 - 2000
        Subscription.objects.update(detected_through=ms_to_datetime(start_ms - 1))

        killed_at = time.time()
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(10)
        time.sleep(2 * TTL_S + 2)  # past the dead replica's lease: the survivor alone carries every channel
        end_ms = int(time.time()) * 1000 - 2000
        time.sleep(1.5)  # the last second of the window is confirmed and written to the buffer
        buffer_flush(redis=redis, keys=keys)
        rest_before = sim.simulator.stats()["rest_requests"]

        detected = detection_advance(settle=timedelta(seconds=0))
        repair_run(budget_s=2.0)
        rest_after = sim.simulator.stats()["rest_requests"]
        gaps = Gap.objects.count()
        wrong = wrong_candles(sim.simulator.market, INSTRUMENTS, "1s", start_ms, end_ms)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    window = f"{(end_ms - start_ms) / 1000:g} s window, kill at +{killed_at - start_ms / 1000:.1f} s"
    if replicas == 2:
        assert (detected.gaps, gaps, rest_after - rest_before) == (0, 0, 0), window
        assert wrong == [], f"{window}: {wrong[:5]}"
    else:
        # The control: without a standby the same kill opens holes that REST has to repair.
        assert detected.gaps > 0, window
        assert rest_after > rest_before, window
