"""Fixtures for tests of the REST API (imported by the conftest files of the API test packages).

Throttle counters live in the real Redis cache; every test gets a key prefix of its own, so parallel runs
never share a bucket and nothing is left behind.
"""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from redis import Redis
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def isolated_cache():
    prefix = f"test:{uuid.uuid4().hex}:cache"
    caches = {"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}}
    with override_settings(CACHES=caches):
        yield prefix
    redis = Redis.from_url(settings.CACHES["default"]["LOCATION"])
    names = list(redis.scan_iter(match=f"{prefix}*", count=1000))
    if names:
        redis.delete(*names)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("quant", "quant@example.com", "pw-for-tests")


@pytest.fixture
def token(user) -> str:
    return Token.objects.create(user=user).key


@pytest.fixture
def token_api(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def staff_api(db) -> APIClient:
    staff = get_user_model().objects.create_user("ops", "ops@example.com", "pw-for-tests", is_staff=True)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff)
    return client


def envelope_of(response) -> dict:
    """The error envelope, checked for its shape and its request id against the response header."""
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == {"status", "error_code", "message", "details", "request_id", "timestamp"}, body
    assert body["status"] == "error"
    assert body["request_id"] == response["X-Request-ID"]
    assert isinstance(body["details"], dict)
    assert body["message"]
    assert body["timestamp"].endswith("Z")
    return body
