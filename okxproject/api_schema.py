"""OpenAPI generation (drf-spectacular) that documents the error envelope on every operation.

Each operation gets, next to what its view declares, the error responses it can really give: 400 when it
takes parameters or a body, 401/403 when its permission can refuse, 404 when its path names a resource, 406
for an Accept header it cannot serve, 415 for a body that is not JSON, 429 when it is throttled. Every
response documents the X-Request-ID header.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.authentication import SessionScheme
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers

from okxproject.api_access import ReadOpenWriteAuthenticated


class ErrorEnvelopeSerializer(serializers.Serializer):
    """The v1 contract's `ErrorResponse` (original design)."""

    status = serializers.ChoiceField(choices=["error"], help_text='Always "error".')
    error_code = serializers.CharField(help_text="Stable machine-readable code, e.g. SYMBOL_NOT_FOUND.")
    message = serializers.CharField(help_text="What went wrong, for people.")
    details = serializers.DictField(help_text="Structured context: invalid fields, unknown names, retry time.")
    request_id = serializers.CharField(allow_null=True, help_text="Also in the X-Request-ID header and the logs.")
    timestamp = serializers.DateTimeField()

    class Meta:
        ref_name = "ErrorEnvelope"


_ERRORS = {
    "400": "Invalid parameters or body (VALIDATION_ERROR, MALFORMED_REQUEST or an endpoint's own code).",
    "401": "No or invalid credentials (NOT_AUTHENTICATED, AUTHENTICATION_FAILED).",
    "403": "Not allowed (PERMISSION_DENIED), e.g. a session without its CSRF token.",
    "404": "Not found (NOT_FOUND or an endpoint's own *_NOT_FOUND code).",
    "406": "No acceptable representation for the Accept header (NOT_ACCEPTABLE).",
    "415": "The body is not JSON (UNSUPPORTED_MEDIA_TYPE).",
    "429": "Too many requests (RATE_LIMITED); Retry-After says when to retry.",
}

REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "schema": {"type": "string"},
        "description": "The request's id: the one sent by the client when sane, otherwise generated.",
    },
}


class StaffSessionScheme(SessionScheme):
    """The admin's session cookie (staff users), documented like DRF's session authentication."""

    target_class = "okxproject.api_access.StaffSessionAuthentication"


class EnvelopeAutoSchema(AutoSchema):
    def _error_codes(self) -> list[str]:
        codes = []
        has_body = self.method in {"POST", "PUT", "PATCH"}
        takes_query = any(p.get("in") == "query" for p in self._get_parameters())
        if has_body or takes_query:
            codes.append("400")
        if self.view.get_authenticators():
            codes.append("401")  # a wrong token is refused even where no credentials are needed
        perms = [p.__class__ for p in self.view.get_permissions()]
        if perms and permissions.AllowAny not in perms and self.method not in permissions.SAFE_METHODS:
            codes.append("403")  # refused writes (a staff session without its CSRF token, for one)
        if "{" in self.path:
            codes.append("404")
        codes.append("406")
        if has_body:
            codes.append("415")
        if self.view.get_throttles():
            codes.append("429")
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(ErrorEnvelopeSerializer, description=_ERRORS[code]), code,
                    media_types=["application/json"], direction=direction,
                )
        return dict(sorted(responses.items()))

    def _get_response_headers_for_code(self, status_code, direction="response"):
        return {**REQUEST_ID_HEADER, **super()._get_response_headers_for_code(status_code, direction)}

    def get_auth(self):
        auths = super().get_auth()
        # Our default permission lets anyone read unless API_READ_AUTH: say so (an empty requirement).
        perms = [p.__class__ for p in self.view.get_permissions()]
        read_open = (ReadOpenWriteAuthenticated in perms and self.method in permissions.SAFE_METHODS
                     and not settings.API_READ_AUTH)
        if read_open and {} not in auths:
            auths.append({})
        return auths
