"""The candle list in the admin at scale: a default window of open times, bounded counts, estimates from the
partitions' statistics (candles/admin_candles.py, candles/admin_counts.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from candles import admin_counts
from candles.admin_counts import BoundedCountPaginator, EstimatedCountPaginator, rows_estimate
from candles.models import CandleRecord, Timeframe
from candles.storage import candles_upsert
from tests.conftest import build_row

URL = "admin:candles_candlerecord_changelist"


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    client.force_login(user)
    return client


def minutes_ago(minutes: int):
    return (timezone.now() - timedelta(minutes=minutes)).replace(second=0, microsecond=0)


def listed(response) -> int:
    return response.content.decode().count('class="field-open_time')


@pytest.mark.django_db
def test_the_candle_list_shows_the_last_15_minutes_of_open_times_by_default(staff_client, btc):
    candles_upsert(rows=[build_row(minutes_ago(5)), build_row(minutes_ago(120))])

    assert listed(staff_client.get(reverse(URL))) == 1
    assert listed(staff_client.get(reverse(URL), {"window": "24h"})) == 2


@pytest.mark.django_db
def test_a_day_can_be_chosen_by_its_utc_date(staff_client, btc):
    yesterday = (timezone.now() - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    candles_upsert(rows=[build_row(yesterday), build_row(minutes_ago(5))])

    assert listed(staff_client.get(reverse(URL), {"window": yesterday.date().isoformat()})) == 1


@pytest.mark.django_db
def test_a_chosen_series_lists_its_candles_of_any_time_newest_first(staff_client, btc):
    candles_upsert(rows=[build_row(minutes_ago(5)), build_row(minutes_ago(60 * 24 * 400))])
    minute = Timeframe.objects.get(code="1m")

    response = staff_client.get(reverse(URL), {"q": "BTC-USDT", "timeframe__id__exact": minute.pk})

    assert listed(response) == 2
    assert "any time" in response.content.decode()
    assert listed(staff_client.get(reverse(URL), {"q": "NOPE-USDT", "timeframe__id__exact": minute.pk})) == 0


@pytest.mark.django_db
def test_open_time_bounds_in_the_url_replace_the_default_window(staff_client, btc):
    candles_upsert(rows=[build_row(minutes_ago(60 * 24 * 400))])
    assert listed(staff_client.get(reverse(URL), {"open_time__gte": "2000-01-01 00:00:00+00:00"})) == 1


@pytest.mark.django_db
def test_a_filtered_list_stops_counting_past_the_bound_and_says_so(staff_client, btc, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "count_bound", 5)
    candles_upsert(rows=[build_row(minutes_ago(m)) for m in range(1, 9)])

    with CaptureQueriesContext(connection) as queries:
        body = staff_client.get(reverse(URL)).content.decode()

    assert "5+ candles" in body
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "candles_candle_record" in q["sql"]]
    assert counts
    assert all("LIMIT 6" in sql for sql in counts)
    assert all("ORDER BY" not in sql for sql in counts)


@pytest.mark.django_db
def test_a_list_under_the_bound_shows_its_exact_count(staff_client, btc):
    candles_upsert(rows=[build_row(minutes_ago(m)) for m in range(1, 4)])
    assert "3 candles" in staff_client.get(reverse(URL)).content.decode()


@pytest.mark.django_db
def test_an_unfiltered_large_list_uses_the_estimate_and_a_small_one_counts(btc, monkeypatch):
    candles_upsert(rows=[build_row(minutes_ago(m)) for m in range(1, 4)])
    monkeypatch.setattr(admin_counts, "rows_estimate", lambda model: 30_000_000)
    assert EstimatedCountPaginator(CandleRecord.objects.order_by("-open_time"), 100).count == 30_000_000
    monkeypatch.setattr(admin_counts, "rows_estimate", lambda model: 12)
    assert EstimatedCountPaginator(CandleRecord.objects.order_by("-open_time"), 100).count == 3


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_candle_estimate_sums_the_live_rows_of_every_leaf(btc):
    candles_upsert(rows=[build_row(minutes_ago(m)) for m in range(1, 4)] + [build_row(timezone.now().replace(
        microsecond=0) - timedelta(seconds=5), bar="1s")] + [build_row(minutes_ago(60 * 24 * 400))])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with connection.cursor() as cursor:  # the flush happens when the statement before ends
        cursor.execute("SELECT pg_stat_clear_snapshot()")

    assert rows_estimate(CandleRecord) == 5


@pytest.mark.django_db
def test_a_long_window_is_read_from_its_newest_slice_that_fills_every_countable_page(staff_client, btc, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "count_bound", 2)  # 3 rows fill every page the list can show
    times = {m: minutes_ago(m) for m in (2, 3, 4, 7, 8, 180)}
    candles_upsert(rows=[build_row(moment) for moment in times.values()])

    body = staff_client.get(reverse(URL), {"window": "24h"}).content.decode()

    assert body.count('class="field-open_time') == 3  # the last five minutes' candles, newest first
    assert "2+ candles" in body
    oldest = CandleRecord.objects.get(open_time=times[180])
    newest = CandleRecord.objects.get(open_time=times[2])
    assert newest.key in body
    assert oldest.key not in body
