"""A request id for every HTTP request: in the response header, the error envelope and every log line.

A client (or a proxy in front of us) may send its own `X-Request-ID` so that one id follows a request across
systems; it is kept when it is sane (short, printable, no spaces), otherwise a new one is generated. The id
lives in a context variable while the request runs, so `RequestIdFilter` can stamp it on every log record
without anyone passing it around. It is cleared when the request finishes (Django's request_finished, sent
when the response is closed), not when the middleware returns: Django logs 4xx/5xx responses after the
middleware chain, and a streamed body is produced after it too.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase

HEADER = "X-Request-ID"
_META_KEY = "HTTP_X_REQUEST_ID"
# Printable ASCII without spaces or quotes, so the id is safe in headers, logs and JSON as it is.
_SANE = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served by this thread or task, None outside a request."""
    return _current.get()


def request_id_from(incoming: str | None) -> str:
    """The incoming id when sane, else a new random one."""
    if incoming and _SANE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets `request.request_id`, the context variable for logging, and the response header.

    Put it first in MIDDLEWARE so that every response, including errors made by other middleware, carries it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_from(request.META.get(_META_KEY))
        request.request_id = request_id
        _current.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


@receiver(request_finished)
def _clear_request_id(**kwargs: object) -> None:
    _current.set(None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record logged while a request runs (records outside requests are unchanged).

    okxproject.logs' context filter, placed after this one, prints it with the line's other context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _current.get()
        if request_id is not None:
            record.request_id = request_id
        return True
