"""Hosts the collector runtime in the Celery worker started with `--collector` (the `collectors` worker).

A worker-level service, not a task: it holds no pool slot, has no time limit and is not redelivered;
it starts with the worker and stops with it.
"""

from __future__ import annotations

import logging

import click
from celery import bootsteps

logger = logging.getLogger(__name__)

COLLECTOR_OPTION = click.Option(
    ("--collector",), is_flag=True, default=False,
    help="Run the OKX collector runtime inside this worker (use with -Q collectors).",
)


class CollectorStep(bootsteps.StartStopStep):
    def __init__(self, parent, collector: bool = False, **options):
        super().__init__(parent, **options)
        self.enabled = bool(collector)
        self.thread = None

    def start(self, parent) -> None:
        from collectors.live.hosting import CollectorThread

        self.thread = CollectorThread(collector_id=f"{parent.hostname}")
        self.thread.start()
        logger.info("collector runtime started in worker %s", parent.hostname)

    def stop(self, parent) -> None:
        if self.thread is not None:
            self.thread.stop()
            logger.info("collector runtime stopped")

    shutdown = stop
