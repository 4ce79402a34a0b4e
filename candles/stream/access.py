"""Who may open the stream: the REST reads' rule (okxproject/api_access.py) for a WebSocket handshake.

Open unless API_READ_AUTH is on. Then: a DRF token, as `Authorization: Token <key>` or, for clients that
cannot set headers on a handshake (browsers), `?token=<key>`; or the session of an active staff user (the chart
page), accepted only from a page of this site: a browser sends the cookie to a WebSocket of any origin, so the
Origin header must name one of ALLOWED_HOSTS.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def presented_token(scope: dict) -> str | None:
    authorization = _header(scope, b"authorization")
    if authorization:
        kind, _, key = authorization.partition(" ")
        if kind.lower() == "token" and key.strip():
            return key.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    token = query.get("token", [None])[0]
    return token or None


def _same_site(scope: dict) -> bool:
    origin = _header(scope, b"origin")
    if not origin:
        return False
    # ALLOWED_HOSTS name hosts without ports, as Django matches a request's Host header.
    domain, _ = split_domain_port(urlsplit(origin).netloc)
    allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return bool(domain) and validate_host(domain, allowed)


def _token_exists(key: str) -> bool:
    from rest_framework.authtoken.models import Token

    return Token.objects.filter(key=key, user__is_active=True).exists()


_token_valid = database_sync_to_async(_token_exists, thread_sensitive=False)


async def may_read(scope: dict) -> bool:
    if not settings.API_READ_AUTH:
        return True
    token = presented_token(scope)
    if token is not None:
        return len(token) <= 64 and await _token_valid(token)
    user = scope.get("user")
    if user is None or not _same_site(scope):
        return False
    return bool(await database_sync_to_async(lambda: user.is_active and user.is_staff, thread_sensitive=False)())
