"""The ASGI application: Django's HTTP views and the live candle stream (Django Channels) on one port.

Served by uvicorn (`make run`, compose). Static files are served here only when SERVE_STATIC is on (local runs
and the compose stack, which have no proxy in front).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
# Under ASGI each request runs its sync code in a thread of its own, so a connection kept for reuse would stay with
# a thread nobody reuses: ASGI processes close theirs after each use unless DB_CONN_MAX_AGE says otherwise.
os.environ.setdefault("DB_CONN_MAX_AGE", "0")

# Django is set up before anything imports models (the stream's consumers do).
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from candles.stream.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": ASGIStaticFilesHandler(django_application) if settings.SERVE_STATIC else django_application,
    "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
})
