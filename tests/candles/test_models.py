"""The seeded bars, the database's own guards, the UTC system check and the admin's candle view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings

from candles.apps import check_utc_everywhere
from candles.bars import datetime_to_ms
from candles.models import Candle, CandleRecord, Gap, Subscription, Timeframe
from tests.conftest import SEEDED_CODES

T0 = datetime(2024, 1, 17, 12, 0, tzinfo=UTC)


# --- the seed ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_exactly_the_27_okx_bars_are_seeded_in_display_order():
    codes = list(Timeframe.objects.order_by("display_order").values_list("code", flat=True))
    assert codes == list(SEEDED_CODES)
    assert len(codes) == 27


@pytest.mark.django_db
def test_1m_and_1M_are_different_rows_and_lookups_are_case_sensitive():
    minute = Timeframe.objects.get(code="1m")
    month = Timeframe.objects.get(code="1M")
    assert minute.pk != month.pk
    assert (minute.seconds, minute.months) == (60, 0)
    assert (month.seconds, month.months, month.utc_offset_hours) == (0, 1, 8)
    assert list(Timeframe.objects.filter(code="1m")) == [minute]
    assert list(Timeframe.objects.filter(code="1M")) == [month]
    assert not Timeframe.objects.filter(code="1h").exists()
    assert not Timeframe.objects.filter(code="1d").exists()


@pytest.mark.django_db
def test_rest_availability_follows_okx_1s_history_only_and_5D_websocket_only():
    flags = {tf.code: (tf.rest_candles, tf.rest_history) for tf in Timeframe.objects.all()}
    assert flags.pop("1s") == (False, True)
    assert flags.pop("5D") == (False, False)
    assert flags.pop("5Dutc") == (False, False)
    assert set(flags.values()) == {(True, True)}


@pytest.mark.django_db
def test_bars_of_6H_and_longer_without_utc_follow_hong_kong_time_and_the_others_utc():
    hong_kong = set(Timeframe.objects.filter(utc_offset_hours=8).values_list("code", flat=True))
    assert hong_kong == {"6H", "12H", "1D", "2D", "3D", "5D", "1W", "1M", "3M"}
    assert set(Timeframe.objects.exclude(utc_offset_hours=8).values_list("utc_offset_hours", flat=True)) == {0}


@pytest.mark.django_db
def test_a_bar_with_both_a_fixed_length_and_months_is_refused_by_the_database():
    with pytest.raises(IntegrityError), transaction.atomic():
        Timeframe.objects.create(code="odd", seconds=60, months=1, anchor=T0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Timeframe.objects.create(code="none", seconds=0, months=0, anchor=T0)


# --- the UTC system check ------------------------------------------------------------------------


def test_the_system_check_passes_with_utc():
    assert check_utc_everywhere() == []


@pytest.mark.parametrize("zone", ["Asia/Hong_Kong", "Europe/Paris", "Etc/GMT-8"])
def test_the_system_check_reports_candles_e001_when_time_zone_is_not_utc(zone):
    with override_settings(TIME_ZONE=zone):
        errors = check_utc_everywhere()
    assert [error.id for error in errors] == ["candles.E001"]
    assert zone in errors[0].msg


def test_the_system_check_reports_candles_e002_when_use_tz_is_off():
    with override_settings(USE_TZ=False):
        errors = check_utc_everywhere()
    assert [error.id for error in errors] == ["candles.E002"]


# --- subscriptions and gaps ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_refuses_a_second_subscription_to_the_same_pair(btc, tf):
    Subscription.objects.create(instrument=btc, timeframe=tf("1m"))
    Subscription.objects.create(instrument=btc, timeframe=tf("1M"))  # another bar is another pair
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.create(instrument=btc, timeframe=tf("1m"), is_active=False)
    assert Subscription.objects.count() == 2


@pytest.mark.django_db
def test_the_database_refuses_a_gap_that_ends_before_it_starts(btc, tf):
    subscription = Subscription.objects.create(instrument=btc, timeframe=tf("1m"))
    Gap.objects.create(subscription=subscription, start=T0, end=T0, missing=1)  # one open time is fine
    with pytest.raises(IntegrityError), transaction.atomic():
        Gap.objects.create(subscription=subscription, start=T0, end=T0 - timedelta(minutes=1))
    assert Gap.objects.count() == 1


# --- candles -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_refuses_an_open_candle_from_rest_whoever_writes_it(btc, stored_candles):
    with pytest.raises(IntegrityError), transaction.atomic():
        stored_candles(btc, "1m", [T0], confirmed=False, source="rest")
    with pytest.raises(IntegrityError), transaction.atomic():
        stored_candles(btc, "1m", [T0], source="ftp")
    assert not Candle.objects.exists()


@pytest.mark.django_db
def test_the_candle_record_view_has_one_row_per_candle_keyed_by_instrument_bar_and_epoch_ms(
    btc, instrument, stored_candles, tf
):
    eth = instrument("ETH-USDT")
    month = datetime(2024, 1, 31, 16, tzinfo=UTC)
    stored_candles(btc, "1m", [T0, T0 + timedelta(minutes=1)], close=Decimal("43000.0"))
    stored_candles(btc, "1M", [month], confirmed=False, version=7)
    stored_candles(eth, "1m", [T0], source="rest")
    expected = {
        f"{btc.pk}.{tf('1m').pk}.{datetime_to_ms(T0)}": (btc.pk, "1m", T0),
        f"{btc.pk}.{tf('1m').pk}.{datetime_to_ms(T0) + 60_000}": (btc.pk, "1m", T0 + timedelta(minutes=1)),
        f"{btc.pk}.{tf('1M').pk}.{datetime_to_ms(month)}": (btc.pk, "1M", month),
        f"{eth.pk}.{tf('1m').pk}.{datetime_to_ms(T0)}": (eth.pk, "1m", T0),
    }

    records = {r.key: r for r in CandleRecord.objects.select_related("timeframe")}

    assert {key: (r.instrument_id, r.timeframe.code, r.open_time) for key, r in records.items()} == expected
    monthly = records[f"{btc.pk}.{tf('1M').pk}.{datetime_to_ms(month)}"]
    assert (monthly.confirmed, monthly.version, monthly.source) == (False, 7, "ws")
    assert str(records[f"{btc.pk}.{tf('1m').pk}.{datetime_to_ms(T0)}"].close) == "43000.0"
    assert records[f"{eth.pk}.{tf('1m').pk}.{datetime_to_ms(T0)}"].source == "rest"


@pytest.mark.django_db
def test_a_candle_record_is_found_by_its_key(btc, stored_candles, tf):
    received = datetime(2024, 1, 16, 16, 0, 3, 250_000, tzinfo=UTC)
    (candle,) = stored_candles(btc, "1D", [datetime(2024, 1, 16, 16, tzinfo=UTC)],
                               version=datetime_to_ms(received) * 1000)
    record = CandleRecord.objects.get(key=f"{btc.pk}.{tf('1D').pk}.1705420800000")
    # The row keeps no update time: the view shows the receipt time its version encodes.
    assert (record.open_time, record.high, record.updated_at) == (candle.open_time, candle.high, received)


@pytest.mark.django_db
def test_a_mark_or_index_series_cannot_be_subscribed_in_1s(instrument, tf):
    from django.core.exceptions import ValidationError

    from candles.models import Subscription

    mark = instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    with pytest.raises(ValidationError, match="no 1s mark candles"):
        Subscription(instrument=mark, timeframe=tf("1s")).clean()
    Subscription(instrument=mark, timeframe=tf("1m")).clean()
    Subscription(instrument=instrument("BTC-USDT-SWAP", inst_type="SWAP"), timeframe=tf("1s")).clean()


@pytest.mark.django_db
def test_index_rows_are_indices_and_mark_rows_derivatives(instrument):
    from django.db import IntegrityError, transaction

    for bad in ({"inst_type": "SPOT", "price": "mark"}, {"inst_type": "SPOT", "price": "index"},
                {"inst_type": "INDEX", "price": "trade"}):
        with pytest.raises(IntegrityError), transaction.atomic():
            instrument("BTC-USDT", **bad)
    instrument("BTC-USDT")
    instrument("BTC-USDT", inst_type="INDEX", price="index")
    with pytest.raises(IntegrityError), transaction.atomic():
        instrument("BTC-USDT")  # one row per id and price kind
