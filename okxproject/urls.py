from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from okxproject import api_errors
from okxproject.api_docs import ApiDocsView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("candles.api.urls")),
    path("api/v1/", include("collectors.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(), name="api-docs"),
    # Anything else under /api/ is the envelope's NOT_FOUND, in DEBUG too (where handler404 is not used).
    re_path(r"^api/", api_errors.api_not_found),
    path("", include("candles.chart_urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]

handler400 = api_errors.handler400
handler403 = api_errors.handler403
handler404 = api_errors.handler404
handler500 = api_errors.handler500
