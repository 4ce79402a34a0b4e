"""The admin site of okx-candles: Django's AdminSite with the pipeline dashboard as its index and the pipeline
pages (dashboard alone, dead letters) beside the model screens. Installed as the default site by
`collectors.apps.OkxAdminConfig`, so every `@admin.register` in the project lands here."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path


class PipelineAdminSite(admin.AdminSite):
    site_header = "okx-candles"
    site_title = "okx-candles admin"
    index_title = "Instruments, subscriptions and candles"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        # Imported here: the site is built while the admin modules are being imported (the first
        # `admin.register`), before the screens it links to can be.
        from collectors.admin_dashboard import dashboard_view
        from collectors.admin_dead_letters import dead_letters_view

        return [
            path("pipeline/", self.admin_view(lambda request: dashboard_view(self, request)),
                 name="pipeline_dashboard"),
            path("pipeline/dead-letters/", self.admin_view(lambda request: dead_letters_view(self, request)),
                 name="pipeline_dead_letters"),
            *super().get_urls(),
        ]

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from collectors.admin_dashboard import dashboard_context

        return super().index(request, extra_context={**dashboard_context(), **(extra_context or {})})
