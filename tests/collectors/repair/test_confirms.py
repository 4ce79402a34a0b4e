"""The missed-confirm queue as a run reads it: only as deep as the run can repair, counted whole."""

from __future__ import annotations

import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms
from candles.models import Subscription, Timeframe
from collectors.repair import confirms
from collectors.repair.confirms import CONFIRM_SETTLE, confirm_backlog

pytestmark = pytest.mark.django_db
SECOND = 1000


@pytest.fixture
def newest():
    now = timezone.now()
    return now, Timeframe.objects.get(code="1s").spec.last_closed(datetime_to_ms(now - CONFIRM_SETTLE))


def subscribed(instrument, count: int) -> list:
    tf = Timeframe.objects.get(code="1s")
    instruments = [instrument(f"I{k}-USDT") for k in range(count)]
    Subscription.objects.bulk_create(Subscription(instrument=i, timeframe=tf) for i in instruments)
    return instruments


def test_a_run_reads_the_newest_of_a_wide_backlog_only_and_the_report_counts_the_rest(
        instrument, stored_candles, newest, keys, redis, monkeypatch):
    monkeypatch.setattr(confirms, "READ_FIRST", 10)
    now, last = newest
    for k, inst in enumerate(subscribed(instrument, 30)):  # one candle each, a second apart: 30 units
        stored_candles(inst, "1s", [last - k * SECOND], confirmed=False)

    backlog = confirm_backlog(now=now, redis=redis, keys=keys, units_wanted=5)

    assert [unit.newest_ms for unit in backlog.units] == [last - k * SECOND for k in range(10)]
    assert backlog.candles == 30
    assert backlog.unread_units == 20


def test_a_bar_whose_first_read_makes_too_few_units_is_read_deeper(
        instrument, stored_candles, newest, keys, redis, monkeypatch):
    monkeypatch.setattr(confirms, "READ_FIRST", 10)
    now, last = newest
    (inst,) = subscribed(instrument, 1)
    # One series, 100 candles every 10 s: ten to a page of 100 s, so the first read makes one unit.
    stored_candles(inst, "1s", [last - k * 10 * SECOND for k in range(100)], confirmed=False)

    backlog = confirm_backlog(now=now, redis=redis, keys=keys, units_wanted=4)

    assert len(backlog.units) == 8  # read 80 deep: eight pages
    assert all(len(unit.wanted) == 10 for unit in backlog.units)
    assert backlog.candles == 100


def test_without_a_bound_every_candle_of_the_window_is_read(instrument, stored_candles, newest, keys, redis):
    now, last = newest
    (inst,) = subscribed(instrument, 1)
    stored_candles(inst, "1s", [last - k * SECOND for k in range(250)], confirmed=False)
    stored_candles(inst, "1s", [last - 2 * 86_400 * SECOND], confirmed=False)  # older than GIVE_UP_AFTER

    backlog = confirm_backlog(now=now, redis=redis, keys=keys)

    assert sorted(len(unit.wanted) for unit in backlog.units) == [50, 100, 100]
    assert (backlog.candles, backlog.unread_units) == (250, 0)
