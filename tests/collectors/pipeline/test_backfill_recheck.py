"""Gap checks after a channel's (re)subscription, as the collectors request them, against the real services.

`redis` and `keys` (a prefix of the test's own) come from tests/collectors/conftest.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Gap, Subscription, Timeframe
from collectors.pipeline import backfill
from collectors.pipeline.backfill import gaps_recheck
from collectors.pipeline.keys import Keys

MINUTE = 60_000


@pytest.fixture
def recent_hours(settings) -> int:
    settings.BACKFILL_RECENT_HOURS = 6
    return 6


def subscribe(instrument, name: str, now: datetime, **fields) -> Subscription:
    listed = instrument(name, listed_at=now - timedelta(days=3))
    return Subscription.objects.create(instrument=listed, timeframe=Timeframe.objects.get(code="1m"), **fields)


def window_before(spec, now: datetime, subscribed_ms: int) -> list[int]:
    """Every 1m open time the recheck looks at: the recent window up to the candle open at the subscription,
    closed candles only."""
    start = spec.ceil(datetime_to_ms(now - timedelta(hours=6)))
    end = min(spec.floor(subscribed_ms), spec.floor(datetime_to_ms(now)) - MINUTE)
    return list(range(start, end + 1, MINUTE))


def request(redis, keys: Keys, sub: Subscription, subscribed_ms: int) -> bytes:
    member = f"{sub.instrument.inst_id}|{sub.timeframe.code}|{subscribed_ms}".encode()
    redis.sadd(keys.gap_recheck, member)
    return member


@pytest.mark.django_db
def test_a_hole_before_the_resubscription_becomes_a_gap_and_the_request_is_done(
        redis, keys, instrument, stored_candles, tf, recent_hours):
    now = timezone.now()
    sub = subscribe(instrument, "XRP-USDT", now)
    subscribed_ms = datetime_to_ms(now) - 10_000
    window = window_before(tf("1m").spec, now, subscribed_ms)
    stored_candles(sub.instrument, "1m", window[:-3])  # the last three closed while it was disconnected
    request(redis, keys, sub, subscribed_ms)

    assert gaps_recheck(redis=redis, keys=keys, now=now) == 1

    gap = sub.gaps.get()
    assert (gap.start, gap.missing) == (ms_to_datetime(window[-3]), 3)
    assert redis.smembers(keys.gap_recheck) == set()
    assert gaps_recheck(redis=redis, keys=keys, now=now) == 0


@pytest.mark.django_db
def test_a_request_waits_until_the_live_buffer_had_time_to_deliver(redis, keys, instrument, recent_hours):
    now = timezone.now()
    sub = subscribe(instrument, "XRP-USDT", now)
    member = request(redis, keys, sub, datetime_to_ms(now - backfill.RECHECK_DELAY) + 1)

    assert gaps_recheck(redis=redis, keys=keys, now=now) == 0
    assert redis.smembers(keys.gap_recheck) == {member}
    assert Gap.objects.count() == 0


@pytest.mark.django_db
def test_complete_channels_are_settled_in_one_statement_not_a_detection_each(
        redis, keys, instrument, stored_candles, tf, recent_hours, django_assert_max_num_queries):
    now = timezone.now()
    subscribed_ms = datetime_to_ms(now) - 10_000
    window = window_before(tf("1m").spec, now, subscribed_ms)
    subs = [subscribe(instrument, f"C{i}-USDT", now) for i in range(8)]
    for sub in subs:
        stored_candles(sub.instrument, "1m", window)
        request(redis, keys, sub, subscribed_ms)

    with django_assert_max_num_queries(3):  # the subscriptions, their timeframes, the complete set
        assert gaps_recheck(redis=redis, keys=keys, now=now) == 0

    assert redis.smembers(keys.gap_recheck) == set()
    assert Gap.objects.count() == 0


@pytest.mark.django_db
def test_requests_of_gone_or_paused_subscriptions_and_garbage_are_dropped(redis, keys, instrument, recent_hours):
    now = timezone.now()
    paused = subscribe(instrument, "XRP-USDT", now, is_active=False)
    request(redis, keys, paused, datetime_to_ms(now) - 10_000)
    redis.sadd(keys.gap_recheck, b"NOPE-USDT|1m|1", b"not a request")

    assert gaps_recheck(redis=redis, keys=keys, now=now) == 0

    assert redis.smembers(keys.gap_recheck) == set()
    assert Gap.objects.count() == 0


@pytest.mark.django_db
def test_a_failing_detection_keeps_its_request_and_does_not_hold_up_the_others(
        redis, keys, instrument, stored_candles, tf, recent_hours, monkeypatch):
    now = timezone.now()
    subscribed_ms = datetime_to_ms(now) - 10_000
    window = window_before(tf("1m").spec, now, subscribed_ms)
    failing, fine = subscribe(instrument, "BAD-USDT", now), subscribe(instrument, "OK-USDT", now)
    for sub in (failing, fine):
        stored_candles(sub.instrument, "1m", window[:-1])
    failing_request = request(redis, keys, failing, subscribed_ms)
    request(redis, keys, fine, subscribed_ms)
    real_detect = backfill.gaps_detect

    def detect(*, subscription_id: int, **kwargs):
        if subscription_id == failing.pk:
            raise RuntimeError("database hiccup")
        return real_detect(subscription_id=subscription_id, **kwargs)

    monkeypatch.setattr(backfill, "gaps_detect", detect)

    with pytest.raises(RuntimeError, match="database hiccup"):
        gaps_recheck(redis=redis, keys=keys, now=now)

    assert fine.gaps.count() == 1
    assert redis.smembers(keys.gap_recheck) == {failing_request}


@pytest.mark.django_db
def test_two_requests_of_one_channel_are_checked_once_up_to_the_later(
        redis, keys, instrument, stored_candles, tf, recent_hours):
    now = timezone.now()
    sub = subscribe(instrument, "XRP-USDT", now)
    later_ms = datetime_to_ms(now) - 10_000
    window = window_before(tf("1m").spec, now, later_ms)
    stored_candles(sub.instrument, "1m", window[:-2])
    request(redis, keys, sub, later_ms - 5 * MINUTE)
    request(redis, keys, sub, later_ms)

    assert gaps_recheck(redis=redis, keys=keys, now=now) == 1

    assert sub.gaps.get().missing == 2
    assert redis.smembers(keys.gap_recheck) == set()


@pytest.mark.django_db
def test_a_new_subscription_collecting_from_after_its_subscription_needs_no_detection(
        redis, keys, instrument, recent_hours, full_detections):
    now = timezone.now()
    fresh = subscribe(instrument, "NEW-USDT", now, backfill_from=now + timedelta(seconds=30))
    request(redis, keys, fresh, datetime_to_ms(now) - 10_000)

    assert gaps_recheck(redis=redis, keys=keys, now=now) == 0

    assert full_detections == []
    assert redis.smembers(keys.gap_recheck) == set()
