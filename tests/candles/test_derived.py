"""Derived bars (candles/derived.py): the grammar, the alignment, the stored bar each is built from, and pages that
equal the same bars built in Python from the simulator's ground truth, gaps and all."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from candles import derived
from candles.derived import MAX_SOURCE_ROWS, NotDerivable, derived_bar, derived_list_text, page_size, resolve
from candles.retention import iso_z
from candles.storage import CandleRow, candles_upsert
from collectors.simulator.config import SimulatorConfig
from collectors.simulator.market import Market
from tests.conftest import utc

pytestmark = pytest.mark.django_db

HOUR = 3_600_000
DAY = 24 * HOUR
SYMBOL = "BTC-USDT"
LIST_MS = 1_704_067_200_000 - 3 * 365 * DAY  # three years of months before 2024-01-01, for the calendar bars
NOW_MS = 1_705_449_600_000  # 2024-01-17T00:00Z


def market() -> Market:
    return Market(SimulatorConfig(seed=16, instruments=1, list_time_ms=LIST_MS), clock=lambda: NOW_MS)


def store(rows: list[list[str]], bar: str, *, unconfirmed: tuple[int, ...] = ()) -> None:
    """Truth rows as the collector would store them; `unconfirmed`: open times stored as not yet confirmed."""
    result = candles_upsert(rows=[
        CandleRow(SYMBOL, bar, int(r[0]), *r[1:8], int(r[0]) not in unconfirmed, "ws", 1) for r in rows
    ])
    assert result.written == len(rows)
    assert not result.rejected


def fixed_floor(ms: int, length_ms: int, zone_hours: int, first_day_ms: int = 0) -> int:
    """The open of the bucket holding `ms`: whole lengths counted from `first_day_ms` on the zone's clock."""
    local = ms + zone_hours * HOUR - first_day_ms
    return local - local % length_ms + first_day_ms - zone_hours * HOUR


def month_floor(ms: int, months: int, zone_hours: int) -> int:
    """The open of the bucket holding `ms`: calendar months on the zone's clock, `months` at a time from 1970-01."""
    local = datetime.fromtimestamp((ms + zone_hours * HOUR) / 1000, tz=UTC)
    index = (local.year - 1970) * 12 + local.month - 1
    index -= index % months
    start = datetime(1970 + index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000) - zone_hours * HOUR


def text(value: Decimal) -> str:
    return format(value, "f")


def built_in_python(rows: list[list[str]], floor, expected: int, *, unconfirmed: tuple[int, ...] = ()) -> list:
    """The derived bar as the documentation defines it, from the stored rows: (CandleText…, constituents, expected)."""
    buckets: dict[int, list[list[str]]] = {}
    for row in sorted(rows, key=lambda r: int(r[0])):
        buckets.setdefault(floor(int(row[0])), []).append(row)
    built = []
    for open_ms, members in sorted(buckets.items()):
        confirmed = len(members) == expected and all(int(m[0]) not in unconfirmed for m in members)
        built.append((
            iso_z(datetime.fromtimestamp(open_ms / 1000, tz=UTC)), open_ms, members[0][1],
            text(max(Decimal(m[2]) for m in members)), text(min(Decimal(m[3]) for m in members)), members[-1][4],
            text(sum(Decimal(m[5]) for m in members)), text(sum(Decimal(m[6]) for m in members)),
            text(sum(Decimal(m[7]) for m in members)), confirmed, len(members), expected,
        ))
    return built


def served(code: str, **filters) -> list:
    """Every row of the derived bar, page after page, with its coverage."""
    bar = derived_bar(code)
    rows, cursor = [], None
    while True:
        page = derived_list_text(bar=bar, inst_id=SYMBOL, cursor=cursor, **filters)
        rows += [(*row, *coverage) for row, coverage in zip(page.candles, page.coverage, strict=True)]
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


# --- the grammar, the alignment and the source ------------------------------------------------------------


@pytest.mark.parametrize(("code", "source", "ratio"), [
    ("10s", "1s", 10), ("7s", "1s", 7), ("2m", "1m", 2), ("7m", "1m", 7), ("45m", "15m", 3), ("90m", "30m", 3),
    ("8H", "4H", 2), ("8Hutc", "4H", 2), ("10H", "2H", 5), ("10Hutc", "2H", 5), ("2Hutc", "2H", 1),
    ("4D", "2D", 2), ("4Dutc", "2Dutc", 2), ("10D", "5D", 2), ("14D", "2D", 7), ("2W", "1W", 2),
    ("2Wutc", "1Wutc", 2), ("2M", "1M", 2), ("6M", "3M", 2), ("6Mutc", "3Mutc", 2), ("12M", "3M", 4),
])
def test_a_derived_bar_is_built_from_the_coarsest_stored_bar_whose_candles_tile_it(db, code, source, ratio):
    bar = derived_bar(code)
    assert (bar.source, bar.ratio) == (source, ratio)


def test_14D_is_not_built_from_weeks_because_weeks_start_on_mondays_and_day_bars_on_the_epoch(db):
    # 1970-01-01 was a Thursday: a 14-day bucket holds no whole number of Monday weeks.
    assert derived_bar("14D").source == "2D"


def test_hong_kong_alignment_from_6H_up_and_utc_below_or_with_the_suffix(db):
    eight = -8 * HOUR
    assert {code: derived_bar(code).spec.anchor_ms for code in ("5H", "5Hutc", "7H", "7Hutc", "3D", "3Dutc")} == {
        "5H": 0, "5Hutc": 0, "7H": eight, "7Hutc": 0, "3D": eight, "3Dutc": 0,
    }
    assert derived_bar("2W").spec.anchor_ms == 4 * DAY + eight  # Monday 1970-01-05, 00:00 in Hong Kong
    assert derived_bar("6M").spec.utc_offset_hours == 8
    assert derived_bar("6Mutc").spec.utc_offset_hours == 0


def test_bars_okx_offers_are_served_as_stored_not_derived(db):
    assert [resolve(code) for code in ("1m", "2D", "1M", "3Mutc")] == [None] * 4
    assert resolve("7m") is not None


@pytest.mark.parametrize("code", ["1h", "0m", "01m", "7X", "5mutc", "30sutc", "1.5H", "m", "10000m", "7mUTC"])
def test_a_name_outside_the_grammar_is_not_derivable(db, code):
    with pytest.raises(NotDerivable):
        derived_bar(code)


def test_a_bar_with_no_stored_divisor_is_not_derivable(db, monkeypatch):
    fixed_only = [(tf, spec) for tf, spec in derived._stored_bars() if not spec.months]
    monkeypatch.setattr(derived, "_stored_bars", lambda: fixed_only)
    with pytest.raises(NotDerivable, match="no stored bar divides '2M'"):
        derived_bar("2M")


def test_an_active_bar_is_preferred_over_a_coarser_one_no_longer_collected(db, tf):
    four = tf("4H")
    four.is_active = False
    four.save()
    assert (derived_bar("8H").source, derived_bar("8H").ratio) == ("2H", 4)


def test_bars_of_many_candles_a_bucket_get_shorter_pages(db):
    assert page_size(derived_bar("7m"), 1000) == 1000
    assert page_size(derived_bar("9999s"), 1000) * 9999 <= MAX_SOURCE_ROWS


# --- values against the simulator's truth ----------------------------------------------------------------


def test_7m_equals_the_bars_built_in_python_from_the_truth_in_both_orders(btc):
    rows = market().truth_range(SYMBOL, "1m", NOW_MS - 5 * HOUR - 4 * 60_000, NOW_MS)
    store(rows, "1m")
    expected = built_in_python(rows, lambda ms: fixed_floor(ms, 7 * 60_000, 0), 7)
    assert served("7m", limit=17) == expected
    assert served("7m", limit=17, descending=True) == expected[::-1]
    assert expected[0][-2] < 7
    assert not expected[0][9]


def test_a_gap_and_an_unconfirmed_constituent_leave_the_bucket_unconfirmed_and_show_in_its_counts(btc):
    rows = market().truth_range(SYMBOL, "1m", NOW_MS - 2 * HOUR, NOW_MS - 60_000)
    gap = {int(r[0]) for r in rows[30:33]}  # three minutes never stored
    kept = [r for r in rows if int(r[0]) not in gap]
    late = (int(rows[50][0]),)  # stored, never confirmed
    store(kept, "1m", unconfirmed=late)
    expected = built_in_python(kept, lambda ms: fixed_floor(ms, 7 * 60_000, 0), 7, unconfirmed=late)
    assert served("7m", limit=1000) == expected
    short = [row for row in expected if row[10] < 7]
    assert short
    assert all(not row[9] for row in short)
    assert not next(row for row in expected if row[1] == fixed_floor(late[0], 7 * 60_000, 0))[9]
    assert served("7m", limit=1000, confirmed=False) == [row for row in expected if not row[9]]
    assert served("7m", limit=1000, confirmed=True) == [row for row in expected if row[9]]


@pytest.mark.parametrize(("code", "source", "length", "zone"), [
    ("8H", "4H", 8 * HOUR, 8), ("8Hutc", "4H", 8 * HOUR, 0), ("10H", "2H", 10 * HOUR, 8),
    ("10Hutc", "2H", 10 * HOUR, 0), ("16H", "4H", 16 * HOUR, 8), ("16Hutc", "4H", 16 * HOUR, 0),
])
def test_hour_bars_of_6H_and_up_follow_hong_kong_time_unless_utc(btc, code, source, length, zone):
    rows = market().truth_range(SYMBOL, source, NOW_MS - 12 * DAY, NOW_MS)
    store(rows, source)
    expected = built_in_python(rows, lambda ms: fixed_floor(ms, length, zone), length // (int(source[:-1]) * HOUR))
    assert served(code, limit=7) == expected


def test_10H_and_10Hutc_cut_the_same_candles_at_different_hours(btc):
    store(market().truth_range(SYMBOL, "2H", NOW_MS - 3 * DAY, NOW_MS), "2H")
    # Hong Kong's midnight is 16:00 UTC: 10H counts from 1969-12-31T16:00Z, two hours off the UTC grid of 10Hutc.
    assert {row[1] % (10 * HOUR) for row in served("10H", limit=100)} == {2 * HOUR}
    assert {row[1] % (10 * HOUR) for row in served("10Hutc", limit=100)} == {0}


@pytest.mark.parametrize(("code", "source", "length", "zone", "first_day"), [
    ("4D", "2D", 4 * DAY, 8, 0), ("4Dutc", "2Dutc", 4 * DAY, 0, 0), ("2W", "1W", 14 * DAY, 8, 4 * DAY),
    ("2Wutc", "1Wutc", 14 * DAY, 0, 4 * DAY),
])
def test_day_and_week_bars_follow_hong_kong_time_unless_utc(btc, code, source, length, zone, first_day):
    rows = market().truth_range(SYMBOL, source, NOW_MS - 200 * DAY, NOW_MS)
    store(rows, source)
    ratio = 2
    expected = built_in_python(rows, lambda ms: fixed_floor(ms, length, zone, first_day), ratio)
    assert served(code, limit=9) == expected
    assert all(row[0].endswith("T16:00:00Z") == (zone == 8) for row in expected)


@pytest.mark.parametrize(("code", "source", "zone"), [("6M", "3M", 8), ("6Mutc", "3Mutc", 0)])
def test_month_bars_are_calendar_half_years_on_the_bar_s_clock(btc, code, source, zone):
    rows = market().truth_range(SYMBOL, source, LIST_MS, NOW_MS)
    store(rows, source)
    expected = built_in_python(rows, lambda ms: month_floor(ms, 6, zone), 2)
    assert served(code, limit=2) == expected
    opens = {"01-01T00:00:00Z", "07-01T00:00:00Z"} if zone == 0 else {"12-31T16:00:00Z", "06-30T16:00:00Z"}
    assert {row[0][5:] for row in expected} == opens


# --- exact text, ranges and pages ------------------------------------------------------------------------


def test_numbers_keep_their_exact_decimal_text(btc, stored_candles):
    t0 = utc(2024, 1, 16, 19, 0)
    stored_candles(btc, "1m", [t0], open=Decimal("43000.10"), high=Decimal("43100.00"), low=Decimal("42999.9"),
                   close=Decimal("43000.0"), vol=Decimal("0.00000001"), vol_ccy=Decimal("17447600.212916623"),
                   vol_ccy_quote=None)
    stored_candles(btc, "1m", [utc(2024, 1, 16, 19, 1)], open=Decimal("43000.0"), high=Decimal("43050"),
                   low=Decimal("42990.50"), close=Decimal("43010.20"), vol=Decimal("0.2"), vol_ccy=Decimal("1.1"),
                   vol_ccy_quote=Decimal("3"))
    page = derived_list_text(bar=derived_bar("2m"), inst_id=SYMBOL)
    assert page.candles == [("2024-01-16T19:00:00Z", 1705431600000, "43000.10", "43100.00", "42990.50", "43010.20",
                             "0.20000001", "17447601.312916623", None, True)]
    assert page.coverage == [(2, 2)]


def test_start_and_end_bound_bucket_open_times_and_pages_miss_nothing(btc):
    rows = market().truth_range(SYMBOL, "1m", NOW_MS - 6 * HOUR, NOW_MS)
    store(rows, "1m")
    expected = built_in_python(rows, lambda ms: fixed_floor(ms, 7 * 60_000, 0), 7)
    start, end = expected[3][1] - 60_000, expected[40][1] + 60_000  # inside buckets 2 and 40
    window = [row for row in expected if start <= row[1] <= end]
    assert window[0][1] == expected[3][1]
    assert window[-1][1] == expected[40][1]
    as_dt = {"start": datetime.fromtimestamp(start / 1000, tz=UTC), "end": datetime.fromtimestamp(end / 1000, tz=UTC)}
    for limit in (1, 2, 5, 38, 1000):
        assert served("7m", limit=limit, **as_dt) == window
        assert served("7m", limit=limit, descending=True, **as_dt) == window[::-1]
    assert served("7m", limit=4, start=as_dt["start"]) == expected[3:]
    assert served("7m", limit=4, end=as_dt["end"], descending=True) == expected[:41][::-1]


def test_pages_step_over_long_gaps_without_losing_buckets(btc):
    rows = market().truth_range(SYMBOL, "1m", NOW_MS - 3 * DAY, NOW_MS)
    sparse = rows[:20] + rows[2000:2010] + rows[-15:]  # two gaps of more than a page of 7m buckets each
    store(sparse, "1m")
    expected = built_in_python(sparse, lambda ms: fixed_floor(ms, 7 * 60_000, 0), 7)
    start = datetime.fromtimestamp((NOW_MS - 3 * DAY) / 1000, tz=UTC)
    from_start = [row for row in expected if row[1] >= NOW_MS - 3 * DAY]  # start bounds the bucket's open time
    for limit in (1, 3, 1000):
        assert served("7m", limit=limit, start=start) == from_start
        assert served("7m", limit=limit, descending=True) == expected[::-1]


def test_another_instrument_s_candles_are_not_mixed_in(btc, instrument):
    rows = market().truth_range(SYMBOL, "1m", NOW_MS - HOUR, NOW_MS)
    store(rows, "1m")
    instrument("ETH-USDT")
    candles_upsert(rows=[CandleRow("ETH-USDT", "1m", int(r[0]), "1", "1", "1", "1", "1", "1", "1", True, "ws", 1)
                    for r in rows])
    assert served("7m", limit=3) == built_in_python(rows, lambda ms: fixed_floor(ms, 7 * 60_000, 0), 7)
