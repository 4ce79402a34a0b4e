"""Gap detection and filling against the real PostgreSQL, the real Redis and the OKX simulator over real sockets."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import redis as redis_lib
from django.db import connection
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.gaps import MAX_ATTEMPTS, RETRY_BACKOFF
from candles.models import Candle, Gap, GapState, Instrument, Subscription, Timeframe
from collectors.okx.rest import RestError
from collectors.repair.detect import DETECT_SETTLE, MAX_GAP_CANDLES, gaps_detect
from collectors.repair.fill import GapFillResult, gap_fill
from collectors.repair.reach import PAGE_CANDLES
from collectors.repair.schedule import gaps_next
from collectors.shared import rest as shared_rest
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.keys import Keys
from tests.support.private_services import free_port

INSTRUMENTS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    config = SimulatorConfig(seed=3, instruments=3, bars=("1m", "1H", "1D", "1s"), history_days=5)
    with run_in_thread(config, port=0) as handle:
        yield handle


@pytest.fixture
def redis() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    client.close()


@pytest.fixture
def keys(redis) -> Iterator[Keys]:
    """A key prefix of this test's own, so its REST budget and queues are its own; removed afterwards."""
    prefix = f"test:backfill:{uuid.uuid4().hex}:"
    yield Keys(prefix=prefix)
    stale = list(redis.scan_iter(match=f"{prefix}*"))
    if stale:
        redis.delete(*stale)


@pytest.fixture
def listing(sim) -> datetime:
    return ms_to_datetime(sim.simulator.market.list_time_ms)


@pytest.fixture
def instruments(db, listing) -> dict[str, Instrument]:
    """The simulator's instruments, listed when the simulator says."""
    return {
        inst_id: Instrument.objects.create(inst_id=inst_id, inst_type="SPOT", listed_at=listing)
        for inst_id in INSTRUMENTS
    }


def subscribe(instrument: Instrument, bar: str, **fields) -> Subscription:
    return Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code=bar), **fields)


def fill(sim: ThreadedSimulator, keys: Keys, redis, gap: Gap | int, **kwargs) -> GapFillResult:
    gap_id = gap if isinstance(gap, int) else gap.pk
    return gap_fill(gap_id=gap_id, rest_url=sim.rest_url, redis=redis, keys=keys, **kwargs)


def stored(subscription: Subscription, start_ms: int, end_ms: int) -> list[tuple]:
    """(open ms, o, h, l, c, vol, volCcy, volCcyQuote, confirmed, source) of stored candles, oldest first."""
    rows = Candle.objects.filter(
        instrument_id=subscription.instrument_id, timeframe_id=subscription.timeframe_id,
        open_time__gte=ms_to_datetime(start_ms), open_time__lte=ms_to_datetime(end_ms),
    ).order_by("open_time").values_list(
        "open_time", "open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote", "confirmed", "source"
    )
    return [(datetime_to_ms(row[0]), *row[1:]) for row in rows]


def assert_equals_truth(sim: ThreadedSimulator, subscription: Subscription, start_ms: int, end_ms: int) -> int:
    """Every candle in [start, end] is stored, confirmed, from REST, and exactly OKX's (the simulator's) truth."""
    truth = sim.simulator.market.truth_range(
        subscription.instrument.inst_id, subscription.timeframe.code, start_ms, end_ms
    )
    expected = [(int(t[0]), *(Decimal(v) for v in t[1:8]), True, "rest") for t in truth]
    got = stored(subscription, start_ms, end_ms)
    assert len(got) == len(expected)
    assert got == expected
    # Exact to the digit, not only numerically equal: the scale OKX sent is kept.
    assert [[str(v) for v in row[1:8]] for row in got] == [t[1:8] for t in truth]
    return len(got)


def counters(redis, keys: Keys) -> dict[str, int]:
    """The shared counters (Keys.counters) this test's services added to."""
    return {name.decode(): int(value) for name, value in redis.hgetall(keys.counters).items()}


def unfinished(subscription: Subscription) -> list[Gap]:
    return list(subscription.gaps.filter(state__in=[GapState.OPEN, GapState.FILLING]))


# --- detect and fill ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("bar", "history"), [("1m", None), ("1s", timedelta(minutes=20))])
def test_a_new_subscription_is_backfilled_exactly_from_backfill_from(sim, keys, redis, instruments, listing, bar,
                                                                     history):
    now = timezone.now()
    backfill_from = listing if history is None else now - history
    sub = subscribe(instruments["BTC-USDT"], bar, backfill_from=backfill_from)

    gaps = gaps_detect(subscription_id=sub.pk, now=now)

    assert gaps
    assert all(gap.state == GapState.OPEN and gap.missing <= MAX_GAP_CANDLES for gap in gaps)
    start_ms, end_ms = min(datetime_to_ms(g.start) for g in gaps), max(datetime_to_ms(g.end) for g in gaps)
    spec = sub.timeframe.spec
    assert start_ms == spec.ceil(datetime_to_ms(backfill_from))
    # The newest candle that had closed 15 s before `now`: never the open one, nor one still in the buffer.
    assert end_ms == spec.last_closed(datetime_to_ms(now - DETECT_SETTLE))
    results = [fill(sim, keys, redis, gap) for gap in gaps]
    assert [r.state for r in results] == [GapState.FILLED] * len(gaps)
    assert sum(r.written for r in results) == sum(g.missing for g in gaps)
    assert assert_equals_truth(sim, sub, start_ms, end_ms) == sum(g.missing for g in gaps)
    assert unfinished(sub) == []
    # The range is complete now: detecting again over it records nothing.
    assert gaps_detect(subscription_id=sub.pk, start=ms_to_datetime(start_ms), now=now) == []


@pytest.mark.django_db
def test_history_before_the_listing_is_clipped_at_detection(instruments, listing):
    sub = subscribe(instruments["ETH-USDT"], "1H", backfill_from=listing - timedelta(days=3))

    gaps = gaps_detect(subscription_id=sub.pk)

    assert min(gap.start for gap in gaps) == listing
    assert all(gap.state == GapState.OPEN for gap in gaps)


@pytest.mark.django_db
def test_a_range_found_before_the_listing_was_known_becomes_unfillable_with_the_reason(sim, keys, redis, instruments,
                                                                                     listing):
    eth = instruments["ETH-USDT"]
    Instrument.objects.filter(pk=eth.pk).update(listed_at=None)
    sub = subscribe(eth, "1H", backfill_from=listing - timedelta(days=2))
    (gap,) = gaps_detect(subscription_id=sub.pk)
    assert gap.start == listing - timedelta(days=2)
    Instrument.objects.filter(pk=eth.pk).update(listed_at=listing)  # an instrument sync learns the listing

    result = fill(sim, keys, redis, gap)

    gap.refresh_from_db()
    assert result.state == gap.state == GapState.UNFILLABLE
    # The gap narrows to the part OKX cannot have; the rest was filled.
    assert (gap.start, gap.end, gap.missing) == (listing - timedelta(days=2), listing - timedelta(hours=1), 48)
    assert "ETH-USDT was listed" in gap.reason
    assert assert_equals_truth(sim, sub, datetime_to_ms(listing), datetime_to_ms(result_end(sub))) > 0
    assert unfinished(sub) == []


def result_end(subscription: Subscription) -> datetime:
    return Candle.objects.filter(
        instrument_id=subscription.instrument_id, timeframe_id=subscription.timeframe_id
    ).latest("open_time").open_time


@pytest.mark.django_db
def test_a_gap_rest_keeps_answering_without_candles_is_retried_then_unfillable(sim, keys, redis, instruments,
                                                                           listing):
    sol = instruments["SOL-USDT"]
    Instrument.objects.filter(pk=sol.pk).update(listed_at=None)  # nothing tells us the range predates listing
    sub = subscribe(sol, "1H")
    (gap,) = gaps_detect(subscription_id=sub.pk, start=listing - timedelta(hours=10),
                         end=listing - timedelta(hours=1))

    first = fill(sim, keys, redis, gap)

    gap.refresh_from_db()
    assert (first.state, gap.state, gap.attempts, gap.missing) == (GapState.OPEN, GapState.OPEN, 1, 10)
    assert gap.reason == f"REST returned no data for 10 candles (attempt 1 of {MAX_ATTEMPTS})"
    # A failed gap waits out its backoff before it is picked again.
    assert gap.pk not in gaps_next(limit=10)
    assert gap.pk in gaps_next(limit=10, now=timezone.now() + RETRY_BACKOFF)

    Gap.objects.filter(pk=gap.pk).update(attempts=MAX_ATTEMPTS - 1)
    last = fill(sim, keys, redis, gap)

    gap.refresh_from_db()
    assert (last.state, gap.state, gap.attempts) == (GapState.UNFILLABLE, GapState.UNFILLABLE, MAX_ATTEMPTS)
    assert gap.reason == f"REST returned no data after {MAX_ATTEMPTS} attempts: 10 candles still missing"
    assert fill(sim, keys, redis, gap).skipped
    # An unfillable range is not recorded again by later detections.
    assert gaps_detect(subscription_id=sub.pk, start=listing - timedelta(hours=10),
                       end=listing - timedelta(hours=1)) == []


@pytest.mark.django_db
def test_a_confirmed_candle_from_rest_replaces_an_open_version_stamped_by_a_clock_ahead(sim, keys, redis, instruments):
    # A stored open version whose receipt time is a day ahead (another host's clock): the confirmed row from REST
    # closes it all the same (a confirmed candle replaces an open one whatever the versions), and the gap fills.
    sub = subscribe(instruments["BTC-USDT"], "1m")
    end = (datetime_to_ms(timezone.now()) // MINUTE - 5) * MINUTE
    start = end - 4 * MINUTE
    ahead = datetime_to_ms(timezone.now() + timedelta(days=1)) * 1000
    Candle.objects.create(instrument=sub.instrument, timeframe=sub.timeframe, open_time=ms_to_datetime(start),
                          open=Decimal(1), high=Decimal(1), low=Decimal(1), close=Decimal(1), vol=Decimal(0),
                          vol_ccy=Decimal(0), confirmed=False, source="ws", version=ahead)
    gap = Gap.objects.create(subscription=sub, start=ms_to_datetime(start), end=ms_to_datetime(end), missing=5)

    result = fill(sim, keys, redis, gap)

    gap.refresh_from_db()
    assert (result.state, result.written, gap.state) == (GapState.FILLED, 5, GapState.FILLED)
    assert_equals_truth(sim, sub, start, end)
    assert Candle.objects.get(instrument=sub.instrument, open_time=ms_to_datetime(start)).version > ahead


@pytest.mark.django_db
def test_1D_candles_open_at_midnight_hong_kong_time(sim, keys, redis, instruments, listing):
    sub = subscribe(instruments["ETH-USDT"], "1D", backfill_from=listing - timedelta(days=2))

    gaps = gaps_detect(subscription_id=sub.pk)

    # The first candle OKX has is the 1D candle containing the listing: it opened at 00:00 UTC+8 = 16:00 UTC.
    assert min(g.start for g in gaps) == listing - timedelta(hours=8)
    for gap in gaps:
        assert fill(sim, keys, redis, gap).state == GapState.FILLED
    end_ms = datetime_to_ms(max(g.end for g in gaps))
    assert assert_equals_truth(sim, sub, datetime_to_ms(listing) - 8 * HOUR, end_ms) >= 4
    assert {row[0] % DAY for row in stored(sub, 0, end_ms)} == {16 * HOUR}


@pytest.mark.django_db
def test_filling_twice_is_harmless(sim, keys, redis, instruments, listing):
    sub = subscribe(instruments["BTC-USDT"], "1H", backfill_from=listing)
    gaps = gaps_detect(subscription_id=sub.pk)
    for gap in gaps:
        fill(sim, keys, redis, gap)
    before = stored(sub, 0, 2**42)

    again = [fill(sim, keys, redis, gap) for gap in gaps]
    assert all(result.skipped for result in again)  # finished gaps are not claimable
    Gap.objects.filter(pk__in=[g.pk for g in gaps]).update(state=GapState.OPEN)  # an operator reopens them
    refilled = [fill(sim, keys, redis, gap) for gap in gaps]

    assert [r.state for r in refilled] == [GapState.FILLED] * len(gaps)
    assert stored(sub, 0, 2**42) == before
    assert gaps_detect(subscription_id=sub.pk, start=listing) == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_filling_one_gap_fill_it_once(sim, keys, redis, instruments, listing):
    sub = subscribe(instruments["SOL-USDT"], "1m", backfill_from=timezone.now() - timedelta(hours=3))
    (gap,) = gaps_detect(subscription_id=sub.pk)
    barrier = threading.Barrier(2)
    results: list[GapFillResult] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(fill(sim, keys, redis, gap))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(r.state for r in results) == [GapState.FILLED, "skipped"]
    gap.refresh_from_db()
    assert (gap.state, gap.attempts) == (GapState.FILLED, 1)
    assert assert_equals_truth(sim, sub, datetime_to_ms(gap.start), datetime_to_ms(gap.end)) == gap.missing


@pytest.mark.django_db
def test_a_gap_left_filling_by_a_dead_worker_is_claimed_again(sim, keys, redis, instruments):
    sub = subscribe(instruments["BTC-USDT"], "1m", backfill_from=timezone.now() - timedelta(hours=1))
    (gap,) = gaps_detect(subscription_id=sub.pk)
    Gap.objects.filter(pk=gap.pk).update(state=GapState.FILLING, attempts=1, updated_at=timezone.now())

    assert fill(sim, keys, redis, gap).skipped  # its worker may still be at it
    assert gaps_next(limit=10) == []

    Gap.objects.filter(pk=gap.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    assert gaps_next(limit=10) == [gap.pk]
    assert fill(sim, keys, redis, gap).state == GapState.FILLED
    gap.refresh_from_db()
    assert gap.attempts == 2


@pytest.mark.django_db
def test_429_bursts_still_end_filled(sim, keys, redis, instruments, listing):
    sub = subscribe(instruments["ETH-USDT"], "1m", backfill_from=listing + timedelta(days=2))
    gap = gaps_detect(subscription_id=sub.pk)[0]
    sim.simulator.rest_429(4)

    result = fill(sim, keys, redis, gap)

    assert result.state == GapState.FILLED
    stats = sim.simulator.stats()
    assert stats["rest_429s"] >= 4
    assert assert_equals_truth(sim, sub, datetime_to_ms(gap.start), datetime_to_ms(gap.end)) == gap.missing
    # Every request and every 429 the simulator saw is counted, and the filled gap too.
    assert counters(redis, keys) == {
        "rest_requests": stats["rest_requests"], "rest_rate_limited": stats["rest_429s"],
        "rest_retries": stats["rest_429s"], "gaps_filled": 1,
    }


@pytest.mark.django_db
def test_a_transient_failure_leaves_the_gap_open_and_raises(sim, keys, redis, instruments, monkeypatch):
    monkeypatch.setattr(shared_rest, "REST_MAX_RETRIES", 0)
    sub = subscribe(instruments["BTC-USDT"], "1H", backfill_from=timezone.now() - timedelta(hours=12))
    (gap,) = gaps_detect(subscription_id=sub.pk)
    sim.simulator.rest_429(1)

    with pytest.raises(RestError, match="50011"):
        fill(sim, keys, redis, gap)

    gap.refresh_from_db()
    assert (gap.state, gap.attempts) == (GapState.OPEN, 1)
    assert gap.reason.startswith("attempt 1 failed: OKX REST error 50011")
    assert counters(redis, keys) == {"rest_requests": 1, "rest_rate_limited": 1}  # counted though it failed
    assert fill(sim, keys, redis, gap).state == GapState.FILLED
    assert counters(redis, keys)["gaps_filled"] == 1


@pytest.mark.django_db
def test_an_instrument_gone_from_okx_makes_its_gap_unfillable(sim, keys, redis, listing):
    gone = Instrument.objects.create(inst_id="GONE-USDT", inst_type="SPOT", listed_at=listing)
    sub = subscribe(gone, "1H", backfill_from=timezone.now() - timedelta(hours=5))
    (gap,) = gaps_detect(subscription_id=sub.pk)

    result = fill(sim, keys, redis, gap)

    gap.refresh_from_db()
    assert result.state == gap.state == GapState.UNFILLABLE
    assert gap.reason == "OKX refused the request: Instrument ID does not exist (code 51001)"


# --- what REST cannot serve, and bounded gaps ---------------------------------------------------------


@pytest.mark.django_db
def test_websocket_only_bars_are_recorded_unfillable_at_detection(instrument):
    now = timezone.now()
    xrp = instrument("XRP-USDT", listed_at=now - timedelta(days=30))
    sub = subscribe(xrp, "5D", backfill_from=now - timedelta(days=30))

    gaps = gaps_detect(subscription_id=sub.pk, now=now)

    assert gaps
    assert {(g.state, g.reason) for g in gaps} == {
        (GapState.UNFILLABLE, "OKX REST does not serve 5D candles (WebSocket only)")
    }
    assert gaps_next(limit=10) == []
    assert gaps_detect(subscription_id=sub.pk, now=now) == []


@pytest.mark.django_db
def test_1s_history_past_okx_retention_is_unfillable_and_the_rest_is_split_into_bounded_gaps(instrument, tf):
    # OKX's REST retention, not ours: 1s is kept forever here (by default its 7 days would clip the range first).
    Timeframe.objects.filter(code="1s").update(retention=None)
    now = timezone.now()
    sub = subscribe(instrument("XRP-USDT", listed_at=now - timedelta(days=200)), "1s")
    start, end = now - timedelta(days=90, hours=3), now - timedelta(days=89, hours=18)

    gaps = sorted(gaps_detect(subscription_id=sub.pk, start=start, end=end, now=now), key=lambda g: g.start)

    spec = tf("1s").spec
    first_ms, last_ms = spec.ceil(datetime_to_ms(start)), spec.floor(datetime_to_ms(end))
    retention_ms = spec.ceil(datetime_to_ms(now) - 90 * DAY)
    old, *recent = gaps
    assert old.state == GapState.UNFILLABLE
    assert old.reason == "OKX REST serves 1s candles of the last 90 days only"
    assert (datetime_to_ms(old.start), datetime_to_ms(old.end)) == (first_ms, retention_ms - 1000)
    assert old.missing == (retention_ms - first_ms) // 1000
    assert {g.state for g in recent} == {GapState.OPEN}
    page = PAGE_CANDLES["history"]  # 1s candles come from /history-candles only
    assert [g.missing for g in recent][:2] == [page, page]
    assert len(recent) == -(-sum(g.missing for g in recent) // page)
    # Contiguous, without overlap, up to `end`.
    assert datetime_to_ms(recent[0].start) == retention_ms
    for before, after in itertools.pairwise(recent):
        assert datetime_to_ms(after.start) == datetime_to_ms(before.end) + 1000
    assert datetime_to_ms(recent[-1].end) == last_ms
    assert sum(g.missing for g in gaps) == (last_ms - first_ms) // 1000 + 1


@pytest.mark.django_db
def test_detection_records_each_hole_once_and_never_the_open_candle(instrument, stored_candles, tf):
    now = timezone.now()
    sub = subscribe(instrument("XRP-USDT", listed_at=now - timedelta(days=30)), "1m")
    spec = tf("1m").spec
    open_ms = spec.floor(datetime_to_ms(now))
    window = range(open_ms - 120 * MINUTE, open_ms + MINUTE, MINUTE)  # up to and including the open candle
    holes = {open_ms - 100 * MINUTE, open_ms - 50 * MINUTE, open_ms - 49 * MINUTE}
    stored_candles(sub.instrument, "1m", [ms for ms in window if ms not in holes and ms != open_ms - MINUTE])

    start = ms_to_datetime(open_ms - 120 * MINUTE)
    gaps = gaps_detect(subscription_id=sub.pk, start=start, now=now, settle=timedelta(0))

    assert sorted((datetime_to_ms(g.start), datetime_to_ms(g.end), g.missing) for g in gaps) == [
        (open_ms - 100 * MINUTE, open_ms - 100 * MINUTE, 1),
        (open_ms - 50 * MINUTE, open_ms - 49 * MINUTE, 2),
        (open_ms - MINUTE, open_ms - MINUTE, 1),  # the last closed candle; the open one is never a gap
    ]
    assert gaps_detect(subscription_id=sub.pk, start=start, now=now, settle=timedelta(0)) == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_detections_record_a_gap_once(instrument):
    now = timezone.now()
    sub = subscribe(instrument("XRP-USDT", listed_at=now - timedelta(days=30)), "1m",
                    backfill_from=now - timedelta(days=3))
    barrier = threading.Barrier(3)
    found: list[int] = []

    def detect() -> None:
        try:
            barrier.wait()
            found.append(len(gaps_detect(subscription_id=sub.pk, now=now)))
        finally:
            connection.close()

    threads = [threading.Thread(target=detect) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    recorded = sub.gaps.count()
    assert recorded >= 1
    assert sorted(found) == [0, 0, recorded]


# --- the REST counters ----------------------------------------------------------------------------------


def test_a_rest_clients_tallies_from_elsewhere_add_to_the_shared_counters(keys, redis):
    shared_rest.rest_stats_record(redis=redis, keys=keys, stats={"requests": 3, "retries": 1, "rate_limited": 1})
    shared_rest.rest_stats_record(redis=redis, keys=keys, stats={"requests": 2, "retries": 0, "rate_limited": 0})

    assert counters(redis, keys) == {"rest_requests": 5, "rest_retries": 1, "rest_rate_limited": 1}


def test_rest_tallies_that_cannot_be_recorded_do_not_fail_the_caller(keys, caplog):
    down = redis_lib.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)

    shared_rest.rest_stats_record(redis=down, keys=keys, stats={"requests": 1})

    assert "REST counters {'rest_requests': 1} not recorded" in caplog.text
