"""Hot standby: with COLLECTOR_REPLICAS=2, a SIGKILL of one collector costs no candle, no gap and no REST request.

Two `manage.py run_collector` processes collect the same shards from the OKX simulator over real sockets, into the
real Redis buffer and PostgreSQL (the test database). One is killed with SIGKILL; the survivor alone carries
every channel on. Then the flush, gap detection and a repair run: nothing to detect, nothing to ask OKX for, and
every candle of the window is the simulator's truth. With one replica the same kill leaves holes (the control:
the test can tell the difference).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis as redis_lib
from django.db import connection

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Gap, Instrument, Subscription, Timeframe
from collectors.pipeline.flush import buffer_flush
from collectors.pipeline.keys import Keys
from collectors.repair.detect import detection_advance
from collectors.repair.schedule import repair_run
from collectors.simulator import SimulatorConfig, run_in_thread

ROOT = Path(__file__).resolve().parents[3]
INSTRUMENTS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
SHARDS, TTL_S = 2, 2.0

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def keys(settings) -> Iterator[Keys]:
    keys = Keys(prefix=f"test:standby:{uuid.uuid4().hex}:")
    settings.REDIS_KEY_PREFIX = keys.prefix
    yield keys
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    stale = list(client.scan_iter(match=f"{keys.prefix}*"))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def r(settings) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def sim(settings):
    config = SimulatorConfig(seed=11, instruments=len(INSTRUMENTS), bars=("1s", "1m"), push_interval=0.2)
    with run_in_thread(config, port=0) as sim:
        settings.OKX_REST_URL = sim.rest_url
        yield sim


def collector(name: str, replicas: int, keys: Keys, sim, settings) -> subprocess.Popen:
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": settings.REDIS_URL, "REDIS_KEY_PREFIX": keys.prefix, "OKX_WS_URL": sim.ws_url,
           "COLLECTOR_REPLICAS": str(replicas), "COLLECTOR_SHARDS": str(SHARDS), "COLLECTOR_LEASE_TTL_S": str(TTL_S),
           "COLLECTOR_RECONCILE_S": "0.5", "COLLECTOR_HOST": f"host-{name}", "LOG_LEVEL": "WARNING"}
    # A session of its own, so the SIGKILL reaches this process only (never the test's).
    return subprocess.Popen([sys.executable, "manage.py", "run_collector", "--id", name, "--skip-checks"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def held_by(r: redis_lib.Redis, keys: Keys, replicas: int) -> list[set[str]]:
    return [{v.decode() for v in r.mget(keys.lease_slots(shard, replicas)) if v} for shard in range(SHARDS)]


def exact_window(sim, start_ms: int, end_ms: int) -> list[str]:
    """The 1s candles of the window that are not the simulator's truth (missing, open or different)."""
    tf = Timeframe.objects.get(code="1s")
    wrong = []
    for inst_id in INSTRUMENTS:
        stored = {datetime_to_ms(c.open_time): c for c in Candle.objects.filter(
            instrument__inst_id=inst_id, instrument__price="trade", timeframe=tf,
            open_time__gte=ms_to_datetime(start_ms), open_time__lte=ms_to_datetime(end_ms))}
        for row in sim.simulator.market.truth_range(inst_id, "1s", start_ms, end_ms):
            c = stored.get(int(row[0]))
            numbers = None if c is None else [str(v) for v in (c.open, c.high, c.low, c.close, c.vol, c.vol_ccy,
                                                                  c.vol_ccy_quote)]
            if c is None or not c.confirmed or numbers != row[1:8]:
                wrong.append(f"{inst_id} {row[0]}: stored {numbers} confirmed {c and c.confirmed}, truth {row[1:8]}")
    return wrong


@pytest.mark.parametrize("replicas", [2, 1])
def test_a_collector_killed_with_a_standby_costs_no_candle_no_gap_and_no_rest_request(
    replicas, keys, r, sim, settings
):
    one_s = Timeframe.objects.get(code="1s")
    for inst_id in INSTRUMENTS:
        Subscription.objects.create(instrument=Instrument.objects.create(inst_id=inst_id, inst_type="SPOT"),
                                    timeframe=one_s)
    procs = {name: collector(name, replicas, keys, sim, settings) for name in ("a", "b")[:replicas]}
    try:
        names = set(procs)
        wait_for(lambda: all(held == names for held in held_by(r, keys, replicas)), 30,
                 f"{replicas} collectors on every shard")
        wait_for(lambda: sim.simulator.stats()["subscriptions"] == replicas * len(INSTRUMENTS), 30,
                 "every channel subscribed by every replica")
        time.sleep(2.0)
        buffer_flush(redis=r, keys=keys)
        # Detection looks from here on: every series' watermark is the last second flushed.
        start_ms = int(time.time()) * 1000 - 2000
        Subscription.objects.update(detected_through=ms_to_datetime(start_ms - 1))

        killed_at = time.time()
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(10)
        time.sleep(2 * TTL_S + 2)  # past the dead replica's lease: the survivor alone carries every channel
        end_ms = int(time.time()) * 1000 - 2000
        time.sleep(1.5)  # the last second of the window is confirmed and written to the buffer
        buffer_flush(redis=r, keys=keys)
        rest_before = sim.simulator.stats()["rest_requests"]

        detected = detection_advance(settle=timedelta(seconds=0))
        repair_run(budget_s=2.0)
        rest_after = sim.simulator.stats()["rest_requests"]
        gaps = Gap.objects.count()
        wrong = exact_window(sim, start_ms, end_ms)
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
