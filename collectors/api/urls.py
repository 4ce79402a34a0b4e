"""Routes of the status, health and metrics endpoints under /api/v1/."""

from django.urls import path

from collectors.api import views

urlpatterns = [
    path("status", views.StatusView.as_view(), name="status"),
    path("status/<str:symbol>", views.SymbolStatusView.as_view(), name="status-symbol"),
    path("health", views.HealthView.as_view(), name="health"),
    path("health/live", views.LivenessView.as_view(), name="health-live"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
]
