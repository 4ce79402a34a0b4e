"""The one Celery app of okx-candles, configured from Django settings (namespace CELERY)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")

app = Celery("okxproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _install_collector_step() -> None:
    # The collectors worker hosts the WebSocket runtime as a worker service (`celery worker --collector`).
    from collectors.worker import COLLECTOR_OPTION, CollectorStep

    app.user_options["worker"].add(COLLECTOR_OPTION)
    app.steps["worker"].add(CollectorStep)


_install_collector_step()
