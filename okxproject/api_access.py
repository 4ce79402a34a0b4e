"""Who may call the API, and how often: the project-wide DRF defaults named in settings.REST_FRAMEWORK.

* Writes need an authenticated user: a token (`Authorization: Token <key>`, made with
  `manage.py drf_create_token USER`) or the session of a staff user logged into the admin.
* Reads are open, unless API_READ_AUTH is on.
* Every client is throttled: anonymous ones by address, users by id, at rates from the environment. The
  counters live in the cache (Redis), so all web workers share them; when the cache is unreachable the
  throttle lets requests through rather than failing them (the API must stay readable, /health above all).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings: no import at run time
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class StaffSessionAuthentication(SessionAuthentication):
    """The admin's session, for staff users only; other logged-in users count as anonymous here."""

    def authenticate(self, request: Request):
        # As SessionAuthentication, but a user who is not staff is not authenticated here (and so is not
        # asked for a CSRF token either: such a write is simply unauthenticated, 401).
        user = getattr(request._request, "user", None)
        if not user or not user.is_active or not user.is_staff:
            return None
        self.enforce_csrf(request)
        return user, None


class ReadOpenWriteAuthenticated(BasePermission):
    """Safe methods open (unless settings.API_READ_AUTH), every other method for authenticated users."""

    message = "Authentication credentials were not provided."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS and not settings.API_READ_AUTH:
            return True
        if not hasattr(view, request.method.lower()):
            return True  # the view answers 405 METHOD_NOT_ALLOWED, which says more than 401 would
        return bool(request.user and request.user.is_authenticated)


class _FailOpen:
    """Mixin: a throttle whose cache is down lets the request through and logs it."""

    def get_rate(self) -> str | None:
        # Read on every request (DRF reads it once at import), so that changed settings apply at once.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # any cache backend error; the request is served unthrottled
            logger.warning("throttle cache unavailable, request not throttled: %r", exc)
            return True


class AnonThrottle(_FailOpen, AnonRateThrottle):
    pass


class UserThrottle(_FailOpen, UserRateThrottle):
    pass
