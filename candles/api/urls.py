"""Routes of the candle, subscription, instrument and timeframe endpoints under /api/v1/."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
