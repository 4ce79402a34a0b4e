"""Routes of the status, health and metrics endpoints under /api/v1/."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
