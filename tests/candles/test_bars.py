"""Open-time arithmetic of OKX bars (candles.bars), and the SQL copy of it that the write path uses.

Hong Kong bars (6H and longer without `utc`) follow UTC+8: 1D opens at 16:00 UTC the day before, 1W on
Sunday 16:00 UTC (Monday 00:00 HKT), 1M at 16:00 UTC on the last day of the previous month.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import islice

import pytest
from django.db import connection

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.series import expected_open_times
from tests.conftest import SEEDED_CODES

HOUR_MS = 3_600_000
MINUTE, HOUR, DAY = 60, 3600, 86400
HKT = timezone(timedelta(hours=8))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ms(*args: int) -> int:
    return datetime_to_ms(utc(*args))


# Built by hand from PROTOCOL.md, independently of the seed migration.
SPECS = {
    "1s": BarSpec("1s", 1, 0, 0, 0),
    "1m": BarSpec("1m", MINUTE, 0, 0, 0),
    "1H": BarSpec("1H", HOUR, 0, 0, 0),
    "6H": BarSpec("6H", 6 * HOUR, 0, 8, -8 * HOUR_MS),
    "6Hutc": BarSpec("6Hutc", 6 * HOUR, 0, 0, 0),
    "1D": BarSpec("1D", DAY, 0, 8, -8 * HOUR_MS),
    "1Dutc": BarSpec("1Dutc", DAY, 0, 0, 0),
    "1W": BarSpec("1W", 7 * DAY, 0, 8, ms(1970, 1, 4, 16)),  # Monday 1970-01-05 00:00 HKT
    "1Wutc": BarSpec("1Wutc", 7 * DAY, 0, 0, ms(1970, 1, 5)),  # Monday 1970-01-05 00:00 UTC
    "1M": BarSpec("1M", 0, 1, 8, -8 * HOUR_MS),
    "1Mutc": BarSpec("1Mutc", 0, 1, 0, 0),
    "3M": BarSpec("3M", 0, 3, 8, -8 * HOUR_MS),  # quarters: January 1970 HKT starts a cycle
    "3Mutc": BarSpec("3Mutc", 0, 3, 0, 0),
}


def wall_clock_floor(code: str, moment: datetime) -> datetime:
    """The open time of the bar containing `moment`, read off the wall clock of the bar's zone."""
    zone = HKT if SPECS[code].utc_offset_hours == 8 else UTC
    local = moment.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    unit = code.removesuffix("utc")
    if unit == "1s":
        floored = local.replace(microsecond=0)
    elif unit == "1m":
        floored = local.replace(second=0, microsecond=0)
    elif unit == "1H":
        floored = local.replace(minute=0, second=0, microsecond=0)
    elif unit == "6H":
        floored = midnight.replace(hour=local.hour // 6 * 6)
    elif unit == "1D":
        floored = midnight
    elif unit == "1W":
        floored = midnight - timedelta(days=local.weekday())
    elif unit == "1M":
        floored = midnight.replace(day=1)
    elif unit == "3M":
        floored = midnight.replace(day=1, month=(local.month - 1) // 3 * 3 + 1)
    else:
        raise AssertionError(code)
    return floored.astimezone(UTC)


def wall_clock_next(code: str, open_time: datetime) -> datetime:
    spec = SPECS[code]
    # A step longer than one bar and shorter than two lands in the next bar.
    step = {1: timedelta(days=32), 3: timedelta(days=93)}.get(spec.months) or timedelta(seconds=spec.seconds)
    return wall_clock_floor(code, open_time + step)


def sweep() -> list[datetime]:
    """Irregularly spaced instants from late November 2023 to early March 2024 (a leap February)."""
    start, step = utc(2023, 11, 25), timedelta(hours=5, minutes=47, seconds=13, milliseconds=371)
    return [start + i * step for i in range(420)]


@pytest.mark.parametrize("code", list(SPECS))
def test_floor_ceil_following_and_is_open_time_agree_with_the_wall_clock_of_the_bars_zone(code):
    spec = SPECS[code]
    for moment in sweep():
        expected_floor = wall_clock_floor(code, moment)
        expected_next = wall_clock_next(code, expected_floor)
        instant = datetime_to_ms(moment)
        floor = spec.floor(instant)
        assert ms_to_datetime(floor) == expected_floor, moment
        assert ms_to_datetime(spec.following(floor)) == expected_next, moment
        assert spec.is_open_time(floor), moment
        assert spec.is_open_time(instant) == (moment == expected_floor), moment
        assert ms_to_datetime(spec.ceil(instant)) == (expected_floor if moment == expected_floor else expected_next)
        # Right at the next boundary and one millisecond before it.
        assert spec.floor(datetime_to_ms(expected_next)) == datetime_to_ms(expected_next), moment
        assert spec.floor(datetime_to_ms(expected_next) - 1) == floor, moment


def test_1m_bars_floor_and_ceil_to_whole_minutes():
    spec = SPECS["1m"]
    assert spec.floor(ms(2024, 1, 17, 12, 34, 56) + 789) == ms(2024, 1, 17, 12, 34)
    assert spec.ceil(ms(2024, 1, 17, 12, 34, 56)) == ms(2024, 1, 17, 12, 35)
    assert spec.ceil(ms(2024, 1, 17, 12, 34)) == ms(2024, 1, 17, 12, 34)
    assert spec.following(ms(2024, 1, 17, 23, 59)) == ms(2024, 1, 18, 0, 0)
    assert spec.is_open_time(ms(2024, 1, 17, 12, 34))
    assert not spec.is_open_time(ms(2024, 1, 17, 12, 34, 1))
    assert spec.length_ms == 60_000


def test_1H_bars_open_on_the_hour():
    spec = SPECS["1H"]
    assert spec.floor(ms(2024, 1, 17, 18, 59, 59) + 999) == ms(2024, 1, 17, 18)
    assert spec.ceil(ms(2024, 1, 17, 18, 0, 1)) == ms(2024, 1, 17, 19)
    assert spec.following(ms(2024, 1, 17, 23)) == ms(2024, 1, 18, 0)
    assert not spec.is_open_time(ms(2024, 1, 17, 18, 30))


def test_6H_bars_open_at_16_22_04_and_10_utc():
    spec = SPECS["6H"]
    opens = list(spec.open_times(ms(2024, 1, 16, 12), ms(2024, 1, 17, 12)))
    assert opens == [ms(2024, 1, 16, 16), ms(2024, 1, 16, 22), ms(2024, 1, 17, 4), ms(2024, 1, 17, 10)]
    assert spec.floor(ms(2024, 1, 17, 3, 59, 59)) == ms(2024, 1, 16, 22)
    assert spec.floor(ms(2024, 1, 17, 4)) == ms(2024, 1, 17, 4)
    assert not spec.is_open_time(ms(2024, 1, 17, 0))
    assert not spec.is_open_time(ms(2024, 1, 17, 6))


def test_6Hutc_bars_open_at_00_06_12_and_18_utc():
    spec = SPECS["6Hutc"]
    opens = list(spec.open_times(ms(2024, 1, 16, 12), ms(2024, 1, 17, 12)))
    assert opens == [ms(2024, 1, 16, 12), ms(2024, 1, 16, 18), ms(2024, 1, 17, 0), ms(2024, 1, 17, 6),
                     ms(2024, 1, 17, 12)]


def test_1D_bars_open_at_16_utc_of_the_previous_day():
    spec = SPECS["1D"]
    assert spec.floor(ms(2024, 1, 17, 15, 59, 59) + 999) == ms(2024, 1, 16, 16)
    assert spec.floor(ms(2024, 1, 17, 16)) == ms(2024, 1, 17, 16)
    assert spec.ceil(ms(2024, 1, 17, 0)) == ms(2024, 1, 17, 16)
    assert spec.following(ms(2024, 1, 17, 16)) == ms(2024, 1, 18, 16)
    assert not spec.is_open_time(ms(2024, 1, 17, 0))


def test_1Dutc_bars_open_at_midnight_utc():
    spec = SPECS["1Dutc"]
    assert spec.floor(ms(2024, 1, 17, 15, 59)) == ms(2024, 1, 17)
    assert spec.floor(ms(2024, 1, 17, 23, 59, 59) + 999) == ms(2024, 1, 17)
    assert spec.is_open_time(ms(2024, 1, 17))
    assert not spec.is_open_time(ms(2024, 1, 16, 16))


def test_1W_bars_open_on_sunday_16_utc_which_is_monday_midnight_in_hong_kong():
    spec = SPECS["1W"]
    week = spec.floor(ms(2024, 1, 17, 12))
    assert week == ms(2024, 1, 14, 16)
    assert ms_to_datetime(week).weekday() == 6  # Sunday in UTC
    assert ms_to_datetime(week).astimezone(HKT).weekday() == 0  # Monday in Hong Kong
    assert spec.floor(ms(2024, 1, 14, 15, 59, 59)) == ms(2024, 1, 7, 16)
    assert spec.following(week) == ms(2024, 1, 21, 16)
    assert not spec.is_open_time(ms(2024, 1, 15))


def test_1Wutc_bars_open_on_monday_midnight_utc():
    spec = SPECS["1Wutc"]
    assert spec.floor(ms(2024, 1, 17, 12)) == ms(2024, 1, 15)
    assert spec.floor(ms(2024, 1, 14, 23, 59)) == ms(2024, 1, 8)
    assert spec.following(ms(2024, 1, 15)) == ms(2024, 1, 22)
    assert not spec.is_open_time(ms(2024, 1, 14, 16))


def test_1M_bars_open_at_16_utc_on_the_last_day_of_the_previous_month_across_a_leap_february():
    spec = SPECS["1M"]
    january = ms(2023, 12, 31, 16)
    assert spec.floor(ms(2024, 1, 31, 15, 59, 59) + 999) == january
    assert spec.floor(ms(2024, 1, 31, 16)) == ms(2024, 1, 31, 16)
    assert spec.floor(ms(2024, 2, 1)) == ms(2024, 1, 31, 16)
    assert spec.following(january) == ms(2024, 1, 31, 16)
    assert spec.following(ms(2024, 1, 31, 16)) == ms(2024, 2, 29, 16)  # March opens after 29 days
    assert spec.following(ms(2024, 2, 29, 16)) == ms(2024, 3, 31, 16)
    assert spec.following(ms(2024, 3, 31, 16)) == ms(2024, 4, 30, 16)
    assert spec.following(ms(2023, 1, 31, 16)) == ms(2023, 2, 28, 16)  # not a leap year
    assert spec.ceil(ms(2024, 2, 1)) == ms(2024, 2, 29, 16)
    assert not spec.is_open_time(ms(2024, 2, 1))  # midnight UTC is not a Hong Kong month start
    assert not spec.is_open_time(ms(2024, 2, 28, 16))


def test_1Mutc_bars_open_at_midnight_utc_on_the_first_of_the_month():
    spec = SPECS["1Mutc"]
    assert spec.floor(ms(2024, 2, 29, 23, 59, 59)) == ms(2024, 2, 1)
    assert spec.following(ms(2024, 1, 1)) == ms(2024, 2, 1)
    assert spec.following(ms(2024, 2, 1)) == ms(2024, 3, 1)
    assert spec.following(ms(2024, 12, 1)) == ms(2025, 1, 1)
    assert not spec.is_open_time(ms(2024, 1, 31, 16))


def test_3M_bars_open_on_quarters_starting_january_april_july_and_october_in_hong_kong():
    spec = SPECS["3M"]
    opens = list(spec.open_times(ms(2024, 1, 1), ms(2024, 12, 31, 23, 59)))
    assert opens == [ms(2024, 3, 31, 16), ms(2024, 6, 30, 16), ms(2024, 9, 30, 16), ms(2024, 12, 31, 16)]
    assert spec.floor(ms(2024, 1, 15)) == ms(2023, 12, 31, 16)
    assert spec.floor(ms(2024, 5, 15)) == ms(2024, 3, 31, 16)
    assert spec.following(ms(2024, 9, 30, 16)) == ms(2024, 12, 31, 16)
    assert not spec.is_open_time(ms(2024, 1, 31, 16))  # a month start, not a quarter start


def test_3Mutc_bars_open_on_january_april_july_and_october_first_utc():
    spec = SPECS["3Mutc"]
    opens = list(spec.open_times(ms(2024, 1, 1), ms(2024, 12, 31)))
    assert opens == [ms(2024, 1, 1), ms(2024, 4, 1), ms(2024, 7, 1), ms(2024, 10, 1)]
    assert spec.floor(ms(2024, 3, 31, 23, 59)) == ms(2024, 1, 1)
    assert not spec.is_open_time(ms(2024, 2, 1))


def test_1s_bars_open_on_every_whole_second():
    spec = SPECS["1s"]
    assert spec.floor(1705431600123) == 1705431600000
    assert spec.ceil(1705431600123) == 1705431601000
    assert spec.following(1705431600000) == 1705431601000
    assert len(list(spec.open_times(ms(2024, 1, 16, 19), ms(2024, 1, 16, 19, 1)))) == 61
    assert not spec.is_open_time(1705431600001)


def test_bars_before_the_epoch_are_floored_like_any_other():
    assert SPECS["1M"].floor(ms(1969, 12, 15)) == ms(1969, 11, 30, 16)
    assert SPECS["1D"].floor(ms(1969, 12, 31, 10)) == ms(1969, 12, 30, 16)
    assert SPECS["1W"].floor(ms(1970, 1, 1)) == ms(1969, 12, 28, 16)
    assert SPECS["1m"].floor(-1) == -60_000


def test_open_times_includes_both_bounds_and_is_empty_when_no_bar_opens_between_them():
    spec = SPECS["1M"]
    assert list(spec.open_times(ms(2024, 1, 31, 16), ms(2024, 3, 31, 16))) == [
        ms(2024, 1, 31, 16), ms(2024, 2, 29, 16), ms(2024, 3, 31, 16),
    ]
    assert list(spec.open_times(ms(2024, 2, 1), ms(2024, 2, 29, 15, 59))) == []
    assert list(SPECS["1m"].open_times(ms(2024, 1, 1, 0, 5), ms(2024, 1, 1, 0, 5))) == [ms(2024, 1, 1, 0, 5)]
    assert list(SPECS["1m"].open_times(ms(2024, 1, 1, 0, 6), ms(2024, 1, 1, 0, 5))) == []


def test_a_calendar_bar_has_no_fixed_length():
    with pytest.raises(ValueError, match="calendar"):
        _ = SPECS["1M"].length_ms


def test_a_naive_datetime_is_refused_and_milliseconds_round_trip():
    with pytest.raises(ValueError, match="naive"):
        datetime_to_ms(datetime(2024, 1, 1))  # a naive datetime: the point of the test
    moment = utc(2024, 2, 29, 16, 0, 0, 123_000)
    assert ms_to_datetime(datetime_to_ms(moment)) == moment
    assert datetime_to_ms(utc(1970, 1, 1)) == 0
    assert datetime_to_ms(datetime(2024, 1, 1, 8, tzinfo=HKT)) == ms(2024, 1, 1)


# --- the seeded bars ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("code", list(SPECS))
def test_the_seeded_bar_behaves_like_the_bar_okx_documents(tf, code):
    seeded, documented = tf(code).spec, SPECS[code]
    assert (seeded.code, seeded.seconds, seeded.months, seeded.utc_offset_hours) == (
        documented.code, documented.seconds, documented.months, documented.utc_offset_hours,
    )
    for moment in sweep()[::7]:
        instant = datetime_to_ms(moment)
        assert seeded.floor(instant) == documented.floor(instant), moment


@pytest.mark.django_db
def test_expected_open_times_are_aware_utc_datetimes_within_inclusive_bounds(tf):
    times = expected_open_times(tf("1m"), utc(2024, 1, 17, 12, 0), utc(2024, 1, 17, 12, 5))
    assert times == [utc(2024, 1, 17, 12, minute) for minute in range(6)]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    unaligned = expected_open_times(tf("1m"), utc(2024, 1, 17, 11, 59, 30), utc(2024, 1, 17, 12, 5, 30))
    assert unaligned == times


@pytest.mark.django_db
def test_expected_open_times_of_1M_count_each_month_once_across_month_ends(tf):
    times = expected_open_times(tf("1M"), utc(2024, 1, 15), utc(2024, 4, 15))
    assert times == [utc(2024, 1, 31, 16), utc(2024, 2, 29, 16), utc(2024, 3, 31, 16)]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)
    year = expected_open_times(tf("1M"), utc(2023, 12, 31, 16), utc(2024, 12, 31, 16))
    assert len(year) == 13


@pytest.mark.django_db
def test_expected_open_times_of_1D_follow_hong_kong_midnight(tf):
    times = expected_open_times(tf("1D"), utc(2024, 1, 15), utc(2024, 1, 18))
    assert times == [utc(2024, 1, 15, 16), utc(2024, 1, 16, 16), utc(2024, 1, 17, 16)]
    assert expected_open_times(tf("1Dutc"), utc(2024, 1, 15), utc(2024, 1, 18)) == [
        utc(2024, 1, 15), utc(2024, 1, 16), utc(2024, 1, 17), utc(2024, 1, 18),
    ]


# --- SQL and Python agree --------------------------------------------------------------------------


def probe_instants(spec: BarSpec) -> tuple[list[int], list[int]]:
    """Open times of `spec` (around the epoch, in 2023–24 and over a leap February) and instants near them."""
    aligned: list[int] = []
    for start in (ms(1969, 12, 20), ms(2023, 12, 20), ms(2024, 2, 20)):
        aligned += islice(spec.open_times(start, ms(2100, 1, 1)), 6)
    aligned.append(spec.anchor_ms)
    shifts = (1, 1000, 60_000, HOUR_MS, 8 * HOUR_MS, 24 * HOUR_MS, 7 * 24 * HOUR_MS, -1000, -HOUR_MS)
    near = [t + shift for t in aligned for shift in shifts]
    return aligned, near


@pytest.mark.django_db
@pytest.mark.parametrize("code", SEEDED_CODES)
def test_the_sql_open_time_check_gives_the_same_answers_as_python(tf, code):
    timeframe = tf(code)
    spec = timeframe.spec
    aligned, near = probe_instants(spec)
    instants = aligned + near
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t, candles_is_open_time(t, %s, %s, %s, %s) FROM unnest(%s::bigint[]) AS t",
            [timeframe.seconds, timeframe.months, timeframe.utc_offset_hours, timeframe.anchor, instants],
        )
        in_sql = dict(cursor.fetchall())
    in_python = {t: spec.is_open_time(t) for t in instants}
    disagreements = {ms_to_datetime(t): (in_sql[t], in_python[t]) for t in instants if in_sql[t] != in_python[t]}
    assert disagreements == {}
    assert all(in_sql[t] for t in aligned)
    assert not all(in_sql[t] for t in near)


# --- counting and stepping, the one home of series arithmetic --------------------------------------------


@pytest.mark.parametrize("code", ["1s", "1m", "1H", "1D", "1W", "1M", "3M", "1Mutc", "3Mutc", "6H"])
def test_count_advance_previous_and_last_closed_agree_with_walking_open_times(tf, code):
    spec = tf(code).spec
    start = spec.ceil(datetime_to_ms(datetime(2023, 11, 5, 3, 7, tzinfo=UTC)))
    walked = [start]
    for _ in range(30):
        walked.append(spec.following(walked[-1]))

    for n, open_ms in enumerate(walked):
        assert spec.advance(start, n) == open_ms
        assert spec.advance(open_ms, -n) == start
        assert spec.count(start, open_ms) == n + 1
    assert spec.count(walked[5], walked[4]) == 0
    assert [spec.previous(t) for t in walked[1:]] == walked[:-1]
    assert spec.last_closed(walked[7] + 1) == walked[6]
    assert spec.last_closed(walked[7]) == walked[6]
