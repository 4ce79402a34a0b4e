"""Print the storage plan (what retention would drop, when each bar's next drop is due) and run one maintenance
run, as the beat task does, with a line per step. `--dry-run` prints the plan only and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from candles.retention import human_bytes, retention_plan
from collectors.maintenance import storage_maintain


def _when(moment: datetime | None) -> str:
    return "–" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "forever"
    if value % timedelta(days=1) == timedelta(0):
        return f"{value.days} days"
    return str(value)


class Command(BaseCommand):
    help = ("Show what storage maintenance would drop (per bar: retention, horizon, next drop), then run it: "
            "premake, one close-out, retention, gap expiry and pruning.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the plan only; change nothing")

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        self._plan(now)
        if options["dry_run"]:
            self.stdout.write("dry run: nothing changed")
            return
        self.stdout.write(f"maintenance at {_when(now)}")
        result = storage_maintain(now=now, progress=self.stdout.write)
        if result.skipped:
            raise CommandError("another maintenance run holds the lock; try again when it is done")
        style = self.style.WARNING if result.errors else self.style.SUCCESS
        self.stdout.write(style(f"done: {result}"))

    def _plan(self, now: datetime) -> None:
        self.stdout.write(f"storage plan at {_when(now)}")
        header = f"{'bar':<7} {'retention':<10} {'horizon':<21} {'leaves':>6} {'size':>9} {'rows':>14}  next drop"
        self.stdout.write(header)
        due_lines = []
        for plan in retention_plan(now=now):
            next_drop = _when(plan.next_drop)
            if plan.next_drop is not None and plan.next_drop <= now:
                next_drop += " (due)"
            self.stdout.write(f"{plan.bar:<7} {_duration(plan.retention):<10} {_when(plan.horizon):<21} "
                              f"{len(plan.leaves):>6} {human_bytes(plan.bytes):>9} {plan.live_rows:>14,}  {next_drop}")
            for leaf in plan.due:
                state = "detach pending, " if leaf.detach_pending else ""
                archive = "archive, then " if plan.archive else ""
                due_lines.append(f"  {plan.bar}: {leaf.name} [{_when(leaf.start)}, {_when(leaf.end)}) — {state}"
                                 f"{archive}drop: {leaf.live_rows:,} rows, {human_bytes(leaf.bytes)}")
            for table in plan.retired:
                archive = "archive, then " if plan.archive and not table.archived else ""
                due_lines.append(f"  {plan.bar}: {table.name} [{_when(table.start)}, {_when(table.end)}) — "
                                 f"detached, {archive}drop: {table.live_rows:,} rows, {human_bytes(table.bytes)}")
        if due_lines:
            self.stdout.write("to retire now:")
            for line in due_lines:
                self.stdout.write(line)
        else:
            self.stdout.write("to retire now: nothing")
