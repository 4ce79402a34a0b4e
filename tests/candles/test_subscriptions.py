"""Subscription services: create (idempotent, all unknown names at once), pause, update."""

from __future__ import annotations

import pytest

from candles.models import Subscription, SubscriptionStatus
from candles.signals import subscriptions_changed
from candles.subscriptions import UnknownNames, subscription_update, subscriptions_create, subscriptions_pause
from tests.conftest import utc

pytestmark = pytest.mark.django_db


@pytest.fixture
def two(instrument):
    instrument("BTC-USDT")
    instrument("ETH-USDT")
    return subscriptions_create(inst_ids=["BTC-USDT", "ETH-USDT"], bars=["1m", "1H"])


def test_unknown_names_lists_every_unknown_instrument_and_bar(instrument):
    instrument("BTC-USDT")
    with pytest.raises(UnknownNames) as caught:
        subscriptions_create(inst_ids=["BTC-USDT", "X-USDT"], bars=["1m", "1h"])
    assert caught.value.unknown == {"instruments": ["X-USDT"], "timeframes": ["1h"]}
    assert (caught.value.kind, caught.value.names) == ("instruments", ["X-USDT"])
    assert str(caught.value) == "unknown instruments: X-USDT; unknown timeframes: 1h"


def test_only_unknown_bars_name_the_timeframes_kind(instrument):
    instrument("BTC-USDT")
    with pytest.raises(UnknownNames) as caught:
        subscriptions_create(inst_ids=["BTC-USDT"], bars=["1d"])
    assert (caught.value.kind, caught.value.names) == ("timeframes", ["1d"])


def test_pause_stops_every_active_bar_of_one_instrument_and_signals_after_commit(
        two, django_capture_on_commit_callbacks):
    sent = []
    subscriptions_changed.connect(receiver := lambda sender, **kw: sent.append(sender))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            paused = subscriptions_pause(inst_id="BTC-USDT")
    finally:
        subscriptions_changed.disconnect(receiver)
    assert sorted(s.timeframe.code for s in paused) == ["1H", "1m"]
    assert not any(s.is_active for s in paused)
    assert set(Subscription.objects.filter(is_active=True).values_list("instrument__inst_id", flat=True)) == {
        "ETH-USDT"}
    assert sent == [Subscription]


def test_pause_of_one_bar_and_of_nothing_active(two):
    assert [s.timeframe.code for s in subscriptions_pause(inst_id="BTC-USDT", bars=["1H"])] == ["1H"]
    assert subscriptions_pause(inst_id="BTC-USDT", bars=["1H"]) == []
    assert subscriptions_pause(inst_id="NOPE-USDT") == []


def test_update_resumes_as_pending_and_saves_only_what_changed(two):
    sub = two.created[0]
    Subscription.objects.filter(pk=sub.pk).update(is_active=False, status=SubscriptionStatus.ERROR)
    sub.refresh_from_db()
    subscription_update(subscription=sub, is_active=True, webhook_url="https://h.example.com",
                        backfill_from=utc(2024, 1, 1))
    sub.refresh_from_db()
    assert (sub.is_active, sub.status, sub.webhook_url, sub.backfill_from) == (
        True, SubscriptionStatus.PENDING, "https://h.example.com", utc(2024, 1, 1))
    subscription_update(subscription=sub, backfill_from=None)
    sub.refresh_from_db()
    assert sub.backfill_from is None
    assert sub.webhook_url == "https://h.example.com"
