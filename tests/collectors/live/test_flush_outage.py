"""Outages delay candles and lose none: PostgreSQL or Redis stops and starts again under a running pipeline.

Each outage uses a private server of its own (never the machine's). The PostgreSQL outage runs in a
subprocess whose Django points at the private PostgreSQL (migrated there), so this process's test
database is untouched; the Redis outages run here, against the test database and a private Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings

from candles.models import Instrument
from collectors.live.flush import buffer_flush
from collectors.shared.connections import pipeline_keys, redis_client
from tests.support import (
    MINUTE_MS,
    T0_MS,
    InThread,
    LiveBuffer,
    as_stored,
    candle_update,
    isolated_keys,
    new_keys,
    row_locked,
    stored_candles,
    waiting_backend,
)
from tests.support.private_services import PrivatePostgres, private_postgres, private_redis

ROOT = Path(__file__).resolve().parents[3]


def minute(i: int) -> int:
    return T0_MS + i * MINUTE_MS


# --- PostgreSQL stops and starts ---------------------------------------------------------------------

_SUBPROCESS = """
import django
django.setup()
from tests.collectors.live.test_flush_outage import run_postgres_outage_scenario
print(run_postgres_outage_scenario())
"""


def test_a_postgresql_outage_keeps_the_buffer_and_every_candle_lands_once_newest_version_after_it():
    with private_postgres() as pg, isolated_keys(redis_client()) as keys:
        env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "okxproject.settings", "DATABASE_URL": pg.url,
            "REDIS_URL": settings.REDIS_URL, "REDIS_KEY_PREFIX": keys.prefix,
            "PRIVATE_PG_ROOT": str(pg.root), "PRIVATE_PG_PORT": str(pg.port),
        }
        completed = subprocess.run([sys.executable, "-c", _SUBPROCESS], cwd=ROOT, env=env, capture_output=True,
                                   text=True, timeout=120, check=False)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {
        "failed_runs": ["OperationalError", "OperationalError"],
        "taken_while_down": [10, 10],
        "live_while_down": [0, 11],
        "runs_after": [[10, 5, 5, 0], [11, 5, 5, 1], [0, 0, 0, 0]],
        "stored": 15,
        "counters": {"candles_flushed": 5 + 10 + 10, "flush_errors": 2, "flush_runs": 3},
    }


def run_postgres_outage_scenario() -> str:
    """Runs in a subprocess whose DATABASE_URL is the private PostgreSQL; returns a JSON report."""
    from django.core.management import call_command
    from django.db import Error

    call_command("migrate", verbosity=0)
    pg = PrivatePostgres(os.environ["PRIVATE_PG_ROOT"], int(os.environ["PRIVATE_PG_PORT"]))
    buffer = LiveBuffer(redis_client(), pipeline_keys())  # REDIS_KEY_PREFIX: the test's own
    Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT")
    newest = {}

    def put(update, version: int) -> None:
        buffer.put(update, version)
        stored_key, row = as_stored(update, version)
        # The database's rule: confirmed is final, otherwise the newer version wins.
        old = newest.get(stored_key)
        if old is None or (row[-1] > old[-1] and (update.confirmed or not old[-4])):
            newest[stored_key] = row

    def flush():
        return buffer_flush(redis=buffer.redis, keys=buffer.keys, chunk_rows=4)

    for i in range(5):
        put(candle_update(minute(i), confirmed=False), 100)
    assert flush().inserted == 5  # the flush's connection is open when the server goes
    for i in range(5):
        put(candle_update(minute(i), close="101"), 200)  # they close
    for i in range(5, 10):
        put(candle_update(minute(i), confirmed=False), 200)

    pg.stop()
    failed, taken, live = [], [], []
    for round_ in range(2):
        try:
            flush()
        except Error as exc:
            failed.append(type(exc).__name__)
        taken.append(len(buffer.taken()))
        live.append(len(buffer.live()))
        if round_ == 0:  # more data arrives during the outage, newer and older
            for i in range(5, 10):
                put(candle_update(minute(i), close="102.5"), 300)
            for i in range(10, 15):
                put(candle_update(minute(i), confirmed=False, close="99"), 300)
            put(candle_update(minute(0), close="95"), 150)  # an older version of a closed candle: must lose
    pg.start()

    runs = []
    for _ in range(3):
        result = flush()
        runs.append([result.taken, result.inserted, result.updated, result.unchanged])
    table = stored_candles()
    assert table == newest, "the database does not hold the newest version of every candle"
    assert buffer.live() == {}
    assert buffer.taken() == {}
    return json.dumps({
        "failed_runs": failed, "taken_while_down": taken, "live_while_down": live, "runs_after": runs,
        "stored": len(table), "counters": buffer.counters(),
    })


# --- Redis stops and starts --------------------------------------------------------------------------


@pytest.fixture
def btc(transactional_db) -> Instrument:
    return Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT")


def private_client(url: str) -> redis_lib.Redis:
    # Settings as the pipeline's own client (collectors.shared.connections).
    return redis_lib.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_flush_fails_cleanly_while_redis_is_down_and_writes_everything_once_it_is_back(btc):
    with private_redis(appendonly=True) as server:
        buffer = LiveBuffer(private_client(server.url), new_keys())
        updates = [candle_update(minute(i)) for i in range(3)]
        buffer.put_many((update, 10) for update in updates)

        server.stop()
        started = time.monotonic()
        with pytest.raises(redis_lib.ConnectionError):
            buffer_flush(redis=buffer.redis, keys=buffer.keys)
        assert time.monotonic() - started < 5
        assert stored_candles() == {}
        server.start()

        assert len(buffer.live()) == 3
        result = buffer_flush(redis=buffer.redis, keys=buffer.keys)

    assert (result.taken, result.written) == (3, 3)
    assert stored_candles() == dict(as_stored(update, 10) for update in updates)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_redis_going_down_after_the_rows_committed_keeps_the_batch_and_the_retry_is_harmless(btc):
    # The run commits its rows but cannot drop the batch: Redis went down while it waited for a row lock.
    from candles.storage import CandleRow, candles_upsert

    candles_upsert(rows=[CandleRow("BTC-USDT", "1m", minute(0), "100", "110", "90", "105", "1", "1", None, False,
                                   "ws", 1)])
    with private_redis(appendonly=True) as server:
        buffer = LiveBuffer(private_client(server.url), new_keys())
        updates = [candle_update(minute(i), close="100.5") for i in range(3)]
        buffer.put_many((update, 10) for update in updates)

        with row_locked(minute(0)):
            run = InThread(buffer_flush, redis=buffer.redis, keys=buffer.keys)
            run.start()
            waiting_backend()
            server.stop()
        run.finish()

        assert isinstance(run.error, redis_lib.ConnectionError), run.error
        assert stored_candles() == dict(as_stored(update, 10) for update in updates)  # committed
        server.start()
        assert len(buffer.taken()) == 3  # the batch survived (append-only file)
        # The dead run's lock survived too; it expires within LOCK_TTL_MS, and runs are skipped until then.
        assert buffer_flush(redis=buffer.redis, keys=buffer.keys).skipped
        buffer.redis.delete(buffer.keys.flush_lock)  # as its TTL would
        retry = buffer_flush(redis=buffer.redis, keys=buffer.keys)

        assert (retry.taken, retry.written, retry.unchanged) == (3, 0, 3)
        assert buffer.taken() == {}
    assert stored_candles() == dict(as_stored(update, 10) for update in updates)
