"""Gaps and the retention horizon: nothing is recorded behind it, unfinished gaps behind it expire (the scheduler
never spends REST on them), gaps reaching over it are trimmed, finished gap records are pruned after a while."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.gaps import gaps_expire, gaps_prune
from candles.models import Gap, GapState, Instrument, RepairPriority, Subscription, Timeframe
from collectors.repair.detect import DETECT_SETTLE, detection_advance, gaps_detect
from collectors.repair.reach import CANDLES_LANE, HISTORY_LANE
from collectors.repair.schedule import gaps_due, gaps_next

pytestmark = pytest.mark.django_db
SECOND, MINUTE = 1000, 60_000
RETENTION = timedelta(hours=1)


@pytest.fixture
def now():
    # On a whole second, so the 1s horizon is an open time and the arithmetic below stays exact.
    return ms_to_datetime(datetime_to_ms(timezone.now()) // 1000 * 1000)


@pytest.fixture
def one_hour_of_1s():
    """`1s` keeps an hour (its horizon is now − 1 h); small enough that a test's gaps stay few."""
    Timeframe.objects.filter(code="1s").update(retention=RETENTION)


def subscribe(instrument: Instrument, bar: str, **fields) -> Subscription:
    return Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code=bar), **fields)


def gap(sub: Subscription, start, end, state=GapState.OPEN, **fields) -> Gap:
    spec = sub.timeframe.spec
    return Gap.objects.create(subscription=sub, start=start, end=end, state=state,
                              missing=spec.count(datetime_to_ms(start), datetime_to_ms(end)), **fields)


def state_of(g: Gap) -> tuple:
    g.refresh_from_db()
    return g.state, g.start, g.end, g.missing


# --- detection starts at the horizon --------------------------------------------------------------------


def test_scheduled_detection_records_nothing_behind_the_horizon_and_moves_the_watermark_to_it(
        instrument, now, one_hour_of_1s):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1s")
    Subscription.objects.filter(pk=sub.pk).update(detected_through=now - timedelta(days=3),
                                                  created_at=now - timedelta(days=3))

    result = detection_advance(now=now)

    horizon = now - RETENTION
    gaps = list(sub.gaps.order_by("start"))
    assert gaps, "the hour inside the horizon, never collected, is recorded"
    assert gaps[0].start == horizon  # a candle opening exactly at the horizon is still kept, so still looked for
    assert all(g.start >= horizon for g in gaps)
    last = Timeframe.objects.get(code="1s").spec.last_closed(datetime_to_ms(now - DETECT_SETTLE))
    assert sum(g.missing for g in gaps) == result.missing == (last - datetime_to_ms(horizon)) // SECOND + 1
    sub.refresh_from_db()
    assert sub.detected_through == ms_to_datetime(last)


def test_a_bar_kept_forever_is_looked_at_from_its_watermark_however_old(instrument, now):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1m")
    mark = now - timedelta(days=3)
    Subscription.objects.filter(pk=sub.pk).update(detected_through=mark, created_at=mark)

    detection_advance(now=now)

    first = Timeframe.objects.get(code="1m").spec.ceil(datetime_to_ms(mark) + 1)
    assert datetime_to_ms(sub.gaps.order_by("start").first().start) == first


def test_detection_does_not_reopen_a_range_that_expired(instrument, now, one_hour_of_1s):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1s")
    old = gap(sub, now - timedelta(hours=3), now - timedelta(hours=2), GapState.EXPIRED)
    Subscription.objects.filter(pk=sub.pk).update(detected_through=now - timedelta(hours=3, seconds=1),
                                                  created_at=now - timedelta(days=1))

    detection_advance(now=now)
    explicit = gaps_detect(subscription_id=sub.pk, start=now - timedelta(hours=4), end=now, now=now)

    horizon = now - RETENTION
    assert not sub.gaps.filter(state__in=[GapState.OPEN, GapState.FILLING], start__lt=horizon).exists()
    assert all(g.start >= horizon for g in explicit)
    assert state_of(old)[0] == GapState.EXPIRED


def test_explicit_detection_of_a_range_wholly_behind_the_horizon_records_nothing(instrument, now, one_hour_of_1s):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1s")

    assert gaps_detect(subscription_id=sub.pk, start=now - timedelta(hours=5), end=now - timedelta(hours=2),
                       now=now) == []
    assert not sub.gaps.exists()


# --- unfinished gaps behind the horizon expire ------------------------------------------------------------


def test_gaps_wholly_behind_the_horizon_expire_and_those_reaching_over_it_are_trimmed(instrument, now,
                                                                                      one_hour_of_1s):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1s")
    horizon = now - RETENTION
    behind = gap(sub, horizon - timedelta(minutes=10), horizon - timedelta(minutes=5))
    last_second_behind = gap(sub, horizon - timedelta(minutes=4), horizon - timedelta(seconds=1))
    being_filled = gap(sub, horizon - timedelta(minutes=30), horizon - timedelta(minutes=25), GapState.FILLING)
    crossing = gap(sub, horizon - timedelta(seconds=100), horizon + timedelta(seconds=199))
    at_horizon = gap(sub, horizon + timedelta(minutes=5), horizon + timedelta(minutes=6))
    finished = gap(sub, horizon - timedelta(minutes=50), horizon - timedelta(minutes=45), GapState.UNFILLABLE)

    result = gaps_expire(now=now)

    assert (result.expired, result.trimmed) == (3, 1)
    for expired in (behind, last_second_behind, being_filled):
        assert state_of(expired)[0] == GapState.EXPIRED
    expired_reason = Gap.objects.get(pk=behind.pk).reason
    assert "retention horizon" in expired_reason
    assert "1s" in expired_reason
    assert state_of(crossing) == (GapState.OPEN, horizon, horizon + timedelta(seconds=199), 200)
    assert state_of(at_horizon)[0] == GapState.OPEN
    assert state_of(finished)[0] == GapState.UNFILLABLE


def test_expiring_twice_changes_nothing_more(instrument, now, one_hour_of_1s):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1s")
    horizon = now - RETENTION
    gap(sub, horizon - timedelta(minutes=10), horizon - timedelta(minutes=5))
    gap(sub, horizon - timedelta(seconds=10), horizon + timedelta(seconds=10))
    gaps_expire(now=now)
    before = sorted(Gap.objects.values_list("id", "state", "start", "end", "missing"))

    again = gaps_expire(now=now)

    assert (again.expired, again.trimmed) == (0, 0)
    assert sorted(Gap.objects.values_list("id", "state", "start", "end", "missing")) == before


def test_gaps_of_bars_kept_forever_never_expire(instrument, now, one_hour_of_1s):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1m")
    years_ago = gap(sub, now - timedelta(days=700), now - timedelta(days=700) + timedelta(minutes=9))

    assert gaps_expire(now=now).expired == 0
    assert state_of(years_ago)[0] == GapState.OPEN


def test_expired_gaps_are_never_scheduled_for_rest(instrument, now, one_hour_of_1s):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(btc, "1s")
    horizon = now - RETENTION
    old = gap(sub, horizon - timedelta(minutes=10), horizon - timedelta(minutes=5), priority=RepairPriority.OUTAGE)
    recent = gap(sub, now - timedelta(minutes=10), now - timedelta(minutes=9), priority=RepairPriority.OUTAGE)
    assert {u.gap_ids[0] for lane in (CANDLES_LANE, HISTORY_LANE)
            for u in gaps_due(lane=lane, limit=100, now=now)} == {old.pk, recent.pk}

    gaps_expire(now=now)

    due = {u.gap_ids[0] for lane in (CANDLES_LANE, HISTORY_LANE) for u in gaps_due(lane=lane, limit=100, now=now)}
    assert due == {recent.pk}
    assert gaps_next(limit=100, now=now) == [recent.pk]


# --- finished gap records are pruned ---------------------------------------------------------------------


def test_finished_gap_records_older_than_the_cutoff_are_deleted_in_batches(instrument, now):
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=400))
    sub = subscribe(btc, "1m")
    t = now - timedelta(days=100)
    made = {state: [gap(sub, t + timedelta(hours=i + 10 * k), t + timedelta(hours=i + 10 * k, minutes=1), state)
                    for i in range(3)]
            for k, state in enumerate((GapState.FILLED, GapState.UNFILLABLE, GapState.EXPIRED, GapState.OPEN))}
    cutoff = now - timedelta(days=30)
    Gap.objects.update(updated_at=now - timedelta(days=31))
    recent_fill = made[GapState.FILLED][0]
    Gap.objects.filter(pk=recent_fill.pk).update(updated_at=now - timedelta(days=1))

    deleted = gaps_prune(older_than=cutoff, batch=2)

    assert deleted == 8  # 3 unfillable, 3 expired, 2 filled long ago
    left = set(Gap.objects.values_list("pk", flat=True))
    assert left == {recent_fill.pk, *(g.pk for g in made[GapState.OPEN])}
    assert gaps_prune(older_than=cutoff, batch=2) == 0
