"""One error envelope everywhere under /api/: DRF errors, unknown routes, wrong methods, bugs, a lost database."""

from __future__ import annotations

import orjson
import pytest
from django.test import Client, RequestFactory, override_settings

from tests.candles.api.fixtures import envelope_of

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.okxproject.api_probe_urls")]


def test_an_unknown_route_under_api_is_the_envelope_not_found():
    response = Client().get("/api/v1/no/such/thing")
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "NOT_FOUND"


@override_settings(DEBUG=True)
def test_an_unknown_route_under_api_is_the_envelope_in_debug_too():
    response = Client().get("/api/nothing-here")
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "NOT_FOUND"


def test_an_unknown_route_outside_api_keeps_django_s_page():
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_a_method_the_view_lacks_is_405_with_the_envelope_even_without_credentials(api):
    response = api.delete("/api/v1/probe")
    assert response.status_code == 405
    assert envelope_of(response)["error_code"] == "METHOD_NOT_ALLOWED"


def test_a_bug_in_a_view_is_500_with_the_envelope_and_no_trace_of_it():
    response = Client(raise_request_exception=False).get("/api/v1/boom")
    assert response.status_code == 500
    body = envelope_of(response)
    assert body["error_code"] == "INTERNAL_ERROR"
    assert "a bug" not in response.content.decode()


def test_a_bug_in_a_plain_django_view_under_api_is_500_with_the_envelope():
    response = Client(raise_request_exception=False).get("/api/v1/plain-boom")
    assert response.status_code == 500
    assert envelope_of(response)["error_code"] == "INTERNAL_ERROR"


def test_a_bug_outside_api_keeps_django_s_error_page():
    response = Client(raise_request_exception=False).get("/site/plain-boom")
    assert response.status_code == 500
    assert not response["Content-Type"].startswith("application/json")


def test_a_lost_database_is_503_database_unavailable_with_retry_after():
    response = Client().get("/api/v1/database-down")
    assert response.status_code == 503
    assert envelope_of(response)["error_code"] == "DATABASE_UNAVAILABLE"
    assert response["Retry-After"] == "5"


def test_malformed_json_is_400_malformed_request(token_api):
    response = token_api.generic("POST", "/api/v1/probe", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "MALFORMED_REQUEST"


def test_a_body_that_is_not_json_is_415_unsupported_media_type(token_api):
    response = token_api.generic("POST", "/api/v1/probe", "a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert envelope_of(response)["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_an_accept_header_the_view_cannot_serve_is_406_not_acceptable(api):
    response = api.get("/api/v1/probe", HTTP_ACCEPT="application/xml")
    assert response.status_code == 406
    assert envelope_of(response)["error_code"] == "NOT_ACCEPTABLE"


def test_a_disallowed_host_under_api_is_400_with_the_envelope():
    response = Client(raise_request_exception=False).get("/api/v1/probe", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "BAD_REQUEST"


def test_a_write_to_an_unknown_route_under_api_is_404_not_a_csrf_failure():
    response = Client(enforce_csrf_checks=True).post("/api/v1/subscriptions/nothing", {})
    assert response.status_code == 404
    assert envelope_of(response)["error_code"] == "NOT_FOUND"


def test_a_csrf_failure_under_api_is_403_with_the_envelope():
    from okxproject.api_errors import csrf_failure

    request = RequestFactory().post("/api/v1/anything")
    request.request_id = "x"
    response = csrf_failure(request, "CSRF cookie not set.")
    assert response.status_code == 403
    assert orjson.loads(response.content)["error_code"] == "PERMISSION_DENIED"
