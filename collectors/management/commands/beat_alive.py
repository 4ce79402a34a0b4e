"""Exit 0 when Celery beat has sent a scheduled task recently, 1 otherwise: the compose healthcheck of beat.

    manage.py beat_alive [--within 600]

Beat (django-celery-beat's DatabaseScheduler) records when it last sent each periodic task, and writes those
times to the database every few minutes (celery's `sync_every`, 3 min). The flush task is due every second, so
a running beat always has a recent time: none within `--within` seconds means beat is stuck or gone.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from okxproject.cli import positive_seconds


class Command(BaseCommand):
    help = "Exit 0 when beat has sent a periodic task within --within seconds (default 600), 1 otherwise."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--within", type=positive_seconds, default=600.0, metavar="N",
                            help="seconds within which beat must have sent a task (default 600)")

    def handle(self, *args: Any, within: float, **options: Any) -> None:
        last = PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
        if last is None:
            raise CommandError("beat has not sent any periodic task yet")
        age = (timezone.now() - last).total_seconds()
        if age > within:
            raise CommandError(f"beat last sent a periodic task {age:.0f} s ago (more than {within:.0f} s)")
        self.stdout.write(f"beat sent a periodic task {max(age, 0):.0f} s ago")
