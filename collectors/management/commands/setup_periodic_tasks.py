"""Declare the beat schedule of okx-candles in django-celery-beat's tables. Idempotent.

The schedule lives here, in code: every run creates the declared periodic tasks that are missing, brings
changed ones back to their declaration, and removes "okx-candles: " tasks that are no longer declared.
Tasks of other names (added by hand in the admin) are left alone, and so is the `enabled` flag of an
existing task, so an operator can pause one in the admin without a deploy undoing it.

Each task expires about one period after it is sent, so ticks missed while workers are down do not pile
up in the queue and run all at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

PREFIX = "okx-candles: "
# Serialises concurrent runs (two containers starting at once) so neither trips on the other's rows.
_ADVISORY_LOCK_KEY = 0x6F6B785F62656174  # "okx_beat"


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str  # without PREFIX
    task: str
    every_s: float
    queue: str
    description: str

    @property
    def full_name(self) -> str:
        return PREFIX + self.name

    @property
    def expire_seconds(self) -> int:
        return max(1, math.ceil(self.every_s))

    @property
    def interval(self) -> tuple[int, str]:
        """(every, period) of the IntervalSchedule: whole seconds when possible, else microseconds."""
        if float(self.every_s).is_integer():
            return int(self.every_s), IntervalSchedule.SECONDS
        return int(Decimal(str(self.every_s)) * 1_000_000), IntervalSchedule.MICROSECONDS

    def __str__(self) -> str:
        return f"{self.task} every {self.every_s:g} s on queue {self.queue}, expires after {self.expire_seconds} s"


def declared_schedule() -> list[Periodic]:
    return [
        Periodic("flush buffer", "collectors.tasks.flush_buffer", settings.FLUSH_INTERVAL_S, "flush",
                 "Write the Redis live buffer to PostgreSQL."),
        Periodic("repair candles", "collectors.tasks.repair_candles", 5, "backfill",
                 "Fetch from OKX REST, in priority order, the candles that closed without a confirm push and "
                 "the missing ones."),
        Periodic("detect gaps", "collectors.tasks.detect_gaps", 10, "backfill",
                 "Record the holes among the candles closed since each series' watermark."),
        Periodic("check health", "collectors.tasks.check_health", 10, "default",
                 "End subscriptions of expired or delisted instruments, mark the others live/stale/error and "
                 "remove collectors that stopped."),
        Periodic("sync instruments", "collectors.tasks.sync_instruments", 600, "default",
                 "Sync SPOT, SWAP and FUTURES instruments from OKX; subscription rules follow new listings and "
                 "expired or delisted instruments' subscriptions end."),
        Periodic("maintain storage", "collectors.tasks.maintain_storage", settings.STORAGE_MAINTENANCE_INTERVAL_S,
                 "storage",
                 "Make candle partitions ahead, close out a finished one, drop those past their bar's retention "
                 "(archived first where the bar archives), expire gaps behind the horizon, prune old gap records."),
    ]


def _interval(every: int, period: str) -> IntervalSchedule:
    # IntervalSchedule has no unique constraint: reuse the oldest match rather than fail on duplicates.
    found = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
    return found or IntervalSchedule.objects.create(every=every, period=period)


def periodic_tasks_setup(schedule: list[Periodic]) -> dict[str, list[str]]:
    """Bring the "okx-candles: " periodic tasks in line with `schedule`. Returns names by what happened."""
    report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "removed": []}
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
        existing = {task.name: task for task in PeriodicTask.objects.filter(name__startswith=PREFIX)}
        for item in schedule:
            every, period = item.interval
            wanted = {
                "task": item.task, "interval": _interval(every, period), "crontab": None, "solar": None,
                "clocked": None, "args": "[]", "kwargs": "{}", "queue": item.queue, "exchange": None,
                "routing_key": None, "expires": None, "expire_seconds": item.expire_seconds, "one_off": False,
                "description": item.description,
            }
            task = existing.pop(item.full_name, None)
            if task is None:
                PeriodicTask.objects.create(name=item.full_name, enabled=True, **wanted)
                report["created"].append(item.full_name)
                continue
            if all(getattr(task, name) == value for name, value in wanted.items()):
                report["unchanged"].append(item.full_name)
                continue
            for name, value in wanted.items():
                setattr(task, name, value)
            task.save()
            report["updated"].append(item.full_name)
        for name, task in sorted(existing.items()):
            task.delete()  # one by one: PeriodicTask.delete tells beat that the schedule changed
            report["removed"].append(name)
    return report


class Command(BaseCommand):
    help = 'Create or update the periodic tasks of okx-candles (names "okx-candles: ...") and remove stale ones.'

    def handle(self, *args, **options) -> None:
        schedule = declared_schedule()
        report = periodic_tasks_setup(schedule)
        by_name = {item.full_name: item for item in schedule}
        for action in ("created", "updated", "removed"):
            for name in report[action]:
                detail = f": {by_name[name]}" if name in by_name else ""
                self.stdout.write(f"{action} {name}{detail}")
        if options["verbosity"] >= 2:
            for name in report["unchanged"]:
                self.stdout.write(f"unchanged {name}: {by_name[name]}")
        disabled = PeriodicTask.objects.filter(name__in=list(by_name), enabled=False).values_list("name", flat=True)
        for name in disabled:
            self.stdout.write(self.style.WARNING(f"{name} is disabled (in the admin); left disabled"))
        self.stdout.write(self.style.SUCCESS(
            "periodic tasks: " + ", ".join(f"{len(report[a])} {a}" for a in ("created", "updated", "unchanged",
                                                                               "removed"))
        ))
