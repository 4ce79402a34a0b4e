"""The one Celery app of okx-candles, configured from Django settings (namespace CELERY)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")

app = Celery("okxproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
