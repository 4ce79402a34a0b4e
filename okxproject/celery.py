"""The one Celery app of okx-candles, configured from Django settings (namespace CELERY)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")

app = Celery("okxproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _install_collector_step() -> None:
    # The collectors worker hosts the WebSocket runtime as a worker service (`celery worker --collector`).
    from collectors.live.worker import COLLECTOR_OPTION, CollectorStep

    app.user_options["worker"].add(COLLECTOR_OPTION)
    app.steps["worker"].add(CollectorStep)


_install_collector_step()


def _bind_task_log_context() -> None:
    # Every line a task logs names the task and its id, whichever logger wrote it.
    from celery.signals import task_postrun, task_prerun

    from okxproject.logs import log_context

    open_contexts: dict[str, object] = {}

    @task_prerun.connect(weak=False)
    def _enter(task_id: str | None = None, task=None, **_: object) -> None:
        context = log_context(task=getattr(task, "name", "?"), task_id=task_id)
        context.__enter__()
        open_contexts[task_id or ""] = context

    @task_postrun.connect(weak=False)
    def _exit(task_id: str | None = None, **_: object) -> None:
        context = open_contexts.pop(task_id or "", None)
        if context is not None:
            context.__exit__(None, None, None)


_bind_task_log_context()
