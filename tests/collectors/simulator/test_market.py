"""The market alone: determinism, candle invariants, bar alignment (pure, a fixed clock, no sockets)."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from collectors.simulator import Market, SimulatorConfig
from collectors.simulator.bars import BARS
from collectors.simulator.market import substeps_of

NOW = calendar.timegm((2026, 3, 18, 13, 27, 41)) * 1000 + 250
LIST_TIME = calendar.timegm((2026, 1, 1, 0, 0, 0)) * 1000


def ms(*fields: int) -> int:
    return calendar.timegm((*fields, 0, 0, 0, 0, 0)[:6]) * 1000


def market(seed: int = 1, now: int = NOW, **fields) -> Market:
    fields.setdefault("swaps", True)
    return Market(SimulatorConfig(seed=seed, list_time_ms=LIST_TIME, **fields), clock=lambda: now)


def test_same_seed_same_truth_and_other_seed_differs():
    first, again, other = market(1), market(1), market(2)
    for inst_id in ("BTC-USDT", "SYN7-USDT", "ETH-USDT-SWAP"):
        window = (NOW - 3 * 3_600_000, NOW)
        assert first.truth_range(inst_id, "1m", *window) == again.truth_range(inst_id, "1m", *window)
        assert first.truth_range(inst_id, "1m", *window) != other.truth_range(inst_id, "1m", *window)
        assert first.current(inst_id, "1m", NOW) == again.current(inst_id, "1m", NOW)


def test_instrument_names_and_count():
    names = list(market(instruments=8, swaps=False).instruments)
    assert names == [
        "BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "SYN5-USDT", "SYN6-USDT", "SYN7-USDT",
        "REBASE-USDT",
    ]
    assert len(market(instruments=3000, swaps=False).instruments) == 3001


@pytest.mark.parametrize("bar", ["1s", "1m", "15m", "1H", "1D", "1Mutc"])
@pytest.mark.parametrize("inst_id", ["BTC-USDT", "DOGE-USDT-SWAP", "SYN9-USDT"])
def test_open_versions_stay_inside_the_truth_and_end_at_it(inst_id, bar):
    m = market(instruments=10)
    b = BARS[bar]
    open_ms = b.prev_open(b.prev_open(b.floor(NOW)))
    close_ms = b.next_open(open_ms)
    truth = m.truth(inst_id, bar, open_ms)
    assert truth is not None
    assert truth[0] == str(open_ms)
    assert truth[8] == "1"
    high, low = Decimal(truth[2]), Decimal(truth[3])
    versions = [m.current(inst_id, bar, open_ms + (close_ms - open_ms) * k // 40) for k in range(40)]
    versions.append(m.current(inst_id, bar, close_ms - 1))
    previous_vol = Decimal(-1)
    for version in versions:
        o, h, lo, c, vol = (Decimal(v) for v in version[1:6])
        assert version[0] == str(open_ms)
        assert version[8] == "0"
        assert low <= lo <= min(o, c) <= max(o, c) <= h <= high
        assert o == Decimal(truth[1])
        assert vol >= previous_vol
        previous_vol = vol
    assert versions[-1][:8] == truth[:8]
    assert len({tuple(v) for v in versions}) == substeps_of(b)


def test_rows_are_plain_decimal_strings_with_tick_and_lot_precision():
    m = market(instruments=12)
    for inst in m.instruments.values():
        row = m.current(inst.inst_id, "1H", NOW)
        assert all(type(v) is str for v in row)
        for price in row[1:5]:
            assert "e" not in price.lower()
            assert Decimal(price) > 0
            assert -Decimal(price).as_tuple().exponent <= inst.tick_decimals
            assert not price.endswith(".")
            assert not (("." in price) and price.endswith("0"))
        assert -Decimal(row[5]).as_tuple().exponent <= inst.lot_decimals


def test_each_candle_opens_at_the_previous_close():
    rows = market().truth_range("ETH-USDT", "5m", NOW - 6 * 3_600_000, NOW)
    assert len(rows) == 71  # 07:30 .. 13:20; the 13:25 candle is still open
    for earlier, later in itertools.pairwise(rows):
        assert int(later[0]) - int(earlier[0]) == 300_000
        assert later[1] == earlier[4]


def test_truth_is_none_for_open_misaligned_or_unlisted_candles():
    m = market()
    bar = BARS["1m"]
    assert m.truth("BTC-USDT", "1m", bar.floor(NOW)) is None
    assert m.truth("BTC-USDT", "1m", bar.floor(NOW) - 60_000) is not None
    assert m.truth("BTC-USDT", "1m", bar.floor(NOW) - 59_000) is None
    assert m.truth("BTC-USDT", "1m", LIST_TIME - 60_000) is None
    assert m.truth("BTC-USDT", "1m", LIST_TIME) is not None
    with pytest.raises(KeyError):
        m.truth("NOPE-USDT", "1m", LIST_TIME)
    with pytest.raises(KeyError):
        m.truth("BTC-USDT", "1h", LIST_TIME)


def test_truth_range_is_inclusive_and_oldest_first():
    m = market()
    start = BARS["1m"].floor(NOW) - 10 * 60_000
    rows = m.truth_range("BTC-USDT", "1m", start, start + 3 * 60_000)
    assert [int(r[0]) for r in rows] == [start + k * 60_000 for k in range(4)]
    assert m.truth_range("BTC-USDT", "1m", start + 1, start + 60_000) == rows[1:2]
    assert m.truth_range("BTC-USDT", "1m", NOW - 1000, NOW + 10**9) == []


def test_quiet_instruments_are_flat_with_zero_volume():
    m = market(instruments=10, quiet_fraction=0.3)
    quiet = [inst for inst in m.instruments.values() if inst.quiet]
    assert len({inst.base_ccy for inst in quiet}) == 3
    for inst in quiet:
        rows = [*m.truth_range(inst.inst_id, "1m", NOW - 600000, NOW), m.current(inst.inst_id, "1m", NOW)]
        for row in rows:
            assert row[1] == row[2] == row[3] == row[4] == rows[0][1]
            assert row[5:8] == ["0", "0", "0"]
    assert all(not inst.quiet for inst in market(quiet_fraction=0).instruments.values())


def test_confirm_omission_is_deterministic_and_follows_the_rate():
    m = market()
    opens = range(LIST_TIME, LIST_TIME + 2000 * 60_000, 60_000)
    omitted = [m.confirm_omitted("BTC-USDT", "1m", o, 0.25) for o in opens]
    assert omitted == [market().confirm_omitted("BTC-USDT", "1m", o, 0.25) for o in opens]
    assert 400 < sum(omitted) < 600
    assert all(m.confirm_omitted("BTC-USDT", "1m", o, 1.0) for o in opens)
    assert not any(m.confirm_omitted("BTC-USDT", "1m", o, 0.0) for o in opens)


def _utc(open_ms: int) -> datetime:
    return datetime.fromtimestamp(open_ms / 1000, UTC)


@pytest.mark.parametrize(
    ("bar", "moment", "expected_open"),
    [
        ("1m", ms(2026, 3, 18, 13, 27, 41) + 250, ms(2026, 3, 18, 13, 27)),
        ("1H", ms(2026, 3, 18, 13, 27), ms(2026, 3, 18, 13)),
        ("4H", ms(2026, 3, 18, 13, 27), ms(2026, 3, 18, 12)),
        # 6H on Hong Kong time opens at 04, 10, 16, 22 UTC; 6Hutc at 00, 06, 12, 18.
        ("6H", ms(2026, 3, 18, 13, 27), ms(2026, 3, 18, 10)),
        ("6H", ms(2026, 3, 18, 3, 59), ms(2026, 3, 17, 22)),
        ("6Hutc", ms(2026, 3, 18, 13, 27), ms(2026, 3, 18, 12)),
        ("12H", ms(2026, 3, 18, 13, 27), ms(2026, 3, 18, 4)),
        ("1D", ms(2026, 3, 18, 13, 27), ms(2026, 3, 17, 16)),
        ("1D", ms(2026, 3, 18, 16, 0), ms(2026, 3, 18, 16)),
        ("1Dutc", ms(2026, 3, 18, 13, 27), ms(2026, 3, 18)),
        # 2026-03-16 is a Monday: 1W opens Monday 00:00 Hong Kong = Sunday 16:00 UTC.
        ("1W", ms(2026, 3, 18, 13, 27), ms(2026, 3, 15, 16)),
        ("1W", ms(2026, 3, 15, 15, 59), ms(2026, 3, 8, 16)),
        ("1Wutc", ms(2026, 3, 18, 13, 27), ms(2026, 3, 16)),
        ("1M", ms(2026, 3, 18, 13, 27), ms(2026, 2, 28, 16)),
        ("1M", ms(2026, 3, 31, 16, 0), ms(2026, 3, 31, 16)),
        ("1Mutc", ms(2026, 3, 18, 13, 27), ms(2026, 3, 1)),
        ("3M", ms(2026, 3, 18, 13, 27), ms(2025, 12, 31, 16)),
        ("3M", ms(2026, 5, 18), ms(2026, 3, 31, 16)),
        ("3Mutc", ms(2026, 5, 18), ms(2026, 4, 1)),
        # 2D/3D/5D count days from 1970-01-01 00:00 in their zone.
        ("3Dutc", ms(2026, 3, 18, 13, 27), ms(1970, 1, 1) + (ms(2026, 3, 18) // 86_400_000 // 3 * 3) * 86_400_000),
    ],
)
def test_bar_alignment(bar, moment, expected_open):
    b = BARS[bar]
    assert b.floor(moment) == expected_open, (_utc(b.floor(moment)), _utc(expected_open))
    assert b.floor(expected_open) == expected_open
    assert b.floor(b.next_open(expected_open) - 1) == expected_open
    assert b.prev_open(b.next_open(expected_open)) == expected_open


def test_calendar_bars_step_by_months():
    b = BARS["1M"]
    opens = [ms(2025, 12, 31, 16)]
    for _ in range(3):
        opens.append(b.next_open(opens[-1]))
    assert opens == [ms(2025, 12, 31, 16), ms(2026, 1, 31, 16), ms(2026, 2, 28, 16), ms(2026, 3, 31, 16)]
    q = BARS["3Mutc"]
    assert q.next_open(ms(2025, 10, 1)) == ms(2026, 1, 1)
    assert q.prev_open(ms(2026, 1, 1)) == ms(2025, 10, 1)


def test_every_bar_of_the_protocol_is_known_and_hong_kong_bars_are_offset():
    assert len(BARS) == 27
    for name, bar in BARS.items():
        moment = NOW
        assert bar.floor(moment) <= moment < bar.next_open(bar.floor(moment))
        if name.endswith("utc"):
            hk = BARS[name[:-3]]
            assert hk.floor(moment) != bar.floor(moment)


def test_pushes_are_the_json_orjson_writes_for_every_kind_of_row():
    from collectors.simulator.messages import push_frame, push_frame_of, push_prefix

    m = market(instruments=30)
    for inst_id, bar_name in itertools.product(list(m.instruments), ["1s", "1m", "1D"]):
        inst, bar = m.instruments[inst_id], m.bars[bar_name]
        open_ms = bar.floor(NOW) - 3 * (bar.duration_ms or 0)
        for substep, confirmed in [(1, False), (substeps_of(bar), True)]:
            row = m.row(inst, bar, open_ms, substep, confirmed=confirmed)
            name = "candle" + bar_name
            assert push_frame_of(push_prefix(name, inst_id), row) == push_frame(name, inst_id, row)


def test_rows_do_not_depend_on_what_was_formatted_before():
    warm, cold = market(instruments=12), market(instruments=12)
    moments = [(inst_id, "1m", ms(2026, 3, 18) + k * 60_000) for inst_id in warm.instruments for k in range(20)]
    for inst_id, bar_name, open_ms in moments:  # fill the warm market's caches
        warm.row(warm.instruments[inst_id], warm.bars[bar_name], open_ms, 12, confirmed=True)
    for inst_id, bar_name, open_ms in reversed(moments):
        assert (warm.row(warm.instruments[inst_id], warm.bars[bar_name], open_ms, 7, confirmed=False)
                == cold.row(cold.instruments[inst_id], cold.bars[bar_name], open_ms, 7, confirmed=False))
