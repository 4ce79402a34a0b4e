"""Who may call the API and how often: tokens, staff sessions, open reads, throttling, CORS."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from tests.candles.api.fixtures import envelope_of

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.okxproject.api_probe_urls")]


def rates(anon: str | None, user: str | None):
    """Throttle rates for one test (the REST_FRAMEWORK setting, with every other key kept)."""
    from django.conf import settings

    return override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK,
                                             "DEFAULT_THROTTLE_RATES": {"anon": anon, "user": user}})


def test_reads_are_open_without_credentials(api):
    assert api.get("/api/v1/probe").status_code == 200


def test_writes_without_credentials_are_401_not_authenticated(api):
    response = api.post("/api/v1/probe", {"a": 1}, format="json")
    assert response.status_code == 401
    assert envelope_of(response)["error_code"] == "NOT_AUTHENTICATED"
    assert response["WWW-Authenticate"] == "Token"


def test_a_token_authenticates_writes(token_api, user):
    response = token_api.post("/api/v1/probe", {"a": 1}, format="json")
    assert response.status_code == 201
    assert response.json() == {"user": user.username, "body": {"a": 1}}


def test_a_wrong_token_is_401_authentication_failed_even_for_reads(api):
    api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = api.get("/api/v1/probe")
    assert response.status_code == 401
    assert envelope_of(response)["error_code"] == "AUTHENTICATION_FAILED"


def test_drf_create_token_issues_a_token_that_works(user):
    out = io.StringIO()
    call_command("drf_create_token", user.username, stdout=out)
    key = Token.objects.get(user=user).key
    assert key in out.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.post("/api/v1/probe", {}, format="json").status_code == 201


def test_a_staff_session_authenticates_writes_with_its_csrf_token(staff_api):
    staff_api.get("/admin/")  # sets the csrftoken cookie, as the admin pages do
    csrf = staff_api.cookies["csrftoken"].value
    response = staff_api.post("/api/v1/probe", {}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201
    assert response.json()["user"] == "ops"


def test_a_staff_session_without_csrf_token_is_403_permission_denied(staff_api):
    response = staff_api.post("/api/v1/probe", {}, format="json")
    assert response.status_code == 403
    assert envelope_of(response)["error_code"] == "PERMISSION_DENIED"


def test_a_session_of_a_user_who_is_not_staff_does_not_authenticate(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/v1/probe").json() == {"user": None}
    assert client.post("/api/v1/probe", {}, format="json").status_code == 401


@override_settings(API_READ_AUTH=True)
def test_with_api_read_auth_reads_need_credentials_too(api, token_api):
    response = api.get("/api/v1/probe")
    assert response.status_code == 401
    assert envelope_of(response)["error_code"] == "NOT_AUTHENTICATED"
    assert token_api.get("/api/v1/probe").status_code == 200


def test_the_default_rates_come_from_the_environment_settings():
    assert api_settings.DEFAULT_THROTTLE_RATES == {"anon": "600/min", "user": "3000/min"}


def test_an_anonymous_client_over_its_rate_gets_429_with_retry_after(api):
    with rates("3/min", "100/min"):
        statuses = [api.get("/api/v1/probe").status_code for _ in range(4)]
        response = api.get("/api/v1/probe")
    assert statuses == [200, 200, 200, 429]
    body = envelope_of(response)
    assert body["error_code"] == "RATE_LIMITED"
    assert 0 < int(response["Retry-After"]) <= 60
    assert body["details"]["retry_after_s"] == int(response["Retry-After"])


def test_clients_are_throttled_separately(api, token_api):
    other_address = APIClient(REMOTE_ADDR="10.1.2.3")
    with rates("2/min", "2/min"):
        assert [api.get("/api/v1/probe").status_code for _ in range(3)] == [200, 200, 429]
        assert other_address.get("/api/v1/probe").status_code == 200
        assert token_api.get("/api/v1/probe").status_code == 200


def test_x_forwarded_for_does_not_pick_another_bucket_without_trusted_proxies(api):
    with rates("1/min", "100/min"):
        assert api.get("/api/v1/probe", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 200
        assert api.get("/api/v1/probe", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 429


def test_a_rate_of_off_disables_throttling(api):
    with rates(None, None):
        assert {api.get("/api/v1/probe").status_code for _ in range(5)} == {200}


def test_an_unreachable_cache_lets_requests_through(api):
    from django.conf import settings

    dead = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    with rates("1/min", "1/min"), override_settings(CACHES=dead):
        assert [api.get("/api/v1/probe").status_code for _ in range(3)] == [200, 200, 200]


def test_cors_is_closed_by_default(api):
    response = api.get("/api/v1/probe", HTTP_ORIGIN="https://dash.example.com")
    assert "Access-Control-Allow-Origin" not in response


@override_settings(CORS_ALLOWED_ORIGINS=["https://dash.example.com"])
def test_cors_opens_to_listed_origins_and_exposes_the_request_id(api):
    response = api.get("/api/v1/probe", HTTP_ORIGIN="https://dash.example.com")
    assert response["Access-Control-Allow-Origin"] == "https://dash.example.com"
    assert "X-Request-ID" in response["Access-Control-Expose-Headers"]
    preflight = api.options("/api/v1/probe", HTTP_ORIGIN="https://dash.example.com",
                            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type")
    assert preflight.status_code == 200
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    other = api.get("/api/v1/probe", HTTP_ORIGIN="https://elsewhere.example")
    assert "Access-Control-Allow-Origin" not in other


