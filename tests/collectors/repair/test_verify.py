"""Re-verifying stored candles against OKX REST: the simulator over real sockets, real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Instrument, Timeframe
from candles.storage import CandleRow, candles_upsert
from collectors.repair import verify
from collectors.repair.verify import (
    NotVerifiable,
    VerifyReport,
    candles_verify,
    verify_report_save,
    verify_reports,
)
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.keys import Keys
from tests.support import isolated_keys

pytestmark = pytest.mark.django_db

MINUTE = 60_000


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    config = SimulatorConfig(seed=7, instruments=2, bars=("1m", "1H", "5D"), history_days=2)
    with run_in_thread(config, port=0) as handle:
        yield handle


@pytest.fixture
def keys(redis) -> Iterator[Keys]:
    """Keys of this test only: its REST budget and saved reports are its own."""
    with isolated_keys(redis) as keys:
        yield keys


@pytest.fixture
def btc(sim) -> Instrument:
    return Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT",
                                     listed_at=ms_to_datetime(sim.simulator.market.list_time_ms))


@pytest.fixture
def window() -> tuple[int, int]:
    """Forty closed minutes, ending well before now."""
    end = (datetime_to_ms(timezone.now()) // MINUTE - 5) * MINUTE
    return end - 39 * MINUTE, end


def truth(sim: ThreadedSimulator, bar: str, start_ms: int, end_ms: int) -> list[list[str]]:
    return sim.simulator.market.truth_range("BTC-USDT", bar, start_ms, end_ms)


def as_row(t: list[str], *, source: str = "ws", version: int = 1, confirmed: bool = True, **changes) -> CandleRow:
    fields = dict(zip(("open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote"), t[1:8], strict=True))
    fields.update(changes)
    return CandleRow("BTC-USDT", "1m", int(t[0]), *fields.values(), confirmed, source, version)


def other_close(t: list[str]) -> str:
    """A close inside the candle's range that is not OKX's: a valid row with the wrong numbers."""
    high, low, close = t[2], t[3], t[4]
    other = low if Decimal(close) != Decimal(low) else high
    assert Decimal(other) != Decimal(close), f"a flat candle has no other valid close: {t}"
    return other


def stored(bar: str, start_ms: int, end_ms: int) -> list[list[str]]:
    """Stored candles as OKX's text rows (exact digits), oldest first."""
    rows = Candle.objects.filter(
        instrument__inst_id="BTC-USDT", timeframe__code=bar,
        open_time__gte=ms_to_datetime(start_ms), open_time__lte=ms_to_datetime(end_ms),
    ).order_by("open_time").values_list("open_time", "open", "high", "low", "close", "vol", "vol_ccy",
                                        "vol_ccy_quote", "confirmed")
    return [[str(datetime_to_ms(r[0])), *(str(v) for v in r[1:8]), "1" if r[8] else "0"] for r in rows]


def run(sim, keys, start_ms: int, end_ms: int, bar: str = "1m", **kwargs) -> VerifyReport:
    return candles_verify(inst_id="BTC-USDT", bar=bar, start=ms_to_datetime(start_ms), end=ms_to_datetime(end_ms),
                          rest_url=sim.rest_url, keys=keys, **kwargs)


def test_differences_are_found_counted_and_rewritten_from_rest(sim, redis, keys, btc, window):
    start, end = window
    expected = truth(sim, "1m", start, end)
    assert len(expected) == 40
    rows = [as_row(t) for t in expected]
    rows[3] = as_row(expected[3], close=other_close(expected[3]))  # a wrong close
    rows[7] = as_row(expected[7], confirmed=False)  # never got its confirm push
    rows[9] = as_row(expected[9], vol=expected[9][5] + "0")  # same value, other digits
    del rows[20:23]  # three missing
    assert candles_upsert(rows=rows).written == 37

    report = run(sim, keys, start, end)

    assert (report.checked, report.matching, report.missing, report.different, report.extra) == (40, 34, 3, 3, 0)
    assert int(redis.hget(keys.counters, "rest_requests")) >= 1  # counted for the metrics like the backfill's
    assert (report.written, report.kept, report.rejected) == (6, 0, 0)
    assert report.done
    assert (report.start_ms, report.end_ms) == (start, end)
    assert f"{ms_to_datetime(int(expected[3][0])).isoformat()} different" in report.samples
    assert f"{ms_to_datetime(int(expected[7][0])).isoformat()} unconfirmed" in report.samples
    # Now exactly OKX's, digit for digit; the rewritten rows are REST's, the others untouched.
    assert stored("1m", start, end) == expected
    sources = dict(Candle.objects.filter(instrument=btc).values_list("open_time", "source"))
    rewritten = {int(expected[i][0]) for i in (3, 7, 9, 20, 21, 22)}
    assert {datetime_to_ms(t) for t, source in sources.items() if source == "rest"} == rewritten


def test_verifying_again_finds_everything_matching_and_writes_nothing(sim, keys, btc, window):
    start, end = window
    candles_upsert(rows=[as_row(t) for t in truth(sim, "1m", start, end)][5:])
    run(sim, keys, start, end)

    again = run(sim, keys, start, end)

    assert (again.checked, again.matching, again.missing, again.different, again.written) == (40, 40, 0, 0, 0)


def test_a_stored_version_newer_than_the_fetch_is_kept_by_the_version_rule(sim, keys, btc, window):
    start, end = window
    expected = truth(sim, "1m", start, end)
    future = (datetime_to_ms(timezone.now()) + 3_600_000) * 1000
    wrong = as_row(expected[0], close=other_close(expected[0]), version=future)
    candles_upsert(rows=[wrong, *(as_row(t) for t in expected[1:])])

    report = run(sim, keys, start, end)

    assert (report.different, report.written, report.kept) == (1, 0, 1)
    assert stored("1m", start, start)[0][4] == other_close(expected[0])


def test_stored_candles_rest_does_not_list_are_counted_never_deleted(sim, keys, btc):
    listing = sim.simulator.market.list_time_ms
    Instrument.objects.filter(pk=btc.pk).update(listed_at=None)  # a listing time we never learnt
    first_five = truth(sim, "1m", listing, listing + 4 * MINUTE)
    # Five candles stored before OKX's listing: REST has none there.
    before = [as_row([str(int(t[0]) - 5 * MINUTE), *t[1:]]) for t in first_five]
    candles_upsert(rows=before + [as_row(t) for t in first_five])

    report = run(sim, keys, listing - 5 * MINUTE, listing + 4 * MINUTE)

    assert (report.checked, report.matching, report.extra, report.written) == (5, 5, 5, 0)
    assert Candle.objects.filter(instrument=btc).count() == 10


def test_the_range_is_narrowed_to_the_listing(sim, keys, btc):
    listing = sim.simulator.market.list_time_ms

    report = run(sim, keys, listing - 10 * MINUTE, listing + 4 * MINUTE)

    assert (report.start_ms, report.end_ms) == (listing, listing + 4 * MINUTE)
    assert (report.checked, report.missing, report.written) == (5, 5, 5)
    assert stored("1m", listing - 10 * MINUTE, listing + 4 * MINUTE) == truth(sim, "1m", listing, listing + 4 * MINUTE)


def test_a_long_range_stops_at_the_time_budget_and_says_where_to_go_on(sim, keys, btc, window, monkeypatch):
    monkeypatch.setattr(verify, "VERIFY_UNIT_CANDLES", 15)
    start, end = window

    first = run(sim, keys, start, end, budget_s=0)

    assert not first.done
    assert (first.start_ms, first.end_ms, first.next_start_ms) == (start, start + 14 * MINUTE, start + 15 * MINUTE)
    assert first.checked == first.missing == 15
    rest = run(sim, keys, first.next_start_ms, end)
    assert rest.done
    assert rest.checked == 25
    assert stored("1m", start, end) == truth(sim, "1m", start, end)


def test_only_closed_candles_rest_serves_are_verifiable(sim, keys, btc):
    now_ms = datetime_to_ms(timezone.now())
    with pytest.raises(NotVerifiable, match="does not serve 5D"):
        run(sim, keys, now_ms - 30 * 86_400_000, now_ms, bar="5D")
    with pytest.raises(NotVerifiable, match="no closed 1H candle"):
        run(sim, keys, now_ms - 60_000, now_ms, bar="1H")  # only the open hour
    assert Timeframe.objects.get(code="1H").rest_history  # (the bar itself is served)


def test_reports_are_kept_newest_first_for_the_dashboard(sim, keys, btc, window, redis):
    start, end = window
    for bar_end in (start + 4 * MINUTE, end):
        verify_report_save(redis, keys, run(sim, keys, start, bar_end))

    saved = verify_reports(redis, keys, limit=5)

    assert [(r.end_ms, r.checked, r.missing) for r in saved] == [(end, 40, 35), (start + 4 * MINUTE, 5, 5)]
    assert saved[0].start == ms_to_datetime(start)
