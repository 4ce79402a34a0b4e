"""Storage maintenance (the beat task and `manage.py maintain_storage`): every step, one run at a time, safe to
run twice, a failing step does not stop the others, partitions dropped are counted for /metrics.

Two `1s` days of 2020 are made while `1s` keeps everything; then `1s` keeps two days, so both lie behind the
horizon. The steps use statements that cannot run in a transaction block, so these tests commit.
"""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from candles.models import Gap, GapState, Instrument, Subscription, Timeframe
from candles.partitions import partition_list, partitions_ensure
from collectors import maintenance
from collectors.maintenance import storage_maintain
from collectors.tasks import maintain_storage
from tests.conftest import utc

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

D1 = utc(2020, 1, 1)
DAY = timedelta(days=1)
NAMES = ["candles_candle_1s_20200101", "candles_candle_1s_20200102"]


def tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r' ORDER BY 1", [NAMES])
        return [name for (name,) in cursor.fetchall()]


def _drop_leftovers() -> None:
    with connection.cursor() as cursor:
        for name in tables():
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
def old_days(stored_candles, keys):
    """Two 2020 days of 1s with a candle each, an open gap there and a filled gap finished 40 days ago."""
    _drop_leftovers()
    btc = Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT")
    Timeframe.objects.filter(code="1s").update(retention=None)
    partitions_ensure(bar="1s", start=D1, end=D1 + 2 * DAY)
    stored_candles(btc, "1s", [D1, D1 + DAY])
    Timeframe.objects.filter(code="1s").update(retention=timedelta(days=2))
    sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1s"))
    open_gap = Gap.objects.create(subscription=sub, start=D1 + timedelta(hours=1), end=D1 + timedelta(hours=2),
                                  missing=3601)
    old_fill = Gap.objects.create(subscription=sub, start=D1 + timedelta(hours=3), end=D1 + timedelta(hours=4),
                                  missing=3601, state=GapState.FILLED)
    Gap.objects.filter(pk=old_fill.pk).update(updated_at=timezone.now() - timedelta(days=40))
    yield {"open_gap": open_gap, "old_fill": old_fill}
    _drop_leftovers()


def test_one_run_retires_old_partitions_expires_their_gaps_and_prunes_old_records(old_days, redis, keys):
    result = storage_maintain()

    assert result.errors == []
    assert tables() == []
    assert result.retention.bars["1s"].dropped == 2
    assert result.gaps.expired == 1
    assert result.gaps_pruned == 1
    assert Gap.objects.get(pk=old_days["open_gap"].pk).state == GapState.EXPIRED
    assert not Gap.objects.filter(pk=old_days["old_fill"].pk).exists()
    # Counted where /metrics reads it, so it survives every process.
    assert int(redis.hget(keys.counters, "partitions_dropped:1s")) == 2


def test_the_task_is_safe_to_run_twice(old_days, redis, keys):
    first = maintain_storage()
    leaves = [leaf.name for leaf in partition_list()]
    gaps = sorted(Gap.objects.values_list("id", "state", "start", "end"))

    second = maintain_storage()

    assert "skipped" not in first
    assert "skipped" not in second
    assert "retention: nothing to do" in second
    assert "0 partitions made" in second
    assert [leaf.name for leaf in partition_list()] == leaves
    assert sorted(Gap.objects.values_list("id", "state", "start", "end")) == gaps
    assert int(redis.hget(keys.counters, "partitions_dropped:1s")) == 2  # not counted twice


def test_two_runs_never_overlap(old_days):
    params = connection.settings_dict
    with psycopg.connect(dbname=params["NAME"], host=params["HOST"] or None, port=params["PORT"] or None,
                         user=params["USER"] or None, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [maintenance._LOCK_KEY])  # a run under way elsewhere

        result = storage_maintain()
        # Released by the other run itself: a closed connection's backend lets go of it a moment later.
        other.execute("SELECT pg_advisory_unlock(%s)", [maintenance._LOCK_KEY])

    assert result.skipped
    assert tables() == NAMES  # nothing was done
    assert storage_maintain().skipped is False  # and once it is over, the next run goes ahead


def test_a_failing_step_does_not_stop_the_others(old_days, monkeypatch):
    def broken(*, now):
        raise RuntimeError("no room")

    monkeypatch.setattr(maintenance, "partitions_premake", broken)

    result = storage_maintain()

    assert result.errors == ["premake: RuntimeError: no room"]
    assert tables() == []
    assert result.gaps.expired == 1


def test_the_command_prints_the_plan_and_a_dry_run_changes_nothing(old_days):
    out = StringIO()

    call_command("maintain_storage", "--dry-run", stdout=out)

    text = out.getvalue()
    assert "storage plan at " in text
    [row] = [line for line in text.splitlines() if line.startswith("1s ")]
    assert "2 days" in row
    assert "(due)" in row
    assert "to retire now:" in text
    assert f"1s: {NAMES[0]} [2020-01-01 00:00:00Z, 2020-01-02 00:00:00Z) — drop: " in text
    assert NAMES[1] in text
    assert text.rstrip().endswith("dry run: nothing changed")
    assert tables() == NAMES
    assert Gap.objects.get(pk=old_days["open_gap"].pk).state == GapState.OPEN


def test_the_command_runs_the_maintenance_with_a_line_per_step(old_days):
    out = StringIO()

    call_command("maintain_storage", stdout=out)

    text = out.getvalue()
    for step in ("premake:", "retention:", "close-out:", "gaps: expire", "gaps: delete finished records"):
        assert step in text
    assert f"1s: dropped {NAMES[0]}" in text
    assert "done: " in text
    assert tables() == []
