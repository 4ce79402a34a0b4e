"""setup_periodic_tasks: the beat schedule declared in code, written idempotently to django-celery-beat."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from okxproject.celery import app as celery_app

pytestmark = pytest.mark.django_db

EXPECTED = {
    # name: (task, every seconds, queue, expire seconds)
    "okx-candles: flush buffer": ("collectors.tasks.flush_buffer", 1, "flush", 1),
    "okx-candles: repair candles": ("collectors.tasks.repair_candles", 5, "backfill", 5),
    "okx-candles: detect gaps": ("collectors.tasks.detect_gaps", 10, "backfill", 10),
    "okx-candles: check health": ("collectors.tasks.check_health", 10, "default", 10),
    "okx-candles: sync instruments": ("collectors.tasks.sync_instruments", 600, "default", 600),
    "okx-candles: maintain storage": ("collectors.tasks.maintain_storage", 600, "storage", 600),
}


def run(**options) -> str:
    out = StringIO()
    call_command("setup_periodic_tasks", stdout=out, **options)
    return out.getvalue()


def snapshot() -> list[tuple]:
    return list(PeriodicTask.objects.order_by("name").values_list(
        "pk", "name", "task", "interval_id", "queue", "expires", "expire_seconds", "enabled", "args", "kwargs",
        "one_off", "date_changed",
    ))


@pytest.fixture
def one_second_flush(settings):
    settings.FLUSH_INTERVAL_S = 1.0
    settings.STORAGE_MAINTENANCE_INTERVAL_S = 600
    return settings


def test_it_declares_every_task_with_its_interval_queue_and_expiry(one_second_flush):
    out = run()

    tasks = {t.name: t for t in PeriodicTask.objects.select_related("interval")}
    assert set(tasks) == set(EXPECTED)
    for name, (task_name, every, queue, expire) in EXPECTED.items():
        task = tasks[name]
        assert (task.task, task.queue, task.expire_seconds, task.expires, task.enabled) == (
            task_name, queue, expire, None, True
        )
        assert task.interval.schedule.run_every == timedelta(seconds=every)
        assert f"created {name}" in out
        # What beat sends: the queue and an expiry of about one period.
        entry = ModelEntry(task, app=celery_app)
        assert entry.options["queue"] == queue
        assert entry.options["expires"] == expire
        assert entry.task == task_name
    assert f"{len(EXPECTED)} created, 0 updated, 0 unchanged, 0 removed" in out


def test_running_it_twice_changes_nothing(one_second_flush):
    run()
    first = snapshot()
    intervals = IntervalSchedule.objects.count()

    out = run(verbosity=2)

    assert snapshot() == first
    assert IntervalSchedule.objects.count() == intervals
    assert f"0 created, 0 updated, {len(EXPECTED)} unchanged, 0 removed" in out
    assert "unchanged okx-candles: check health" in out


def test_tasks_no_longer_declared_are_removed_and_others_are_left_alone(one_second_flush):
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="okx-candles: retired job", task="collectors.tasks.retired",
                                interval=every_minute)
    PeriodicTask.objects.create(name="someone else's job", task="other.tasks.job", interval=every_minute)

    out = run()

    assert "removed okx-candles: retired job" in out
    assert not PeriodicTask.objects.filter(name="okx-candles: retired job").exists()
    assert PeriodicTask.objects.filter(name="someone else's job").exists()


def test_a_changed_task_is_brought_back_to_its_declaration_but_stays_disabled(one_second_flush):
    run()
    PeriodicTask.objects.filter(name="okx-candles: detect gaps").update(queue="default", expire_seconds=None,
                                                                          task="x.y")
    PeriodicTask.objects.filter(name="okx-candles: repair candles").update(enabled=False)

    out = run()

    detect = PeriodicTask.objects.get(name="okx-candles: detect gaps")
    assert (detect.task, detect.queue, detect.expire_seconds) == ("collectors.tasks.detect_gaps", "backfill", 10)
    assert "updated okx-candles: detect gaps" in out
    assert "1 updated" in out
    assert not PeriodicTask.objects.get(name="okx-candles: repair candles").enabled
    assert "okx-candles: repair candles is disabled" in out


def test_a_fractional_flush_interval_is_kept_exactly(settings):
    settings.FLUSH_INTERVAL_S = 0.5

    run()

    flush = PeriodicTask.objects.select_related("interval").get(name="okx-candles: flush buffer")
    assert (flush.interval.every, flush.interval.period) == (500_000, IntervalSchedule.MICROSECONDS)
    assert flush.interval.schedule.run_every == timedelta(milliseconds=500)
    assert flush.expire_seconds == 1

    settings.FLUSH_INTERVAL_S = 2.0
    out = run()
    flush.refresh_from_db()
    assert (flush.interval.every, flush.interval.period, flush.expire_seconds) == (2, IntervalSchedule.SECONDS, 2)
    assert "updated okx-candles: flush buffer" in out
