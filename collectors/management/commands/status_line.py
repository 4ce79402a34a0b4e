"""Print one status line every N seconds until stopped: the console of `make run`.

    manage.py status_line [--every 10] [--count N]

With `--count`, the exit status says whether the last line could read Redis (the compose healthcheck of the
console). Each line says how many collectors are alive, the channels they hold, candle updates and flushed rows per
second, the time since the last flush, the buffer, the open gaps and the REST budget nearest its limit (see
`collectors.monitoring.status_line`). Redis or PostgreSQL being away is said on the line, and the next line
tries again: the console keeps running through what it reports.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from collectors.monitoring.status_line import REDIS_DOWN, StatusReading, status_line, status_reading
from collectors.shared.connections import pipeline_keys, redis_client
from okxproject.cli import positive_seconds, raw_stream, redacted_url, sigterm_as_interrupt


class Command(BaseCommand):
    help = ("Print one status line every N seconds (collectors, channels, updates/s, flush lag, buffer, open gaps, "
            "REST budget use) until Ctrl-C or SIGTERM.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=positive_seconds, default=10.0, metavar="N",
                            help="seconds between lines (default 10)")
        parser.add_argument("--count", type=int, metavar="N", help="stop after N lines (default: never)")

    def handle(self, *args: Any, every: float, count: int | None, **options: Any) -> None:
        out = raw_stream(self.stdout)
        keys, redis = pipeline_keys(), redis_client()
        before: StatusReading | None = None
        printed = 0
        failure: str | None = None
        with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            while count is None or printed < count:
                close_old_connections()  # a connection PostgreSQL dropped since the last line is replaced
                stamp = datetime.now(UTC).strftime("%H:%M:%SZ")
                try:
                    reading = status_reading(redis, keys)
                except REDIS_DOWN as exc:
                    line = failure = f"Redis ({redacted_url(settings.REDIS_URL)}) unreachable: {exc}"
                    before = None
                else:
                    line = status_line(reading, before)
                    before, failure = reading, None
                out.write(f"status {stamp}  {line}\n")
                out.flush()
                printed += 1
                if count is None or printed < count:
                    time.sleep(every)
        if failure is not None:
            raise CommandError(failure)
