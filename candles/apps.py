from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class CandlesConfig(AppConfig):
    name = "candles"
    verbose_name = "Candles"

    def ready(self) -> None:
        checks.register(check_utc_everywhere)


def check_utc_everywhere(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Open times are UTC instants; a local TIME_ZONE would shift every bar boundary the code computes."""
    errors = []
    if settings.TIME_ZONE != "UTC":
        errors.append(checks.Error(
            f"TIME_ZONE is {settings.TIME_ZONE!r}; okx-candles requires 'UTC'.",
            hint='Set TIME_ZONE = "UTC" in settings.', id="candles.E001",
        ))
    if not settings.USE_TZ:
        errors.append(checks.Error(
            "USE_TZ is off; okx-candles stores aware datetimes only.",
            hint="Set USE_TZ = True in settings.", id="candles.E002",
        ))
    return errors
