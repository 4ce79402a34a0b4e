"""Routes of the candle, subscription, rule, instrument, timeframe, statistics and market endpoints under /api/v1/."""

from django.urls import path

from candles.api import views_archives, views_data, views_market, views_reference, views_rules, views_subscriptions

urlpatterns = [
    path("subscribe", views_subscriptions.SubscribeView.as_view(), name="api-subscribe"),
    path("subscribe/<str:symbol>", views_subscriptions.UnsubscribeView.as_view(), name="api-unsubscribe"),
    path("subscriptions", views_subscriptions.SubscriptionListView.as_view(), name="api-subscriptions"),
    path("subscriptions/<int:pk>", views_subscriptions.SubscriptionDetailView.as_view(), name="api-subscription"),
    path("rules", views_rules.RuleListView.as_view(), name="api-rules"),
    path("rules/<int:pk>", views_rules.RuleDetailView.as_view(), name="api-rule"),
    path("data/<str:symbol>/<str:timeframe>", views_data.CandleDataView.as_view(), name="api-data"),
    path("data/<str:symbol>/<str:timeframe>/latest", views_data.LatestCandleView.as_view(), name="api-data-latest"),
    path("statistics/<str:symbol>", views_market.StatisticsView.as_view(), name="api-statistics"),
    path("market/overview", views_market.MarketOverviewView.as_view(), name="api-market-overview"),
    path("instruments", views_reference.InstrumentListView.as_view(), name="api-instruments"),
    path("timeframes", views_reference.TimeframeListView.as_view(), name="api-timeframes"),
    path("archives", views_archives.ArchiveListView.as_view(), name="api-archives"),
]
