"""Every response carries X-Request-ID; a sane incoming id is kept; log lines of the request carry it."""

from __future__ import annotations

import io
import logging

import pytest

from okxproject.request_id import RequestIdFilter, request_id_from

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.okxproject.api_probe_urls")]


def test_a_response_carries_a_generated_request_id(api):
    first, second = api.get("/api/v1/probe"), api.get("/api/v1/probe")
    assert len(first["X-Request-ID"]) == 32
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_a_sane_incoming_request_id_is_kept_in_the_header_and_the_envelope(api):
    response = api.get("/api/v1/nowhere", HTTP_X_REQUEST_ID="lb-7f3a:42")
    assert response["X-Request-ID"] == "lb-7f3a:42"
    assert response.json()["request_id"] == "lb-7f3a:42"


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 129, "quote\"d", "new\nline", "ünïcode"])
def test_an_insane_incoming_request_id_is_replaced(incoming):
    assert request_id_from(incoming) != incoming
    assert len(request_id_from(incoming)) == 32


def test_pages_outside_the_api_carry_a_request_id_too(client):
    assert client.get("/no-such-page/")["X-Request-ID"]


@pytest.fixture
def console():
    """The project's console handler (the one with the request id filter), writing into a buffer."""
    handler = next(h for h in logging.getLogger().handlers if any(isinstance(f, RequestIdFilter) for f in h.filters))
    stream = io.StringIO()
    saved = handler.setStream(stream)
    yield stream
    handler.setStream(saved)


def test_lines_logged_while_a_request_runs_carry_its_id_and_later_lines_do_not(api, console):
    response = api.get("/api/v1/probe", HTTP_X_REQUEST_ID="trace-123")
    logging.getLogger("tests.api_probe").warning("after the request")
    lines = console.getvalue().splitlines()
    (during,) = [line for line in lines if "probe read" in line]
    (after,) = [line for line in lines if "after the request" in line]
    assert response["X-Request-ID"] == "trace-123"
    assert "request_id=trace-123" in during
    assert "request_id" not in after


def test_django_s_own_line_about_a_failed_request_carries_its_id(api, console):
    response = api.get("/api/v1/nowhere")
    (line,) = [line for line in console.getvalue().splitlines() if "Not Found: /api/v1/nowhere" in line]
    assert f"request_id={response['X-Request-ID']}" in line
