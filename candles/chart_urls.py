"""Route of the chart page; okxproject/urls.py includes it at the root."""

from django.urls import path

from candles.chart import chart_page

urlpatterns = [
    path("chart/", chart_page, name="chart"),
]
