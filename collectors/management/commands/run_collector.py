"""Run the collector runtime alone in the foreground (development, or a host without Celery workers)."""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand

from collectors.live.hosting import runtime_from_settings


class Command(BaseCommand):
    help = "Run the OKX collector runtime in the foreground until Ctrl-C or SIGTERM (same runtime as the worker)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--id", default="", help="collector id (default host:pid)")

    def handle(self, *args, **options) -> None:
        runtime = runtime_from_settings(options["id"])
        self.stdout.write(f"collector {runtime.config.collector_id}: {runtime.config.ws_url}, "
                          f"{runtime.config.shards} shards; Ctrl-C stops")

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await runtime.run(stop)

        asyncio.run(main())
        self.stdout.write("collector stopped")
