from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "okx-candles"
admin.site.site_title = "okx-candles admin"
admin.site.index_title = "Instruments, subscriptions and candles"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("candles.api.urls")),
    path("api/v1/", include("collectors.api.urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
