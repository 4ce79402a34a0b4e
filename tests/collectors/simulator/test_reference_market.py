"""Mark-price and index candles in the market alone: which series exist, their rows, and how they track the
trade price (pure, a fixed clock, no sockets)."""

from __future__ import annotations

import calendar
import itertools
from decimal import Decimal

import pytest

from collectors.simulator import Market, SimulatorConfig
from collectors.simulator.bars import BARS
from collectors.simulator.reference import FUTURES_ANNUAL_BASIS, MARK_BAND, SWAP_PREMIUM_MAX, YEAR_MS

NOW = calendar.timegm((2026, 3, 18, 13, 27, 41)) * 1000 + 250
LIST_TIME = calendar.timegm((2026, 1, 1, 0, 0, 0)) * 1000
HOUR = 3_600_000
# Bars of every alignment: minutes, hours, Hong Kong and UTC days, weeks, months.
BARS_TO_CHECK = ["1m", "15m", "1H", "6H", "6Hutc", "1D", "1Dutc", "1W", "1M", "1Mutc"]


def market(seed: int = 1, now: int = NOW, clock: list[int] | None = None, **fields) -> Market:
    """A market at `now`, or at `clock[0]` as the test moves it."""
    fields.setdefault("swaps", True)
    fields.setdefault("futures", 16)
    moment = clock or [now]
    return Market(SimulatorConfig(seed=seed, list_time_ms=LIST_TIME, **fields), clock=lambda: moment[0])


def recent(bar: str, count: int = 60) -> int:
    """The start of a window of about `count` candles of the bar before NOW (months: from the listing)."""
    b = BARS[bar]
    return LIST_TIME if b.is_calendar else max(LIST_TIME, NOW - count * b.duration_ms)


def tick(text: str) -> Decimal:
    """The unit of the last digit of a price as written."""
    return Decimal(1).scaleb(Decimal(text).as_tuple().exponent)


def futures(m: Market) -> list[str]:
    return [inst_id for inst_id, inst in m.instruments.items() if inst.inst_type == "FUTURES"]


def test_indices_are_the_contracts_underlyings_and_the_spot_pairs():
    m = market(instruments=3, swaps=1, futures=16)
    assert list(m.indices) == ["BTC-USDT", "ETH-USDT", "SOL-USDT", "BTC-USD", "ETH-USD", "REBASE-USDT"]
    btc_usd = m.indices["BTC-USD"]
    assert (btc_usd.base_ccy, btc_usd.quote_ccy, btc_usd.tick_decimals) == ("BTC", "USD", 1)
    assert all(index.list_time_ms == LIST_TIME for index in m.indices.values())


def test_listing_an_instrument_at_runtime_names_its_index():
    m = market(instruments=2, swaps=False, futures=0)
    assert "NEW-USDT" not in m.indices
    m.list_instrument("NEW-USDT-SWAP", list_time_ms=NOW - 10 * HOUR)
    assert m.indices["NEW-USDT"].list_time_ms == NOW - 10 * HOUR
    assert m.first_open("NEW-USDT", "1H", price="index") == m.first_open("NEW-USDT-SWAP", "1H", price="mark")
    assert len(m.truth_range("NEW-USDT", "1H", 0, NOW, price="index")) == 10


@pytest.mark.parametrize("bar", BARS_TO_CHECK)
def test_mark_and_index_candles_are_six_string_fields_aligned_like_the_trade_candles(bar):
    m = market()
    start = recent(bar)
    trade = m.truth_range("BTC-USDT-SWAP", bar, start, NOW)
    mark = m.truth_range("BTC-USDT-SWAP", bar, start, NOW, price="mark")
    index = m.truth_range("BTC-USDT", bar, start, NOW, price="index")
    assert trade
    assert [row[0] for row in mark] == [row[0] for row in index] == [row[0] for row in trade]
    for row in mark + index:
        assert len(row) == 6
        assert all(type(value) is str for value in row)
        assert row[5] == "1"
        o, h, lo, c = (Decimal(value) for value in row[1:5])
        assert 0 < lo <= min(o, c) <= max(o, c) <= h
        assert all(-Decimal(value).as_tuple().exponent <= 1 for value in row[1:5])  # BTC's tick: 0.1
    for series in (mark, index):
        for earlier, later in itertools.pairwise(series):
            assert later[1] == earlier[4]  # a candle opens where the previous one closed


def test_the_existing_signature_still_gives_trade_candles():
    m = market()
    rows = m.truth_range("ETH-USDT-SWAP", "5m", NOW - HOUR, NOW)
    assert rows == m.truth_range("ETH-USDT-SWAP", "5m", NOW - HOUR, NOW, price="trade")
    assert {len(row) for row in rows} == {9}
    assert m.truth("ETH-USDT-SWAP", "5m", int(rows[0][0])) == rows[0]
    assert m.truth("ETH-USDT-SWAP", "5m", int(rows[0][0]), price="mark") == m.truth_range(
        "ETH-USDT-SWAP", "5m", NOW - HOUR, NOW, price="mark")[0]


@pytest.mark.parametrize(("price", "series_id"), [("mark", "SOL-USDT-SWAP"), ("index", "SOL-USDT")])
@pytest.mark.parametrize("bar", ["1m", "1H", "1D"])
def test_open_versions_stay_inside_the_truth_and_end_at_it(price, series_id, bar):
    m = market()
    b = BARS[bar]
    open_ms = b.prev_open(b.prev_open(b.floor(NOW)))
    close_ms = b.next_open(open_ms)
    truth = m.truth(series_id, bar, open_ms, price=price)
    assert truth is not None
    high, low = Decimal(truth[2]), Decimal(truth[3])
    versions = [m.current(series_id, bar, open_ms + (close_ms - open_ms) * k // 40, price=price) for k in range(40)]
    versions.append(m.current(series_id, bar, close_ms - 1, price=price))
    for version in versions:
        assert version[0] == truth[0]
        assert version[1] == truth[1]
        assert version[5] == "0"
        o, h, lo, c = (Decimal(value) for value in version[1:5])
        assert low <= lo <= min(o, c) <= max(o, c) <= h <= high
    assert versions[-1][:5] == truth[:5]


@pytest.mark.parametrize("bar", ["1m", "1H", "1D", "1M"])
def test_the_mark_stays_within_half_a_percent_of_the_trade_price(bar):
    m = market()
    for inst_id in ["BTC-USDT-SWAP", "DOGE-USDT-SWAP", *futures(m)]:
        trades = m.truth_range(inst_id, bar, recent(bar), NOW)
        marks = m.truth_range(inst_id, bar, recent(bar), NOW, price="mark")
        assert len(marks) == len(trades) > 0
        for trade, mark in zip(trades, marks, strict=True):
            unit = tick(trade[1])
            t_open, t_high, t_low, t_close = (Decimal(value) for value in trade[1:5])
            m_open, m_high, m_low, m_close = (Decimal(value) for value in mark[1:5])
            band = Decimal(MARK_BAND)
            assert abs(m_open - t_open) <= band * t_open + unit, (inst_id, trade, mark)
            assert abs(m_close - t_close) <= band * t_close + unit, (inst_id, trade, mark)
            assert m_high <= t_high * (1 + band) + unit
            assert m_low >= t_low * (1 - band) - unit


def test_the_mark_follows_the_index_plus_a_small_basis():
    m = market()
    start = NOW - 2 * HOUR
    for inst_id, inst in m.instruments.items():
        if not inst.is_contract:
            continue
        index_id = f"{inst.base_ccy}-{inst.quote_ccy}"  # the uly
        marks = m.truth_range(inst_id, "1m", start, NOW, price="mark")
        indices = m.truth_range(index_id, "1m", start, NOW, price="index")
        assert len(marks) == len(indices) == 2 * 60 - 1
        # A swap's premium is a few basis points; a future's contango is capped by the band around the trade
        # price (which the simulator keeps on the spot curve), plus the USD index's own few basis points.
        # Within a candle the trade price strays from the curve a little: highs and lows get 0.1 % more.
        bound = Decimal(SWAP_PREMIUM_MAX) if inst.is_swap else Decimal(MARK_BAND + 0.0006)
        for mark, index in zip(marks, indices, strict=True):
            assert mark[0] == index[0]
            for field, (m_value, i_value) in enumerate(zip(mark[1:5], index[1:5], strict=True), 1):
                slack = 0 if field in (1, 4) or inst.is_swap else Decimal("0.001")
                assert abs(Decimal(m_value) - Decimal(i_value)) <= (bound + slack) * Decimal(i_value) + 2 * tick(
                    i_value), (inst_id, mark, index)


def test_a_futures_premium_decays_until_it_meets_the_index_at_expiry():
    clock = [NOW]
    m = market(clock=clock)
    linear = [inst_id for inst_id in futures(m) if inst_id.startswith("BTC-USDT-")]
    this_week, next_quarter = linear[0], linear[-1]
    expiry = m.instruments[this_week].exp_time_ms
    assert m.instruments[next_quarter].exp_time_ms > expiry

    def premium(inst_id: str, at: Market, moment: int) -> Decimal:
        open_ms = BARS["1m"].floor(moment) - 60_000
        mark = Decimal(at.truth(inst_id, "1m", open_ms, price="mark")[4])
        index = Decimal(at.truth("BTC-USDT", "1m", open_ms, price="index")[4])
        return mark / index - 1

    near, far = premium(this_week, m, NOW), premium(next_quarter, m, NOW)
    days_left = Decimal(expiry - NOW) / YEAR_MS
    assert 0 < near <= Decimal(FUTURES_ANNUAL_BASIS) * days_left + Decimal("0.00001")
    assert near < far <= Decimal(MARK_BAND) + Decimal("0.00001")
    after_expiry = clock[0] = expiry + 2 * HOUR
    assert abs(premium(this_week, m, after_expiry)) <= Decimal("0.000002")  # one tick of BTC


def test_only_swaps_and_futures_have_marks_only_indices_have_index_candles_and_neither_has_1s():
    m = market()
    with pytest.raises(KeyError):
        m.truth_range("BTC-USDT", "1m", LIST_TIME, NOW, price="mark")  # a spot pair has no mark price
    with pytest.raises(KeyError):
        m.truth_range("BTC-USDT-SWAP", "1m", LIST_TIME, NOW, price="index")  # an instrument, not an index
    with pytest.raises(KeyError):
        m.truth_range("NOPE-USDT", "1m", LIST_TIME, NOW, price="index")
    with pytest.raises(KeyError):
        m.truth_range("BTC-USDT-SWAP", "1s", LIST_TIME, NOW, price="mark")
    with pytest.raises(KeyError):
        m.current("BTC-USDT", "1s", NOW, price="index")
    with pytest.raises(ValueError, match="unknown price"):
        m.truth_range("BTC-USDT-SWAP", "1m", LIST_TIME, NOW, price="last")
    assert m.truth("BTC-USDT", "1m", LIST_TIME - 60_000, price="index") is None  # before the listing


def test_index_price_at_a_close_is_that_candles_close():
    m = market()
    for row in m.truth_range("ETH-USDT", "15m", NOW - 3 * HOUR, NOW, price="index"):
        assert m.index_price("ETH-USDT", BARS["15m"].next_open(int(row[0]))) == row[4]


def test_same_seed_same_series_and_another_seed_differs():
    first, again, other = market(1), market(1), market(2)
    window = (NOW - 3 * HOUR, NOW)
    for price, series_id in [("mark", "ETH-USDT-SWAP"), ("index", "ETH-USDT"), ("index", "BTC-USD")]:
        rows = first.truth_range(series_id, "1m", *window, price=price)
        assert rows == again.truth_range(series_id, "1m", *window, price=price)
        assert rows != other.truth_range(series_id, "1m", *window, price=price)
        assert first.current(series_id, "1m", NOW, price=price) == again.current(series_id, "1m", NOW, price=price)


def test_quiet_instruments_have_flat_marks_and_indices():
    m = market(instruments=10, quiet_fraction=0.3)
    quiet = [inst for inst in m.instruments.values() if inst.quiet and inst.is_swap]
    assert quiet
    for inst in quiet:
        trade = m.truth_range(inst.inst_id, "1m", NOW - HOUR, NOW)
        for price, series_id in [("mark", inst.inst_id), ("index", f"{inst.base_ccy}-USDT")]:
            for row in m.truth_range(series_id, "1m", NOW - HOUR, NOW, price=price):
                assert row[1] == row[2] == row[3] == row[4] == trade[0][1]
