"""Subscription changes reach the collectors through Redis at once (they also reconcile every few seconds)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from candles.models import Instrument, Subscription, Timeframe
from candles.signals import subscriptions_changed


@pytest.fixture
def control(settings):
    settings.REDIS_KEY_PREFIX = f"test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(f"{settings.REDIS_KEY_PREFIX}control")
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    yield pubsub
    pubsub.close()


def next_message(pubsub, timeout: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            return message["data"]
    return None


@pytest.mark.django_db
def test_saving_a_subscription_nudges_the_collectors_after_commit(control, django_capture_on_commit_callbacks):
    instrument = Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code="1m"))
    assert next_message(control, timeout=0.3) is None  # nothing before the commit
    for callback in callbacks:
        callback()
    assert next_message(control) == b"reconcile"


def test_a_bulk_change_signal_nudges_the_collectors(control):
    subscriptions_changed.send(sender=Subscription)
    assert next_message(control) == b"reconcile"
