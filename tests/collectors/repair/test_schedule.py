"""The repair scheduler against the OKX simulator over real sockets: batching, priority, budgets, delivery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Gap, GapState, Instrument, RepairPriority, Subscription, Timeframe
from candles.series import candle_missing_ranges
from collectors.delivery.webhooks import webhook_jobs_for
from collectors.monitoring.repair_report import repair_report_read
from collectors.repair.confirms import Unit, confirm_units
from collectors.repair.schedule import OUTAGE_WAIT, repair_run, widened
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.keys import candle_field

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
SECOND, MINUTE = 1000, 60_000
NAMES = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT")


@pytest.fixture
def sim(settings) -> Iterator[ThreadedSimulator]:
    config = SimulatorConfig(seed=5, instruments=5, bars=("1s", "1m"), history_days=2)
    with run_in_thread(config, port=0) as handle:
        settings.OKX_REST_URL = handle.rest_url
        yield handle


@pytest.fixture
def instruments(sim) -> dict[str, Instrument]:
    listed = ms_to_datetime(sim.simulator.market.list_time_ms)
    return {name: Instrument.objects.create(inst_id=name, inst_type="SPOT", listed_at=listed) for name in NAMES}


def subscribe(instrument: Instrument, bar: str, **fields) -> Subscription:
    sub = Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code=bar), **fields)
    Subscription.objects.filter(pk=sub.pk).update(created_at=timezone.now() - timedelta(days=1))
    sub.refresh_from_db()
    return sub


def store_unconfirmed(instrument: Instrument, bar: str, open_times: list[int]) -> None:
    """What a collector leaves when the confirm push never came: the last version it saw, unconfirmed."""
    tf = Timeframe.objects.get(code=bar)
    Candle.objects.bulk_create(
        Candle(instrument=instrument, timeframe=tf, open_time=ms_to_datetime(ms), open=Decimal(1), high=Decimal(2),
               low=Decimal(1), close=Decimal(1), vol=Decimal(0), vol_ccy=Decimal(0), vol_ccy_quote=Decimal(0),
               confirmed=False, source="ws", version=1)
        for ms in open_times)


def assert_exact(sim: ThreadedSimulator, inst_id: str, bar: str, open_times: list[int]) -> None:
    rows = {datetime_to_ms(c.open_time): c for c in Candle.objects.filter(
        instrument__inst_id=inst_id, timeframe__code=bar, open_time__in=[ms_to_datetime(t) for t in open_times])}
    assert len(rows) == len(open_times)
    for open_ms in open_times:
        truth = sim.simulator.market.truth(inst_id, bar, open_ms)
        candle = rows[open_ms]
        assert candle.confirmed
        assert [str(v) for v in (candle.open, candle.high, candle.low, candle.close, candle.vol)] == truth[1:6]


def recent_closed(bar_ms: int, back: int) -> int:
    now_ms = datetime_to_ms(timezone.now())
    return (now_ms - 10 * SECOND) // bar_ms * bar_ms - back * bar_ms


def test_one_request_repairs_every_missed_confirm_of_a_series(sim, instruments, keys, redis):
    btc = instruments["BTC-USDT"]
    subscribe(btc, "1m")
    newest = recent_closed(MINUTE, 1)
    missed = [newest - k * 17 * MINUTE for k in range(10)]  # ten candles spread over 153 minutes
    store_unconfirmed(btc, "1m", missed)
    written: list = []

    result = repair_run(budget_s=5, redis=redis, keys=keys, on_written=written.extend)

    assert result.requests == {"candles": 1}
    assert result.repaired[RepairPriority.CONFIRM] == 10
    assert_exact(sim, "BTC-USDT", "1m", missed)
    assert sorted(row.open_time_ms for row in written) == sorted(missed)
    assert sim.simulator.stats()["rest_429s"] == 0


def test_1s_confirms_are_repaired_from_history_candles_in_pages_of_a_hundred(sim, instruments, keys, redis):
    eth = instruments["ETH-USDT"]
    subscribe(eth, "1s")
    newest = recent_closed(SECOND, 5)
    missed = [newest - k * 10 * SECOND for k in range(15)]  # 150 seconds: two pages of 100

    store_unconfirmed(eth, "1s", missed)
    result = repair_run(budget_s=5, redis=redis, keys=keys)

    assert result.requests == {"history": 2}
    assert_exact(sim, "ETH-USDT", "1s", missed)


def test_a_missed_confirm_and_holes_of_one_series_within_a_page_are_one_request(sim, instruments, keys, redis):
    xrp = instruments["XRP-USDT"]
    sub = subscribe(xrp, "1s")
    newest = recent_closed(SECOND, 5)
    store_unconfirmed(xrp, "1s", [newest])
    holes = [(newest - 40 * SECOND, newest - 38 * SECOND), (newest - 70 * SECOND, newest - 60 * SECOND)]
    for start, end in holes:
        Gap.objects.create(subscription=sub, start=ms_to_datetime(start), end=ms_to_datetime(end),
                           missing=(end - start) // SECOND + 1)

    result = repair_run(budget_s=5, redis=redis, keys=keys)

    assert result.requests == {"history": 1}
    assert set(Gap.objects.values_list("state", flat=True)) == {GapState.FILLED}
    assert_exact(sim, "XRP-USDT", "1s", [newest] + [t for s, e in holes for t in range(s, e + 1, SECOND)])
    assert int(redis.hget(keys.counters, "gaps_filled")) == 2


def test_a_request_carries_every_repair_of_its_series_within_its_page(sim, instruments, keys, redis):
    """Gaps the queue did not hand out (waiting out a backoff) and unconfirmed candles ride along."""
    doge = instruments["DOGE-USDT"]
    sub = subscribe(doge, "1s")
    newest = recent_closed(SECOND, 5)
    due = Gap.objects.create(subscription=sub, start=ms_to_datetime(newest), end=ms_to_datetime(newest), missing=1)
    waiting = [Gap.objects.create(subscription=sub, start=ms_to_datetime(newest - k * 20 * SECOND),
                                  end=ms_to_datetime(newest - k * 20 * SECOND), missing=1, attempts=1)
               for k in (1, 2, 3)]
    store_unconfirmed(doge, "1s", [newest - 30 * SECOND])

    result = repair_run(budget_s=5, redis=redis, keys=keys)

    assert result.requests == {"history": 1}
    assert set(Gap.objects.filter(pk__in=[due.pk, *(g.pk for g in waiting)]).values_list("state", flat=True)) == {
        GapState.FILLED}
    assert_exact(sim, "DOGE-USDT", "1s", [newest, newest - 20 * SECOND, newest - 30 * SECOND, newest - 40 * SECOND,
                                          newest - 60 * SECOND])


def store_confirmed(instrument: Instrument, bar: str, open_ms: int) -> None:
    store_unconfirmed(instrument, bar, [open_ms])
    Candle.objects.filter(instrument=instrument, open_time=ms_to_datetime(open_ms)).update(confirmed=True)


def test_the_candle_an_outage_cut_and_the_seconds_lost_until_live_again_are_one_request(sim, instruments, keys,
                                                                                        redis):
    """Both connections dropped in second `cut`: its confirm never came, and nothing was pushed until the series
    was live again six seconds later. One request repairs all six, before detection records a gap for the five."""
    btc = instruments["BTC-USDT"]
    subscribe(btc, "1s")
    cut = recent_closed(SECOND, 8)
    store_unconfirmed(btc, "1s", [cut])
    store_confirmed(btc, "1s", cut + 6 * SECOND)  # live again
    written: list = []

    result = repair_run(budget_s=5, redis=redis, keys=keys, on_written=written.extend)

    lost = [cut + k * SECOND for k in range(6)]
    assert result.requests == {"history": 1}
    assert_exact(sim, "BTC-USDT", "1s", lost)
    assert sorted(row.open_time_ms for row in written) == lost
    assert not list(candle_missing_ranges(instrument_id=btc.pk, timeframe=Timeframe.objects.get(code="1s"),
                                          start=ms_to_datetime(cut), end=ms_to_datetime(cut + 6 * SECOND)))
    assert not Gap.objects.exists()


def test_a_cut_candle_waits_for_its_series_to_be_live_again_without_a_request(sim, instruments, keys, redis):
    eth = instruments["ETH-USDT"]
    subscribe(eth, "1s")
    cut = datetime_to_ms(timezone.now()) // SECOND * SECOND - 5 * SECOND  # closed 4 s ago: settled, still recent
    store_unconfirmed(eth, "1s", [cut])

    result = repair_run(budget_s=1, redis=redis, keys=keys)

    assert result.requests == {}
    assert not Candle.objects.get(instrument=eth, open_time=ms_to_datetime(cut)).confirmed
    assert redis.zscore(keys.repair_retry, candle_field("ETH-USDT", "1s", cut)) is not None  # looked at again soon


def page_unit(instrument: Instrument, open_ms: int, **fields) -> Unit:
    fields = {"priority": RepairPriority.CONFIRM, "wanted": (open_ms,), "start_ms": open_ms, **fields}
    return Unit(lane="history", newest_ms=open_ms, inst_id=instrument.inst_id, bar="1s", end_ms=open_ms,
                instrument_id=instrument.pk, **fields)


def a_minute_ago() -> int:
    """A `1s` open time inside the stored partitions; the tests pass their own clock to `widened`."""
    return (datetime_to_ms(timezone.now()) - MINUTE) // SECOND * SECOND


@pytest.fixture
def sol() -> Instrument:
    return Instrument.objects.create(inst_id="SOL-USDT", inst_type="SPOT")


def test_a_cut_candle_whose_series_stays_dark_is_asked_for_once_the_wait_is_over(sol):
    tf = Timeframe.objects.get(code="1s")
    cut = a_minute_ago()
    store_unconfirmed(sol, "1s", [cut])
    closed_at = cut + SECOND
    wait_ms = int(OUTAGE_WAIT.total_seconds() * 1000)

    assert widened(page_unit(sol, cut), tf, now_ms=closed_at + wait_ms - SECOND).waiting
    page = widened(page_unit(sol, cut), tf, now_ms=closed_at + wait_ms + SECOND)
    assert not page.waiting
    assert (page.unit.wanted, page.absent) == ((cut,), ())


def test_a_cut_candle_waits_while_the_seconds_before_the_series_came_back_are_settling(sol):
    tf = Timeframe.objects.get(code="1s")
    cut = a_minute_ago()
    store_unconfirmed(sol, "1s", [cut])
    store_confirmed(sol, "1s", cut + 8 * SECOND)

    # At cut + 9 s only what closed by cut + 6 s has settled: the seconds up to cut + 7 s would need a second request.
    assert widened(page_unit(sol, cut), tf, now_ms=cut + 9 * SECOND).waiting
    page = widened(page_unit(sol, cut), tf, now_ms=cut + 12 * SECOND)
    assert page.absent == tuple(cut + k * SECOND for k in range(1, 8))
    assert (page.unit.start_ms, page.unit.end_ms) == (cut, cut + 7 * SECOND)


def test_the_seconds_after_a_unit_already_recorded_as_a_gap_are_filled_as_that_gap(sol):
    tf = Timeframe.objects.get(code="1s")
    sub = Subscription.objects.create(instrument=sol, timeframe=tf)
    cut = a_minute_ago()
    store_unconfirmed(sol, "1s", [cut])
    store_confirmed(sol, "1s", cut + 8 * SECOND)
    gap = Gap.objects.create(subscription=sub, start=ms_to_datetime(cut + SECOND), end=ms_to_datetime(cut + 4 * SECOND),
                             missing=4, priority=RepairPriority.OUTAGE)

    page = widened(page_unit(sol, cut), tf, now_ms=cut + 60 * SECOND)

    assert page.unit.gap_ids == (gap.pk,)
    assert page.absent == tuple(cut + k * SECOND for k in range(5, 8))


def test_a_unit_whose_work_another_request_did_costs_nothing(sol):
    tf = Timeframe.objects.get(code="1s")
    sub = Subscription.objects.create(instrument=sol, timeframe=tf)
    start = a_minute_ago()
    store_confirmed(sol, "1s", start + 2 * SECOND)
    gap = Gap.objects.create(subscription=sub, start=ms_to_datetime(start), end=ms_to_datetime(start + SECOND),
                             missing=2, state=GapState.FILLED, priority=RepairPriority.OUTAGE)
    unit = page_unit(sol, start + SECOND, priority=RepairPriority.OUTAGE, wanted=(), gap_ids=(gap.pk,),
                     start_ms=start)

    assert widened(unit, tf, now_ms=start + 60 * SECOND).empty


def test_a_gap_whose_candles_arrived_after_it_was_recorded_is_settled_without_a_request(sim, instruments, keys,
                                                                                         redis):
    """The flush was down when detection ran: the candles came after all. Filled, and OKX is not asked."""
    xrp = instruments["XRP-USDT"]
    sub = subscribe(xrp, "1s")
    end = recent_closed(SECOND, 5)
    gap = Gap.objects.create(subscription=sub, start=ms_to_datetime(end - 2 * SECOND), end=ms_to_datetime(end),
                             missing=3, priority=RepairPriority.OUTAGE)
    for open_ms in (end - 2 * SECOND, end - SECOND, end):
        store_confirmed(xrp, "1s", open_ms)

    result = repair_run(budget_s=2, redis=redis, keys=keys)

    assert result.requests == {}
    assert Gap.objects.get(pk=gap.pk).state == GapState.FILLED
    assert int(redis.hget(keys.counters, "gaps_filled")) == 1


def test_confirm_units_group_a_series_into_pages_from_its_newest_candle():
    spec = Timeframe(code="1m", seconds=60, months=0, utc_offset_hours=0, anchor=ms_to_datetime(0)).spec
    now = 10_000 * MINUTE
    times = [9_990 * MINUTE, 9_900 * MINUTE, 9_700 * MINUTE, 9_691 * MINUTE, 9_689 * MINUTE]

    units = list(confirm_units(spec, "BTC-USDT", times, now))

    assert [u.wanted for u in units] == [
        (9_691 * MINUTE, 9_700 * MINUTE, 9_900 * MINUTE, 9_990 * MINUTE),  # the page of 300 ending at the newest
        (9_689 * MINUTE,),
    ]
    assert [u.lane for u in units] == ["candles", "candles"]


# repair_run(budget_s=1.2) must do 15 units of REST work: with another test worker busy it does a third.
@pytest.mark.solo
def test_under_a_saturated_budget_work_is_done_in_priority_order_without_a_429(sim, instruments, keys, redis):
    """More 1s work than /history-candles serves in a second: missed confirms, then outage gaps, then history,
    then old gaps, the most recent first within each, and nothing refused by OKX."""
    now = timezone.now()
    subs = {name: subscribe(inst, "1s") for name, inst in instruments.items()}
    newest = recent_closed(SECOND, 30)
    for k, name in enumerate(NAMES):
        store_unconfirmed(instruments[name], "1s", [newest - k * SECOND])
    gaps: dict[int, list[Gap]] = {RepairPriority.OUTAGE: [], RepairPriority.HISTORY: [], RepairPriority.OLD: []}
    for priority, age in ((RepairPriority.OUTAGE, 2 * MINUTE), (RepairPriority.HISTORY, 20 * MINUTE),
                          (RepairPriority.OLD, 40 * MINUTE)):
        for k in range(10):
            end = newest - age - k * MINUTE
            gaps[priority].append(Gap.objects.create(
                subscription=subs[NAMES[k % 5]], start=ms_to_datetime(end - 4 * SECOND), end=ms_to_datetime(end),
                missing=5, priority=priority))
    order: list[tuple[int, int]] = []

    def record(rows) -> None:
        order.append((rows[0].source, max(r.open_time_ms for r in rows)))

    result = repair_run(budget_s=1.2, now=now, redis=redis, keys=keys, on_written=record, workers_per_lane=1)

    done = {g.pk for g in Gap.objects.filter(state=GapState.FILLED)}
    assert result.repaired[RepairPriority.CONFIRM] == 5
    assert {g.pk for g in gaps[RepairPriority.OUTAGE]} <= done
    assert not {g.pk for g in gaps[RepairPriority.OLD]} & done
    history_done = [g.pk in done for g in gaps[RepairPriority.HISTORY]]
    assert history_done == sorted(history_done, reverse=True)  # a prefix: the most recent first
    assert [t for _, t in order] == sorted((t for _, t in order), reverse=True)
    assert sim.simulator.stats()["rest_429s"] == 0

    report = repair_report_read(redis=redis, keys=keys)
    assert report["backlog"]["confirm"]["candles"] == 0
    assert report["backlog"]["old"] == {"candles": 50, "units": 10}
    assert report["requests"]["history"] == result.requests["history"]
    assert report["eta_s"] is None or report["eta_s"] > 0


def test_a_repaired_candle_reaches_the_webhook_like_a_live_one(sim, instruments, keys, redis, settings):
    settings.WEBHOOK_SECRET = "s3cret"
    sol = instruments["SOL-USDT"]
    sub = subscribe(sol, "1m", webhook_url="http://127.0.0.1:9/hook")
    missed = recent_closed(MINUTE, 2)
    store_unconfirmed(sol, "1m", [missed])
    gap_end = recent_closed(MINUTE, 5)
    Gap.objects.create(subscription=sub, start=ms_to_datetime(gap_end - MINUTE), end=ms_to_datetime(gap_end),
                       missing=2)
    jobs: list = []

    repair_run(budget_s=5, redis=redis, keys=keys, on_written=lambda rows: jobs.extend(webhook_jobs_for(rows)))

    assert sorted(job.subscription_id for job in jobs) == [sub.pk] * 3
    bodies = sorted((orjson.loads(job.body) for job in jobs), key=lambda body: body["open_time_ms"])
    assert [body["open_time_ms"] for body in bodies] == [gap_end - MINUTE, gap_end, missed]
    assert all(body["confirm"] is True and body["symbol"] == "SOL-USDT" for body in bodies)


def test_a_second_run_while_one_holds_the_lock_is_skipped(keys, redis):
    redis.set(keys.repair_lock, "someone", px=10_000)

    assert repair_run(budget_s=1, redis=redis, keys=keys).skipped
