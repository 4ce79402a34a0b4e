"""Who may read /metrics: anyone, or only Prometheus with `Authorization: Bearer <METRICS_TOKEN>` when set.

/metrics does not use the API's users and tokens: a scraper is configured with one static bearer token
(Prometheus' `authorization` setting), and the endpoint must stay reachable when API_READ_AUTH closes reads.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

SCRAPER = "metrics-token"  # request.auth of a request that presented the right token


def metrics_token() -> str:
    return getattr(settings, "METRICS_TOKEN", "") or ""


class MetricsTokenAuthentication(BaseAuthentication):
    """Checks `Authorization: Bearer <token>` against METRICS_TOKEN; other schemes are not its business."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, str] | None:
        token = metrics_token()
        parts = get_authorization_header(request).split()
        if not token or not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2 or not hmac.compare_digest(parts[1], token.encode()):
            raise AuthenticationFailed("Invalid metrics token.")
        return AnonymousUser(), SCRAPER

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="metrics"'


class MetricsTokenRequired(BasePermission):
    """Open when METRICS_TOKEN is empty; otherwise only for requests that presented it."""

    message = "The metrics bearer token is required."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return not metrics_token() or request.auth == SCRAPER


class MetricsTokenScheme(OpenApiAuthenticationExtension):
    """The token in the OpenAPI schema: a static bearer token, only required when METRICS_TOKEN is set."""

    target_class = MetricsTokenAuthentication
    name = "metricsToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "METRICS_TOKEN, when set (otherwise /metrics is open)."}
