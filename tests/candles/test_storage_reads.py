"""Reads: `candle_list_text` (filters, keyset pagination, exact texts) and `candle_missing_ranges` (gap detection)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from candles.bars import ms_to_datetime
from candles.candle_shape import ServedCandle
from candles.models import Candle
from candles.reads import CandlePage, InvalidCursor, candle_list_text
from candles.series import MissingRange, candle_missing_ranges, expected_open_times

T0 = datetime(2024, 1, 17, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + minutes * MINUTE


def forged_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture
def fifty_minutes(btc, stored_candles, tf):
    """50 one-minute candles of BTC-USDT from T0; every third one still open."""
    for i in range(50):
        stored_candles(btc, "1m", [at(i)], confirmed=i % 3 != 0, close=Decimal(f"100.{i:02d}"))
    return btc, tf("1m")


def served_page(*, instrument_id: int, timeframe_id: int, **filters) -> CandlePage:
    """A page of one series, its rows as `ServedCandle`s (the one shape reads serve)."""
    page = candle_list_text(instrument_id=instrument_id, timeframe_id=timeframe_id, **filters)
    return CandlePage(candles=[ServedCandle(*row) for row in page.candles], next_cursor=page.next_cursor)


def open_time(candle: ServedCandle) -> datetime:
    return ms_to_datetime(candle.open_time_ms)


def read_all(instrument, timeframe, **filters) -> tuple[list[datetime], int]:
    """Every open time over all pages, and the number of pages."""
    times, pages, cursor = [], 0, None
    while True:
        page = served_page(instrument_id=instrument.pk, timeframe_id=timeframe.pk, cursor=cursor, **filters)
        pages += 1
        times += [open_time(c) for c in page.candles]
        cursor = page.next_cursor
        if cursor is None:
            return times, pages
        assert pages < 100, "pagination does not end"


# --- candle_list_text: range, order, filters, cursors --------------------------------------------


@pytest.mark.django_db
def test_start_and_end_are_both_inclusive(fifty_minutes):
    btc, minute = fifty_minutes
    page = served_page(instrument_id=btc.pk, timeframe_id=minute.pk, start=at(10), end=at(14))
    assert [open_time(c) for c in page.candles] == [at(10), at(11), at(12), at(13), at(14)]
    assert page.next_cursor is None


@pytest.mark.django_db
def test_bounds_between_open_times_select_the_open_times_inside_them(fifty_minutes):
    btc, minute = fifty_minutes
    page = served_page(instrument_id=btc.pk, timeframe_id=minute.pk, start=at(10) - MINUTE / 2,
                       end=at(12) + MINUTE / 2)
    assert [open_time(c) for c in page.candles] == [at(10), at(11), at(12)]


@pytest.mark.django_db
def test_candles_come_oldest_first_or_newest_first_when_descending(fifty_minutes):
    btc, minute = fifty_minutes
    ascending = served_page(instrument_id=btc.pk, timeframe_id=minute.pk, limit=3)
    descending = served_page(instrument_id=btc.pk, timeframe_id=minute.pk, limit=3, descending=True)
    assert [open_time(c) for c in ascending.candles] == [at(0), at(1), at(2)]
    assert [open_time(c) for c in descending.candles] == [at(49), at(48), at(47)]


@pytest.mark.django_db
def test_the_confirmed_filter_returns_only_closed_or_only_open_candles(fifty_minutes):
    btc, minute = fifty_minutes
    closed = served_page(instrument_id=btc.pk, timeframe_id=minute.pk, confirmed=True, limit=100).candles
    still_open = served_page(instrument_id=btc.pk, timeframe_id=minute.pk, confirmed=False, limit=100).candles
    assert [open_time(c) for c in still_open] == [at(i) for i in range(0, 50, 3)]
    assert [open_time(c) for c in closed] == [at(i) for i in range(50) if i % 3]
    assert all(c.confirmed for c in closed)
    assert not any(c.confirmed for c in still_open)


@pytest.mark.django_db
def test_a_candle_reads_back_with_exact_decimals_and_its_source(btc, stored_candles, tf):
    stored_candles(btc, "1m", [T0], close=Decimal("43000.0"), vol=Decimal("0.00000001"), vol_ccy_quote=None,
                   source="rest")
    (candle,) = served_page(instrument_id=btc.pk, timeframe_id=tf("1m").pk).candles
    assert candle.close == "43000.0"
    assert Decimal(candle.vol).as_tuple() == Decimal("0.00000001").as_tuple()
    assert candle.vol_ccy_quote is None
    assert (open_time(candle), candle.confirmed) == (T0, True)
    assert list(Candle.objects.values_list("source", flat=True)) == ["rest"]


@pytest.mark.django_db
def test_only_the_requested_instrument_and_bar_are_listed(btc, instrument, stored_candles, tf):
    eth = instrument("ETH-USDT")
    stored_candles(btc, "1m", [at(0), at(1)])
    stored_candles(btc, "1H", [at(0)])
    stored_candles(eth, "1m", [at(2)])
    page = served_page(instrument_id=btc.pk, timeframe_id=tf("1m").pk)
    assert [open_time(c) for c in page.candles] == [at(0), at(1)]


@pytest.mark.django_db
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_pages_of_seven_return_every_one_of_fifty_candles_exactly_once_in_order(fifty_minutes, descending):
    btc, minute = fifty_minutes
    times, pages = read_all(btc, minute, limit=7, descending=descending)
    expected = [at(i) for i in range(50)]
    assert times == (expected[::-1] if descending else expected)
    assert pages == 8


@pytest.mark.django_db
def test_the_last_full_page_carries_no_cursor(btc, stored_candles, tf):
    stored_candles(btc, "1m", [at(i) for i in range(49)])
    times, pages = read_all(btc, tf("1m"), limit=7)
    assert len(times) == 49
    assert pages == 7


@pytest.mark.django_db
def test_pagination_keeps_the_bounds_and_filters_of_the_first_page(fifty_minutes):
    btc, minute = fifty_minutes
    times, _ = read_all(btc, minute, limit=4, start=at(5), end=at(30), confirmed=True, descending=True)
    assert times == [at(i) for i in range(30, 4, -1) if i % 3]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "cursor",
    ["not a cursor!", "", "YQ", forged_cursor("x123"), forged_cursor("a12x"), forged_cursor("a"), "\u00e9\u00e9"],
)
def test_a_cursor_this_server_did_not_issue_raises_invalid_cursor(fifty_minutes, cursor):
    btc, minute = fifty_minutes
    with pytest.raises(InvalidCursor):
        served_page(instrument_id=btc.pk, timeframe_id=minute.pk, cursor=cursor)


@pytest.mark.django_db
@pytest.mark.parametrize("ms", [10**16, -(10**16)], ids=["far future", "far past"])
def test_a_forged_cursor_beyond_the_calendar_raises_invalid_cursor(fifty_minutes, ms):
    btc, minute = fifty_minutes
    with pytest.raises(InvalidCursor):
        served_page(instrument_id=btc.pk, timeframe_id=minute.pk, cursor=forged_cursor(f"a{ms}"))


@pytest.mark.django_db
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_a_cursor_of_the_other_sort_order_raises_invalid_cursor(fifty_minutes, descending):
    btc, minute = fifty_minutes
    first = served_page(instrument_id=btc.pk, timeframe_id=minute.pk, limit=7, descending=descending)
    assert first.next_cursor is not None
    with pytest.raises(InvalidCursor, match="sort order"):
        served_page(instrument_id=btc.pk, timeframe_id=minute.pk, limit=7, descending=not descending,
                    cursor=first.next_cursor)


@pytest.mark.django_db
def test_a_limit_below_one_is_refused(fifty_minutes):
    btc, minute = fifty_minutes
    with pytest.raises(ValueError, match="limit"):
        served_page(instrument_id=btc.pk, timeframe_id=minute.pk, limit=0)


# --- candle_missing_ranges -------------------------------------------------------------------------


@pytest.fixture
def store_all_but(btc, stored_candles, tf):
    """Stores every expected open time of `code` in [start, end] except `holes`; returns the missing runs."""

    def store(code: str, start: datetime, end: datetime, holes: set[datetime]) -> list[MissingRange]:
        expected = expected_open_times(tf(code), start, end)
        assert holes <= set(expected), "a hole that is not an open time of the bar"
        stored_candles(btc, code, [t for t in expected if t not in holes])
        return candle_missing_ranges(instrument_id=btc.pk, timeframe=tf(code), start=start, end=end)

    return store


@pytest.mark.django_db
def test_missing_1m_candles_come_back_as_runs_including_at_both_ends_of_the_range(store_all_but):
    holes = {at(0), at(1), at(2), at(10), *(at(i) for i in range(20, 25)), at(58), at(59)}
    runs = store_all_but("1m", at(0), at(59), holes)
    assert runs == [(at(0), at(2), 3), (at(10), at(10), 1), (at(20), at(24), 5), (at(58), at(59), 2)]
    assert all(isinstance(run, MissingRange) for run in runs)


@pytest.mark.django_db
def test_unaligned_bounds_look_for_the_open_times_inside_them(btc, store_all_but, tf):
    store_all_but("1m", at(0), at(59), {at(0), at(59)})
    runs = candle_missing_ranges(instrument_id=btc.pk, timeframe=tf("1m"), start=at(0) - MINUTE / 2,
                                 end=at(59) + MINUTE / 2)
    assert runs == [(at(0), at(0), 1), (at(59), at(59), 1)]


@pytest.mark.django_db
def test_missing_1H_candles_come_back_as_runs(store_all_but):
    day = utc(2024, 1, 17)
    hour = timedelta(hours=1)
    holes = {day, day + 5 * hour, day + 6 * hour, day + 23 * hour}
    runs = store_all_but("1H", day, day + 23 * hour, holes)
    assert runs == [(day, day, 1), (day + 5 * hour, day + 6 * hour, 2), (day + 23 * hour, day + 23 * hour, 1)]


@pytest.mark.django_db
def test_missing_1D_candles_follow_hong_kong_days_and_utc_midnights_fill_nothing(btc, store_all_but, stored_candles):
    holes = {utc(2024, 1, 10, 16), utc(2024, 1, 13, 16), utc(2024, 1, 14, 16), utc(2024, 1, 19, 16)}
    # Candles at UTC midnight are not 1D open times; storing them must not hide the holes.
    stored_candles(btc, "1D", [utc(2024, 1, 11), utc(2024, 1, 14), utc(2024, 1, 15)])
    runs = store_all_but("1D", utc(2024, 1, 10), utc(2024, 1, 20), holes)
    assert runs == [
        (utc(2024, 1, 10, 16), utc(2024, 1, 10, 16), 1),
        (utc(2024, 1, 13, 16), utc(2024, 1, 14, 16), 2),
        (utc(2024, 1, 19, 16), utc(2024, 1, 19, 16), 1),
    ]


@pytest.mark.django_db
def test_missing_1Dutc_candles_follow_utc_days(btc, store_all_but, stored_candles):
    holes = {utc(2024, 1, 10), utc(2024, 1, 15), utc(2024, 1, 20)}
    stored_candles(btc, "1Dutc", [utc(2024, 1, 14, 16)])  # a Hong Kong midnight: not a 1Dutc open time
    runs = store_all_but("1Dutc", utc(2024, 1, 10), utc(2024, 1, 20), holes)
    assert runs == [(t, t, 1) for t in sorted(holes)]


@pytest.mark.django_db
def test_missing_1W_candles_are_the_weeks_opening_sunday_16_utc(store_all_but):
    holes = {utc(2024, 1, 7, 16), utc(2024, 2, 4, 16), utc(2024, 2, 11, 16), utc(2024, 2, 25, 16)}
    runs = store_all_but("1W", utc(2024, 1, 1), utc(2024, 3, 1), holes)
    assert runs == [
        (utc(2024, 1, 7, 16), utc(2024, 1, 7, 16), 1),
        (utc(2024, 2, 4, 16), utc(2024, 2, 11, 16), 2),
        (utc(2024, 2, 25, 16), utc(2024, 2, 25, 16), 1),
    ]


@pytest.mark.django_db
def test_missing_1M_candles_are_counted_in_months_across_month_ends(store_all_but):
    holes = {utc(2023, 11, 30, 16), utc(2024, 1, 31, 16), utc(2024, 2, 29, 16), utc(2024, 5, 31, 16)}
    runs = store_all_but("1M", utc(2023, 11, 15), utc(2024, 6, 15), holes)
    assert runs == [
        (utc(2023, 11, 30, 16), utc(2023, 11, 30, 16), 1),
        (utc(2024, 1, 31, 16), utc(2024, 2, 29, 16), 2),
        (utc(2024, 5, 31, 16), utc(2024, 5, 31, 16), 1),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "start", "end"),
    [
        ("1m", utc(2024, 1, 17, 12), utc(2024, 1, 17, 15)),
        ("1H", utc(2024, 1, 10), utc(2024, 1, 20)),
        ("1D", utc(2024, 1, 10), utc(2024, 3, 10)),
        ("1Dutc", utc(2024, 1, 10), utc(2024, 3, 10)),
        ("1W", utc(2023, 11, 15), utc(2024, 6, 15)),
        ("1Wutc", utc(2023, 11, 15), utc(2024, 6, 15)),
        ("1M", utc(2023, 11, 15), utc(2024, 6, 15)),
        ("1Mutc", utc(2023, 11, 15), utc(2024, 6, 15)),
        ("3M", utc(2023, 1, 15), utc(2025, 6, 15)),
    ],
)
def test_a_complete_range_has_nothing_missing(store_all_but, code, start, end):
    assert store_all_but(code, start, end, set()) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "start", "end", "expected"),
    [
        ("1m", utc(2024, 1, 17, 12), utc(2024, 1, 17, 12, 9), (utc(2024, 1, 17, 12), utc(2024, 1, 17, 12, 9), 10)),
        ("1D", utc(2024, 1, 1), utc(2024, 1, 31), (utc(2024, 1, 1, 16), utc(2024, 1, 30, 16), 30)),
        ("1M", utc(2023, 12, 1), utc(2024, 12, 31), (utc(2023, 12, 31, 16), utc(2024, 11, 30, 16), 12)),
        ("3Mutc", utc(2023, 1, 1), utc(2024, 12, 31), (utc(2023, 1, 1), utc(2024, 10, 1), 8)),
    ],
)
def test_an_empty_series_is_one_run_over_the_whole_range(btc, tf, code, start, end, expected):
    assert candle_missing_ranges(instrument_id=btc.pk, timeframe=tf(code), start=start, end=end) == [expected]


@pytest.mark.django_db
def test_candles_of_other_instruments_or_bars_do_not_fill_a_hole(btc, instrument, stored_candles, store_all_but):
    eth = instrument("ETH-USDT")
    stored_candles(eth, "1m", [at(5)])
    stored_candles(btc, "3m", [at(6)])
    runs = store_all_but("1m", at(0), at(9), {at(5), at(6)})
    assert runs == [(at(5), at(6), 2)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "start", "end"),
    [
        ("1D", utc(2024, 1, 17, 0), utc(2024, 1, 17, 15, 59)),
        ("1M", utc(2024, 2, 1), utc(2024, 2, 29, 15)),
        ("1m", utc(2024, 1, 17, 12, 0, 1), utc(2024, 1, 17, 12, 0, 59)),
        ("1H", utc(2024, 1, 17, 13), utc(2024, 1, 17, 12)),
    ],
    ids=["1D within one Hong Kong day", "1M within one month", "1m within one minute", "end before start"],
)
def test_a_range_holding_no_open_time_has_nothing_missing(btc, tf, code, start, end):
    assert candle_missing_ranges(instrument_id=btc.pk, timeframe=tf(code), start=start, end=end) == []


# --- candle_list_text ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_candle_list_text_gives_the_stored_digits_as_plain_text_and_epoch_ms(btc, stored_candles, tf):
    stored_candles(btc, "1m", [T0], close=Decimal("43000.10"), vol=Decimal("0.00000001"), vol_ccy_quote=None)
    (row,) = candle_list_text(instrument_id=btc.pk, timeframe_id=tf("1m").pk).candles
    assert row == ("2024-01-17T12:00:00Z", 1705492800000, "100", "110", "90", "43000.10", "0.00000001", "157.5",
                   None, True)
    by_name = candle_list_text(inst_id="BTC-USDT", bar="1m").candles
    assert by_name == [row]
    assert candle_list_text(inst_id="BTC-USDT", bar="1M").candles == []
    assert candle_list_text(inst_id="NOPE", bar="1m").candles == []


@pytest.fixture
def minutes_with_gaps(btc, stored_candles, tf):
    """1m candles in runs far apart: gaps much longer than the span a page of five first reads."""
    minutes = [*range(0, 10), *range(100, 105), 1000, *range(5000, 5004)]
    for i in minutes:
        stored_candles(btc, "1m", [at(i)], confirmed=i % 4 != 0)
    return btc, tf("1m"), [at(i) for i in minutes]


def pages_of_text(btc, timeframe, **filters) -> list[datetime]:
    times, cursor = [], None
    while True:
        page = candle_list_text(instrument_id=btc.pk, timeframe_id=timeframe.pk, limit=5, cursor=cursor, **filters)
        times += [ms_to_datetime(row[1]) for row in page.candles]
        cursor = page.next_cursor
        if cursor is None:
            return times


@pytest.mark.django_db
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize(("start", "end"), [(-30, None), (3, None), (None, 6000), (None, 102), (2, 5002)],
                         ids=["from before", "from inside", "to after", "to inside", "both"])
def test_pages_read_across_gaps_longer_than_a_page_and_miss_nothing(minutes_with_gaps, descending, start, end):
    btc, minute, stored = minutes_with_gaps
    bounds = {"start": None if start is None else at(start), "end": None if end is None else at(end)}
    expected = [t for t in stored if (bounds["start"] is None or t >= bounds["start"])
                and (bounds["end"] is None or t <= bounds["end"])]

    assert pages_of_text(btc, minute, descending=descending, **bounds) == sorted(expected, reverse=descending)
    only_closed = pages_of_text(btc, minute, descending=descending, confirmed=True, **bounds)
    assert only_closed == [t for t in sorted(expected, reverse=descending) if (t - T0) // MINUTE % 4 != 0]


def test_the_newest_page_is_right_however_the_series_changed_since_the_last_one(fifty_minutes):
    """The newest page starts its read where the previous newest page began (a hint, per process): newer candles,
    and a hint past every stored candle, must change nothing in what a page holds."""
    from candles.models import Candle

    instrument, timeframe = fifty_minutes

    def newest(limit: int) -> list[int]:
        page = candle_list_text(instrument_id=instrument.pk, timeframe_id=timeframe.pk, descending=True, limit=limit)
        return [row[1] for row in page.candles]

    ms = [int(at(i).timestamp() * 1000) for i in range(50)]
    assert newest(5) == ms[49:44:-1]
    assert newest(20) == ms[49:29:-1]  # more than the hint's span: read on beyond it
    Candle.objects.filter(instrument=instrument, open_time__gte=at(40)).delete()  # the hint is now past the data
    assert newest(5) == ms[39:34:-1]
