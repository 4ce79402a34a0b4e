"""A URLconf for tests of the project-wide API machinery: the project's routes plus a few probe views."""

from __future__ import annotations

import logging

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from okxproject import urls as project_urls

logger = logging.getLogger("tests.api_probe")


class Probe(APIView):
    def get(self, request: Request) -> Response:
        logger.warning("probe read")
        return Response({"user": request.user.username or None})

    def post(self, request: Request) -> Response:
        return Response({"user": request.user.username, "body": request.data}, status=201)


class Boom(APIView):
    def get(self, request: Request) -> Response:
        raise RuntimeError("a bug in a view")


class DatabaseDown(APIView):
    def get(self, request: Request) -> Response:
        raise OperationalError("connection refused")


def plain_boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a plain Django view")


urlpatterns = [
    path("api/v1/probe", Probe.as_view()),
    path("api/v1/boom", Boom.as_view()),
    path("api/v1/database-down", DatabaseDown.as_view()),
    path("api/v1/plain-boom", plain_boom),
    path("site/plain-boom", plain_boom),
    *project_urls.urlpatterns,
]

handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500
