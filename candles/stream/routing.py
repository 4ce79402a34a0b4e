"""WebSocket routes (okxproject/asgi.py mounts them)."""

from django.urls import path, re_path

from candles.stream.consumer import NoSuchStreamConsumer, StreamConsumer

websocket_urlpatterns = [
    path("api/v1/stream", StreamConsumer.as_asgi()),
    re_path(r"", NoSuchStreamConsumer.as_asgi()),
]
