"""Scheduled detection: each series is looked at past its watermark only, every series at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Gap, GapState, Instrument, RepairPriority, Subscription, Timeframe
from collectors.repair.detect import DETECT_SETTLE, detection_advance

pytestmark = pytest.mark.django_db
MINUTE = 60_000


def subscribe(instrument: Instrument, bar: str, **fields) -> Subscription:
    return Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code=bar), **fields)


def last_closed(bar: str, now) -> int:
    return Timeframe.objects.get(code=bar).spec.last_closed(datetime_to_ms(now - DETECT_SETTLE))


def watermark(sub: Subscription):
    sub.refresh_from_db()
    return sub.detected_through


def gap_spans(sub: Subscription) -> list[tuple[int, int, int, str]]:
    return [(datetime_to_ms(g.start), datetime_to_ms(g.end), g.priority, g.state)
            for g in sub.gaps.order_by("start")]


def test_a_new_subscriptions_history_is_recorded_once_as_history_gaps(instrument):
    now = timezone.now()
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=3))
    sub = subscribe(btc, "1m", backfill_from=now - timedelta(minutes=30))
    end = last_closed("1m", now)

    first = detection_advance(now=now)

    spec = Timeframe.objects.get(code="1m").spec
    start = spec.ceil(datetime_to_ms(now - timedelta(minutes=30)))
    assert gap_spans(sub) == [(start, end, RepairPriority.HISTORY, GapState.OPEN)]
    assert first.gaps == 1
    assert first.missing == spec.count(start, end)
    assert watermark(sub) == ms_to_datetime(end)
    assert detection_advance(now=now).gaps == 0
    assert sub.gaps.count() == 1


def test_a_hole_past_the_watermark_becomes_one_outage_gap_and_unconfirmed_candles_are_not_gaps(
        instrument, stored_candles):
    now = timezone.now()
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=3))
    sub = subscribe(btc, "1m")
    end = last_closed("1m", now)
    mark = end - 20 * MINUTE
    # Collected live for an hour: a hole since is an outage's.
    Subscription.objects.filter(pk=sub.pk).update(detected_through=ms_to_datetime(mark),
                                                  created_at=now - timedelta(hours=1))
    hole = {end - 12 * MINUTE, end - 11 * MINUTE, end - 10 * MINUTE}
    present = [mark + k * MINUTE for k in range(1, 21) if mark + k * MINUTE not in hole]
    stored_candles(btc, "1m", [t for t in present if t != end - 3 * MINUTE])
    stored_candles(btc, "1m", [end - 3 * MINUTE], confirmed=False)  # its confirm push never came

    result = detection_advance(now=now)

    assert gap_spans(sub) == [(end - 12 * MINUTE, end - 10 * MINUTE, RepairPriority.OUTAGE, GapState.OPEN)]
    assert (result.examined, result.incomplete, result.gaps, result.missing) == (1, 1, 1, 3)
    assert watermark(sub) == ms_to_datetime(end)


def test_a_complete_series_moves_its_watermark_without_a_gap(instrument, stored_candles):
    now = timezone.now()
    btc = instrument("BTC-USDT", listed_at=now - timedelta(days=3))
    sub = subscribe(btc, "1m")
    end = last_closed("1m", now)
    Subscription.objects.filter(pk=sub.pk).update(detected_through=ms_to_datetime(end - 5 * MINUTE))
    stored_candles(btc, "1m", [end - k * MINUTE for k in range(5)])

    result = detection_advance(now=now)

    assert (result.advanced, result.gaps) == (1, 0)
    assert watermark(sub) == ms_to_datetime(end)
    assert detection_advance(now=now).examined == 0  # nothing closed since: nothing looked at


def test_detection_ends_at_expiry_and_never_looks_at_the_series_again(instrument, stored_candles):
    now = timezone.now()
    expiry = now - timedelta(minutes=30)
    future = instrument("BTC-USD-261225", inst_type="FUTURES", listed_at=now - timedelta(days=3), expires_at=expiry)
    sub = subscribe(future, "1m")
    spec = Timeframe.objects.get(code="1m").spec
    final = spec.floor(datetime_to_ms(expiry))
    Subscription.objects.filter(pk=sub.pk).update(detected_through=ms_to_datetime(final - 10 * MINUTE),
                                                  created_at=now - timedelta(days=1))
    stored_candles(future, "1m", [final - k * MINUTE for k in range(8)])  # two missing before the expiry

    result = detection_advance(now=now)

    assert gap_spans(sub) == [(final - 9 * MINUTE, final - 8 * MINUTE, RepairPriority.OUTAGE, GapState.OPEN)]
    assert expiry <= watermark(sub) < expiry + timedelta(milliseconds=1)  # no gap is ever counted past it
    assert result.examined == 1
    assert detection_advance(now=now + timedelta(hours=1)).examined == 0


def test_paused_subscriptions_are_not_detected(instrument):
    now = timezone.now()
    sub = subscribe(instrument("BTC-USDT", listed_at=now - timedelta(days=3)), "1m",
                    backfill_from=now - timedelta(hours=1), is_active=False)

    assert detection_advance(now=now).examined == 0
    assert watermark(sub) is None
    assert sub.gaps.count() == 0


def _series(count: int, now) -> list[Subscription]:
    """`count` 1m series whose watermark is 2 candles behind, both candles stored: complete, with news."""
    end = last_closed("1m", now)
    minute = Timeframe.objects.get(code="1m")
    instruments = Instrument.objects.bulk_create(
        Instrument(inst_id=f"S{count}X{k}-USDT", inst_type="SPOT") for k in range(count))
    subs = Subscription.objects.bulk_create(
        Subscription(instrument=inst, timeframe=minute, detected_through=ms_to_datetime(end - 2 * MINUTE))
        for inst in instruments)
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO candles_candle (instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy,
                                        vol_ccy_quote, confirmed, source, version)
            SELECT i.id, %(tf)s, t, 1, 1, 1, 1, 0, 0, 0, true, 'w', 1
            FROM unnest(%(ids)s::int[]) i(id) CROSS JOIN unnest(%(times)s::timestamptz[]) t
        """, {"tf": minute.pk, "ids": [i.pk for i in instruments],
              "times": [ms_to_datetime(end - MINUTE), ms_to_datetime(end)]})
    return subs


def _queries_of_a_run(now) -> int:
    with CaptureQueriesContext(connection) as queries:
        result = detection_advance(now=now)
    assert result.gaps == 0
    return len(queries)


def test_a_runs_queries_do_not_grow_with_the_number_of_series():
    now = timezone.now()
    _series(10, now)
    small = _queries_of_a_run(now)
    Subscription.objects.all().delete()
    _series(10_000, now)

    large = _queries_of_a_run(now)

    assert large == small  # one statement per bar, whatever the number of series
    assert Subscription.objects.filter(detected_through=ms_to_datetime(last_closed("1m", now))).count() == 10_000
    assert Gap.objects.count() == 0


def test_scattered_holes_within_one_page_are_one_gap_counting_only_the_holes(instrument, stored_candles):
    """A 1s channel pushed every 2 s misses every other candle: one gap (one request) per page, not one each."""
    now = timezone.now()
    eth = instrument("ETH-USDT", listed_at=now - timedelta(days=3))
    sub = subscribe(eth, "1s")
    end = last_closed("1s", now)
    mark = end - 250 * 1000
    Subscription.objects.filter(pk=sub.pk).update(detected_through=ms_to_datetime(mark),
                                                  created_at=now - timedelta(hours=1))
    stored_candles(eth, "1s", [mark + k * 1000 for k in range(1, 251) if k % 2 == 0])

    result = detection_advance(now=now)

    gaps = list(sub.gaps.order_by("start"))
    # Holes at mark + 1 s, 3 s, …, 249 s; a /history-candles page covers 100 s.
    assert [(datetime_to_ms(g.start) - mark, datetime_to_ms(g.end) - mark, g.missing) for g in gaps] == [
        (1000, 99_000, 50), (101_000, 199_000, 50), (201_000, 249_000, 25)]
    assert result.missing == 125
