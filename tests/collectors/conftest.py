"""Fixtures shared by the collectors' tests: Redis, the pipeline's keys under a prefix of the test's own, staff."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_lib
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from okxproject.keys import Keys
from tests.support import isolated_keys


@pytest.fixture
def redis() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(django_settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def keys(redis, settings) -> Iterator[Keys]:
    """The pipeline's keys (REST budget, dead letters, reports, status) under a prefix of this test's own; the
    admin and the tasks it queues use them too."""
    with isolated_keys(redis) as keys:
        settings.REDIS_KEY_PREFIX = keys.prefix
        yield keys


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests"))
    return client
