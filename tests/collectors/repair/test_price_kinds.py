"""Repair of mark-price and index series: their own endpoints and budgets, never mixed with the trade series of
the same id (docs/price-kinds.md). Against the OKX simulator over real sockets, real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Gap, GapState, Instrument, RepairPriority, Subscription, Timeframe
from candles.storage import CandleRow, candles_upsert
from collectors.monitoring.repair_report import repair_report_read
from collectors.okx.rest_endpoints import CANDLE_BUDGETS
from collectors.repair.confirms import confirm_backlog, confirm_units, confirms_retry_later
from collectors.repair.detect import detection_advance
from collectors.repair.schedule import repair_run
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
MINUTE = 60_000


@pytest.fixture
def sim(settings) -> Iterator[ThreadedSimulator]:
    config = SimulatorConfig(seed=11, instruments=2, swaps=True, bars=("1m",), history_days=2)
    with run_in_thread(config, port=0) as handle:
        settings.OKX_REST_URL = handle.rest_url
        yield handle


@pytest.fixture
def rows(sim) -> dict[tuple[str, str], Instrument]:
    """The four series two ids make: the spot pair and the index of the same name, the swap's trades and mark."""
    listed = ms_to_datetime(sim.simulator.market.list_time_ms)
    made = [("BTC-USDT", "SPOT", "trade"), ("BTC-USDT", "INDEX", "index"),
            ("BTC-USDT-SWAP", "SWAP", "trade"), ("BTC-USDT-SWAP", "SWAP", "mark")]
    return {(inst_id, price): Instrument.objects.create(inst_id=inst_id, inst_type=inst_type, price=price,
                                                        listed_at=listed)
            for inst_id, inst_type, price in made}


def subscribe(instrument: Instrument, bar: str = "1m") -> Subscription:
    sub = Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code=bar))
    Subscription.objects.filter(pk=sub.pk).update(created_at=timezone.now() - timedelta(days=1))
    sub.refresh_from_db()
    return sub


def store_unconfirmed(instrument: Instrument, open_times: list[int]) -> None:
    """What a collector leaves when the confirm push never came: the last version it saw, unconfirmed."""
    volume = None if instrument.price != "trade" else "0"
    candles_upsert(rows=[CandleRow(instrument.inst_id, "1m", ms, "1", "2", "1", "1", volume, volume, volume, False,
                                   "ws", 1, instrument.price) for ms in open_times])


def stored(instrument: Instrument, start_ms: int, end_ms: int) -> list[list[str | None]]:
    """The row's candles of [start, end] as the simulator's truth spells them (mark and index: six fields)."""
    candles = Candle.objects.filter(instrument=instrument, timeframe__code="1m",
                                    open_time__gte=ms_to_datetime(start_ms),
                                    open_time__lte=ms_to_datetime(end_ms)).order_by("open_time")
    out = []
    for c in candles:
        assert c.confirmed
        prices = [str(datetime_to_ms(c.open_time)), str(c.open), str(c.high), str(c.low), str(c.close)]
        if instrument.price == "trade":
            out.append([*prices, str(c.vol), str(c.vol_ccy), str(c.vol_ccy_quote)])
        else:
            assert (c.vol, c.vol_ccy, c.vol_ccy_quote) == (None, None, None)
            out.append(prices)
    return out


def truth(sim: ThreadedSimulator, instrument: Instrument, start_ms: int, end_ms: int) -> list[list[str]]:
    rows = sim.simulator.market.truth_range(instrument.inst_id, "1m", start_ms, end_ms, price=instrument.price)
    width = 8 if instrument.price == "trade" else 5
    return [row[:width] for row in rows]


def recent_closed(back: int) -> int:
    return (datetime_to_ms(timezone.now()) - 10_000) // MINUTE * MINUTE - back * MINUTE


def budget_used(redis, keys, name: str) -> int:
    """Stamps in the shared rate limiter's window of one endpoint (CANDLE_BUDGETS' names)."""
    return redis.zcard(f"{keys.prefix}ratelimit:{CANDLE_BUDGETS[name].budget}")


def test_a_missed_mark_confirm_is_repaired_through_its_own_endpoint_and_counted_in_its_budget(
        sim, rows, keys, redis):
    mark = rows["BTC-USDT-SWAP", "mark"]
    subscribe(mark)
    missed = recent_closed(2)
    store_unconfirmed(mark, [missed])
    budgets: dict[str, int] = {}

    def written(candles) -> None:  # read while the request's stamp is surely in its window
        budgets.update({name: budget_used(redis, keys, name) for name in CANDLE_BUDGETS})

    result = repair_run(budget_s=5, redis=redis, keys=keys, on_written=written)

    assert result.repaired[RepairPriority.CONFIRM] == 1
    assert result.requests == {"mark-price-candles": 1}
    assert budgets == {"candles": 0, "history-candles": 0, "mark-price-candles": 1, "history-mark-price-candles": 0,
                       "index-candles": 0, "history-index-candles": 0}
    assert stored(mark, missed, missed) == truth(sim, mark, missed, missed)
    assert not Candle.objects.filter(instrument=rows["BTC-USDT-SWAP", "trade"]).exists()
    report = repair_report_read(redis=redis, keys=keys)
    assert report["requests"]["mark-price-candles"] == 1
    assert report["requests"]["candles"] == report["requests"]["history"] == 0
    assert report["budget_per_s"]["mark-price-candles"] == 10.0
    assert (report["queued"]["mark-price-candles"], report["left"]["mark-price-candles"]) == (1, 0)
    assert report["queued"]["candles"] == report["queued"]["history"] == 0
    assert sim.simulator.stats()["rest_429s"] == 0


def test_an_index_gap_is_filled_from_the_index_history_endpoint_and_equals_the_truth(sim, rows, keys, redis):
    index, spot = rows["BTC-USDT", "index"], rows["BTC-USDT", "trade"]
    sub = subscribe(index)
    subscribe(spot)
    end = recent_closed(1_600)  # older than the latest 1,440 candles: the history endpoint's
    start = end - 39 * MINUTE
    gap = Gap.objects.create(subscription=sub, start=ms_to_datetime(start), end=ms_to_datetime(end), missing=40,
                             priority=RepairPriority.HISTORY)

    result = repair_run(budget_s=5, redis=redis, keys=keys)

    gap.refresh_from_db()
    assert gap.state == GapState.FILLED
    assert result.requests == {"history-index-candles": 1}
    assert stored(index, start, end) == truth(sim, index, start, end)
    assert len(stored(index, start, end)) == 40
    assert not Candle.objects.filter(instrument=spot).exists()  # the spot pair of the same name is another series


def test_a_mark_and_a_trade_series_of_one_swap_are_repaired_side_by_side_without_mixing(sim, rows, keys, redis):
    trade, mark = rows["BTC-USDT-SWAP", "trade"], rows["BTC-USDT-SWAP", "mark"]
    subs = {series: subscribe(series) for series in (trade, mark)}
    missed = recent_closed(2)
    gap_end = recent_closed(20)
    gap_start = gap_end - 9 * MINUTE
    for series in (trade, mark):
        store_unconfirmed(series, [missed])
        Gap.objects.create(subscription=subs[series], start=ms_to_datetime(gap_start), end=ms_to_datetime(gap_end),
                           missing=10)

    result = repair_run(budget_s=5, redis=redis, keys=keys)

    # Each series is one request on its own endpoint: its missed confirm and its hole are within one page.
    assert result.requests == {"candles": 1, "mark-price-candles": 1}
    assert set(Gap.objects.values_list("state", flat=True)) == {GapState.FILLED}
    for series in (trade, mark):
        assert stored(series, gap_start, gap_end) == truth(sim, series, gap_start, gap_end)
        assert stored(series, missed, missed) == truth(sim, series, missed, missed)
    assert truth(sim, trade, missed, missed)[0][1:5] != truth(sim, mark, missed, missed)[0][1:5]


def test_a_parked_mark_candle_never_parks_the_trade_candle_of_the_same_id_bar_and_time(rows, keys, redis):
    trade, mark = rows["BTC-USDT-SWAP", "trade"], rows["BTC-USDT-SWAP", "mark"]
    for series in (trade, mark):
        subscribe(series)
    missed = recent_closed(2)
    store_unconfirmed(trade, [missed])
    store_unconfirmed(mark, [missed])

    confirms_retry_later(redis=redis, keys=keys, inst_id="BTC-USDT-SWAP", bar="1m", open_times=[missed],
                         price="mark")
    backlog = confirm_backlog(now=timezone.now(), redis=redis, keys=keys)

    assert redis.zrange(keys.repair_retry, 0, -1) == [f"BTC-USDT-SWAP|mark:1m|{missed}".encode()]
    assert [(u.inst_id, u.price, u.instrument_id, u.wanted) for u in backlog.units] == [
        ("BTC-USDT-SWAP", "trade", trade.pk, (missed,))]
    assert backlog.candles == 2  # the parked one still counts as waiting


def test_mark_confirms_are_grouped_in_pages_of_a_hundred_on_the_mark_endpoints():
    spec = Timeframe(code="1m", seconds=60, months=0, utc_offset_hours=0, anchor=ms_to_datetime(0)).spec
    now = 100_000 * MINUTE
    times = [99_990 * MINUTE, 99_900 * MINUTE, 99_880 * MINUTE, 98_000 * MINUTE]

    units = list(confirm_units(spec, "BTC-USDT-SWAP", times, now, price="mark"))

    assert [(u.lane, u.wanted) for u in units] == [
        ("mark-price-candles", (99_900 * MINUTE, 99_990 * MINUTE)),  # a page of 100 ending at the newest
        ("mark-price-candles", (99_880 * MINUTE,)),
        ("history-mark-price-candles", (98_000 * MINUTE,)),  # older than the latest 1,440 minutes
    ]
    assert {u.price for u in units} == {"mark"}


def test_detection_cuts_an_index_series_holes_into_pages_of_its_endpoint(rows):
    """A trade hole of 250 minutes is one gap (/candles pages hold 300); the index endpoint's hold 100."""
    index, spot = rows["BTC-USDT", "index"], rows["BTC-USDT", "trade"]
    now = timezone.now()
    last = Timeframe.objects.get(code="1m").spec.last_closed(datetime_to_ms(now - timedelta(seconds=10)))
    for series in (index, spot):
        sub = subscribe(series)
        Subscription.objects.filter(pk=sub.pk).update(detected_through=ms_to_datetime(last - 250 * MINUTE))
        store_unconfirmed(series, [last])  # something stored: the holes are looked for, not assumed

    detection_advance(now=now)

    sizes = {price: sorted(Gap.objects.filter(subscription__instrument__price=price).values_list("missing", flat=True))
             for price in ("index", "trade")}
    assert sizes == {"index": [49, 100, 100], "trade": [249]}
    assert not Gap.objects.filter(state=GapState.UNFILLABLE).exists()


def test_a_1s_gap_of_a_mark_series_is_unfillable_at_once_and_asks_rest_nothing(sim, rows, keys, redis):
    """OKX has no 1s mark candles (a subscription refuses them; this one was made by hand)."""
    sub = subscribe(rows["BTC-USDT-SWAP", "mark"], "1s")
    end = recent_closed(5)
    gap = Gap.objects.create(subscription=sub, start=ms_to_datetime(end - 9_000), end=ms_to_datetime(end), missing=10)

    result = repair_run(budget_s=2, redis=redis, keys=keys)

    gap.refresh_from_db()
    assert (gap.state, gap.reason) == (GapState.UNFILLABLE, "OKX has no 1s mark candles (they start at 1m)")
    assert result.failures == 0
    assert not result.requests
    assert sim.simulator.stats()["rest_requests"] == 0

