"""`manage.py beat_alive`, beat's healthcheck: healthy while beat keeps sending its periodic tasks."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

pytestmark = pytest.mark.django_db


def periodic(name: str, last_run_ago_s: float | None, enabled: bool = True) -> None:
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=name, task="collectors.tasks.flush_buffer", interval=every, enabled=enabled,
        last_run_at=None if last_run_ago_s is None else timezone.now() - timedelta(seconds=last_run_ago_s))


def test_a_task_sent_within_the_window_is_healthy():
    periodic("flush", 30)
    periodic("old", 5000)
    out = io.StringIO()
    call_command("beat_alive", "--within", "600", stdout=out)
    assert "30 s ago" in out.getvalue()


def test_nothing_sent_within_the_window_is_unhealthy():
    periodic("flush", 900)
    periodic("disabled", 1, enabled=False)  # a disabled task beat does not send says nothing about beat
    with pytest.raises(CommandError, match="900 s ago"):
        call_command("beat_alive", "--within", "600")


def test_nothing_ever_sent_is_unhealthy():
    PeriodicTask.objects.all().delete()
    periodic("flush", None)
    with pytest.raises(CommandError, match="not sent any periodic task yet"):
        call_command("beat_alive")
