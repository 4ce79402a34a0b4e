from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CollectorsConfig(AppConfig):
    name = "collectors"
    verbose_name = "Collectors"

    def ready(self) -> None:
        from collectors import signals  # noqa: F401  (connects the receivers)


class OkxAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with okx-candles' own site (the pipeline dashboard as its index) as the default."""

    default = False  # collectors' own app config stays CollectorsConfig
    default_site = "collectors.admin_site.PipelineAdminSite"
