"""Found by bench/chaos.py (fixed): a gap fill cut off by a PostgreSQL restart was stuck for FILLING_STALE_AFTER.

In the chaos run, PostgreSQL restarted while `gap_fill` was retrying REST through a burst of 429s. The fill's
database connection died with the server. REST then gave up (a transient error), and `_reopen`, which puts the
gap back to `open` for a retry, ran its UPDATE on the dead connection and failed too. The gap stayed `filling`,
which `gaps_next` hands out again only after FILLING_STALE_AFTER (10 minutes): the candles it covers stayed
missing for 10 minutes after the database was back. Here the restart is a `pg_terminate_backend` of the fill's
connection while the REST client backs off between 429s. `_reopen` now retries on a fresh connection.

Still open: when the fill fails while the database is still down (REST answered during the outage, the write
and the hand-back both failed), no connection helps, and the gap waits the full FILLING_STALE_AFTER. The
second test keeps new connections out (`ALLOW_CONNECTIONS false`) while the fill fails.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
import redis as redis_lib
from django.db import connection
from django.utils import timezone

from candles.bars import ms_to_datetime
from candles.gaps import RETRY_BACKOFF
from candles.models import Gap, GapState, Instrument, Subscription, Timeframe
from collectors.repair.detect import gaps_detect
from collectors.repair.fill import gap_fill
from collectors.repair.schedule import gaps_next
from collectors.shared import rest as shared_rest
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from tests.support import InThread, isolated_keys, terminate_backend

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with run_in_thread(SimulatorConfig(seed=5, instruments=1, bars=("1m",), history_days=2), port=0) as handle:
        yield handle


@pytest.fixture
def redis_client() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    client.close()


def other_backend(*, besides: int, timeout_s: float = 10.0) -> int:
    """The pid of the one other backend connected to this database (the fill's)."""
    deadline = time.monotonic() + timeout_s
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s",
                           [besides])
            pids = [pid for (pid,) in cursor.fetchall()]
            if len(pids) == 1:
                return pids[0]
            time.sleep(0.02)
    raise TimeoutError("the fill's connection did not show up")


@contextlib.contextmanager
def database_refusing_connections() -> Iterator[psycopg.Connection]:
    """New connections to this database fail (as while PostgreSQL is down); open ones, like ours, stay. Yields the
    administrative connection (to the `postgres` database), which can still act on this one's backends."""
    params = connection.settings_dict
    # PostgreSQL refuses this change from a connection to the database itself.
    with psycopg.connect(dbname="postgres", host=params["HOST"] or None, port=params["PORT"] or None,
                         user=params["USER"] or None, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{params["NAME"]}" WITH ALLOW_CONNECTIONS false')
        try:
            yield admin
        finally:
            admin.execute(f'ALTER DATABASE "{params["NAME"]}" WITH ALLOW_CONNECTIONS true')


def wait_for_state(gap: Gap, state: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while Gap.objects.get(pk=gap.pk).state != state:
        assert time.monotonic() < deadline, f"gap never became {state}"
        time.sleep(0.01)


def fill_cut_off_by_a_restart(sim, redis_client, monkeypatch, *, database_stays_down: bool) -> tuple[Gap, InThread]:
    """A gap claimed by a fill whose database connection is terminated while REST backs off between 429s;
    with `database_stays_down`, new connections are refused until the fill has given up."""
    # Four 429s with three retries: the fill fails after backing off for at least 1.75 s, long after the
    # restart below, which follows its claim within milliseconds.
    monkeypatch.setattr(shared_rest, "REST_MAX_RETRIES", 3)
    instrument = Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT",
                                           listed_at=ms_to_datetime(sim.simulator.market.list_time_ms))
    subscription = Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code="1m"),
                                               backfill_from=timezone.now() - timedelta(hours=1))
    (gap,) = gaps_detect(subscription_id=subscription.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]
    sim.simulator.rest_429(4)

    with isolated_keys(redis_client) as keys:
        fill = InThread(gap_fill, gap_id=gap.pk, rest_url=sim.rest_url, redis=redis_client, keys=keys)
        fill.start()
        wait_for_state(gap, GapState.FILLING)
        victim = other_backend(besides=own_pid)
        if database_stays_down:
            # Refused first, then cut: the fill must not find the database back between the two (it did, under
            # load, when the cut came first and its fresh connection won the race to hand the gap back).
            with database_refusing_connections() as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", [victim]).fetchone()[0]
                fill.finish()
        else:
            terminate_backend(victim)
            fill.finish()
    return gap, fill


def test_a_fill_cut_off_by_a_database_restart_is_retried_after_the_backoff_not_ten_minutes(sim, redis_client,
                                                                                            monkeypatch):
    gap, fill = fill_cut_off_by_a_restart(sim, redis_client, monkeypatch, database_stays_down=False)

    assert fill.error is not None  # the fill failed, as it must with its connection gone
    # The database is back at once; the gap must be handed out again after the retry backoff of a failed
    # attempt, not after the 10 minutes that mean "its worker died".
    later = timezone.now() + 2 * RETRY_BACKOFF
    assert gaps_next(limit=10, now=later) == [gap.pk], Gap.objects.filter(pk=gap.pk).values("state", "attempts").get()


def test_a_fill_that_fails_while_the_database_is_still_down_is_retried_within_minutes_of_its_return(
        sim, redis_client, monkeypatch):
    # Seen in the chaos run: REST answered during a 20 s PostgreSQL outage, the write failed, and so did handing
    # the gap back, on a fresh connection too. The gap can only wait for FILLING_STALE_AFTER, so the stale
    # timeout is what bounds the repair of these candles.
    gap, fill = fill_cut_off_by_a_restart(sim, redis_client, monkeypatch, database_stays_down=True)

    assert fill.error is not None
    assert Gap.objects.get(pk=gap.pk).state == GapState.FILLING  # nobody could tell the database otherwise
    # The database is back; a fill cannot take minutes (the fill_gaps budget is seconds), so the claim of one
    # that died must not outlive it by much more than the retry backoff.
    later = timezone.now() + 4 * RETRY_BACKOFF
    assert gaps_next(limit=10, now=later) == [gap.pk], Gap.objects.filter(pk=gap.pk).values("state", "attempts").get()
