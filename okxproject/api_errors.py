"""One error envelope for every error the API returns.

    {"status": "error", "error_code": "SYMBOL_NOT_FOUND", "message": "...", "details": {...}, "request_id": "...",
     "timestamp": "2024-01-16T19:00:00.123Z"}

The fields are the v1 contract's `ErrorResponse` (original design); `status` is always "error", so a client can
tell an error from a result by the body alone.

Views raise `ApiError` (or any DRF exception); `exception_handler` (DRF's EXCEPTION_HANDLER) turns it into the
envelope. Errors that happen outside a DRF view under /api/ (no route matched, an uncaught exception) get the
same envelope from the Django handlers at the end of this module, which okxproject/urls.py installs.

Error responses are plain Django responses, not DRF `Response`s, so that they are JSON whatever renderer the
request negotiated (a CSV request with a bad parameter gets a JSON error, as documented).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.views import set_rollback

from okxproject.request_id import current_request_id

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


class ApiError(exceptions.APIException):
    """An API error with its own error code (the envelope's `error_code`), HTTP status and details."""

    status_code = 400
    default_code = "BAD_REQUEST"
    default_detail = "Bad request."

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail=message, code=code or self.default_code)
        if status is not None:
            self.status_code = status
        self.error_code = code or self.default_code
        self.details = dict(details or {})


class NotFoundError(ApiError):
    status_code = 404
    default_code = "NOT_FOUND"


# DRF's own exceptions, by class; the first match wins, so subclasses come before their bases.
_CODES: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (exceptions.ValidationError, "VALIDATION_ERROR"),
    (exceptions.ParseError, "MALFORMED_REQUEST"),
    (exceptions.AuthenticationFailed, "AUTHENTICATION_FAILED"),
    (exceptions.NotAuthenticated, "NOT_AUTHENTICATED"),
    (exceptions.PermissionDenied, "PERMISSION_DENIED"),
    (exceptions.NotFound, "NOT_FOUND"),
    (exceptions.MethodNotAllowed, "METHOD_NOT_ALLOWED"),
    (exceptions.NotAcceptable, "NOT_ACCEPTABLE"),
    (exceptions.UnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE"),
    (exceptions.Throttled, "RATE_LIMITED"),
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_default(value: object) -> str:
    # Lazy translations in DRF's messages, Decimals in details.
    return str(value)


def json_bytes(data: object) -> bytes:
    """orjson, with the standard library for what orjson refuses (integers beyond 64 bits, echoed from input)."""
    try:
        return orjson.dumps(data, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(data, default=_json_default, separators=(",", ":")).encode()


def error_response(
    status: int, error_code: str, message: str, details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    body = {
        "status": "error",
        "error_code": error_code,
        "message": message,
        "details": dict(details or {}),
        "request_id": current_request_id(),
        "timestamp": now_iso(),
    }
    return HttpResponse(
        json_bytes(body), status=status, content_type="application/json",
        headers=headers,
    )


def _validation_details(detail: Any) -> dict[str, Any]:
    if isinstance(detail, Mapping):
        return dict(detail)
    return {"non_field_errors": detail if isinstance(detail, list) else [detail]}


def _code_of(exc: exceptions.APIException) -> str:
    if isinstance(exc, ApiError):
        return exc.error_code
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    # Another module's APIException subclass: its code is the error code ("symbol_not_found" works too).
    codes = exc.get_codes()
    return (codes if isinstance(codes, str) else exc.default_code).upper()


def envelope_for(exc: exceptions.APIException) -> HttpResponse:
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    details: dict[str, Any] = {}
    message = str(exc.detail) if isinstance(exc.detail, str) else str(exc.default_detail)
    if isinstance(exc, ApiError):
        details = exc.details
    elif isinstance(exc, exceptions.ValidationError):
        details = _validation_details(exc.detail)
        message = "The request has invalid parameters; see details."
    elif isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(int(exc.wait))
        details = {"retry_after_s": int(exc.wait)}
    elif isinstance(exc.detail, Mapping | list):
        details = _validation_details(exc.detail)
    return error_response(exc.status_code, _code_of(exc), message, details, headers)


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: every error of a DRF view as the envelope.

    Returns None for unexpected exceptions, so that Django logs them and answers with `handler500` (the
    envelope under /api/; the debug page when DEBUG is on).
    """
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is down or unreachable: a condition to retry later, not a bug.
        set_rollback()
        logger.error("database unavailable while serving %s", context.get("request"), exc_info=exc)
        return error_response(503, "DATABASE_UNAVAILABLE", "The database is unavailable; retry later.",
                              headers={"Retry-After": "5"})
    if not isinstance(exc, exceptions.APIException):
        return None
    set_rollback()
    return envelope_for(exc)


# --- Django's handlers (installed in okxproject/urls.py) -------------------------------------------------


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


@csrf_exempt  # a POST to a route that does not exist is a 404, not a CSRF failure
def api_not_found(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    """The catch-all route under /api/: no endpoint here (also in DEBUG, where handler404 is not used)."""
    return error_response(404, "NOT_FOUND", f"No endpoint at {request.path}.")


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        return error_response(400, "BAD_REQUEST", "Bad request.")
    return defaults.bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        return error_response(403, "PERMISSION_DENIED", "You do not have permission to perform this action.")
    return defaults.permission_denied(request, exception)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the envelope under /api/ (DRF views check CSRF themselves; this is the rest)."""
    if is_api(request):
        return error_response(403, "PERMISSION_DENIED", f"CSRF check failed: {reason}")
    return csrf.csrf_failure(request, reason)


def handler500(request: HttpRequest) -> HttpResponse:
    if is_api(request):
        return error_response(500, "INTERNAL_ERROR", "Internal server error; the request id identifies it in "
                                                      "the logs.")
    return defaults.server_error(request)
