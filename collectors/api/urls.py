"""Routes of the status, health and metrics endpoints under /api/v1/."""

from django.urls import path

from collectors.api import views

urlpatterns = [
    path("status", views.StatusView.as_view(), name="status"),
    # Before status/<symbol>: "subscriptions" is not an OKX instrument id (no dash), so nothing is shadowed.
    path("status/subscriptions", views.SubscriptionStatusListView.as_view(), name="status-subscriptions"),
    path("status/<str:symbol>", views.SymbolStatusView.as_view(), name="status-symbol"),
    path("health", views.HealthView.as_view(), name="health"),
    path("health/live", views.LivenessView.as_view(), name="health-live"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
]
