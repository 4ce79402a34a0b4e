"""`manage.py backfill` against the real PostgreSQL and Redis and the OKX simulator over real sockets.

Runs that must be interrupted run the command in a subprocess and send it SIGINT, as Ctrl-C does; they
use transactional tests so that the subprocess sees the rows the test stored.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
import redis as redis_lib
from django.core.management import CommandError, call_command
from django.db import connection

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Gap, GapState, Instrument, Subscription, Timeframe
from collectors.repair import reach
from collectors.repair.detect import MAX_GAP_CANDLES
from collectors.repair.reach import PAGE_CANDLES
from collectors.shared import rest as shared_rest
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.cli import iso
from tests.support import wait_for
from tests.support.ports import free_port as unused_port
from tests.support.signals import default_sigint

ROOT = Path(__file__).resolve().parents[2]
MINUTE = 60_000
INSTRUMENTS = ("BTC-USDT", "ETH-USDT")


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    config = SimulatorConfig(seed=7, instruments=2, bars=("1m", "1H", "1s", "1M"), history_days=5)
    with run_in_thread(config, port=0) as handle:
        yield handle


@pytest.fixture
def prefix(settings) -> Iterator[str]:
    """A Redis key prefix of this test's own (its REST budget too), removed afterwards."""
    prefix = f"test:cli-backfill:{uuid.uuid4().hex}:"
    settings.REDIS_KEY_PREFIX = prefix
    url = settings.REDIS_URL  # a test may point REDIS_URL elsewhere
    yield prefix
    client = redis_lib.Redis.from_url(url)
    stale = list(client.scan_iter(match=f"{prefix}*"))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def listing(sim) -> datetime:
    return ms_to_datetime(sim.simulator.market.list_time_ms)


@pytest.fixture
def okx(db, sim, prefix, settings, listing) -> ThreadedSimulator:
    """The simulator as OKX: OKX_REST_URL points at it and its instruments are stored."""
    settings.OKX_REST_URL = sim.rest_url
    for inst_id in INSTRUMENTS:
        Instrument.objects.create(inst_id=inst_id, inst_type="SPOT", listed_at=listing)
    return sim


def run_backfill(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("backfill", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stored(inst_id: str, bar: str, start_ms: int, end_ms: int) -> list[list[str]]:
    """Stored candles as OKX's rows: [ts, o, h, l, c, vol, volCcy, volCcyQuote], exact strings, oldest first."""
    rows = Candle.objects.filter(
        instrument__inst_id=inst_id, timeframe__code=bar, confirmed=True,
        open_time__gte=ms_to_datetime(start_ms), open_time__lte=ms_to_datetime(end_ms),
    ).order_by("open_time").values_list("open_time", "open", "high", "low", "close", "vol", "vol_ccy",
                                        "vol_ccy_quote")
    return [[str(datetime_to_ms(row[0])), *(str(value) for value in row[1:])] for row in rows]


def truth(sim: ThreadedSimulator, inst_id: str, bar: str, start_ms: int, end_ms: int) -> list[list[str]]:
    return [row[:8] for row in sim.simulator.market.truth_range(inst_id, bar, start_ms, end_ms)]


def report(out: str) -> dict[str, int]:
    """The figures of the final report: {"already present": 0, "fetched": 2880, ...} (unfillable summed)."""
    figures: dict[str, int] = {}
    for name, count in re.findall(r"^  ([a-z][a-z ]+?) +([\d,]+)(?:  .*)?$", out, flags=re.MULTILINE):
        figures[name] = figures.get(name, 0) + int(count.replace(",", ""))
    return figures


def gap_states(inst_id: str, bar: str) -> list[tuple[str, int]]:
    return list(Gap.objects.filter(subscription__instrument__inst_id=inst_id, subscription__timeframe__code=bar)
                .order_by("start").values_list("state", "missing"))


# --- a complete run ------------------------------------------------------------------------------


def test_it_stores_the_range_exactly_as_okx_has_it(okx, listing):
    start, end = listing + timedelta(hours=6), listing + timedelta(days=2, hours=6) - timedelta(minutes=1)

    out, err = run_backfill("BTC-USDT", "1m", "--from", iso(start), "--to", str(datetime_to_ms(end)))

    start_ms, end_ms = datetime_to_ms(start), datetime_to_ms(end)
    expected = truth(okx, "BTC-USDT", "1m", start_ms, end_ms)
    assert len(expected) == 2880
    assert stored("BTC-USDT", "1m", start_ms, end_ms) == expected  # every digit as OKX sent it
    assert Candle.objects.count() == 2880  # nothing outside the range
    assert f"BTC-USDT 1m from {iso(start)} to {iso(end)}: 2,880 candles" in out
    assert report(out) == {"already present": 0, "fetched": 2880, "written": 2880, "unfillable": 0,
                           "still missing": 0}
    assert re.search(r"^  took \d+\.\ds \([\d,]+ candles fetched/s\)$", out, flags=re.MULTILINE)
    # Not a terminal: plain progress lines, the last one complete.
    assert err.splitlines()[-1].startswith("BTC-USDT 1m: 2,880 of 2,880 candles (100%), ")
    assert "\r" not in err
    # The work was recorded as gaps of a new paused subscription, all filled now.
    subscription = Subscription.objects.get(instrument__inst_id="BTC-USDT", timeframe__code="1m")
    assert not subscription.is_active
    assert "paused one" in out
    states = gap_states("BTC-USDT", "1m")
    assert {state for state, _ in states} == {GapState.FILLED}
    assert sum(missing for _, missing in states) == 2880
    assert max(missing for _, missing in states) <= MAX_GAP_CANDLES


def test_running_it_again_fetches_only_what_is_missing(okx, listing):
    start, end = listing, listing + timedelta(days=1) - timedelta(minutes=1)
    first_half_end = listing + timedelta(hours=12) - timedelta(minutes=1)
    run_backfill("ETH-USDT", "1m", "--from", iso(start), "--to", iso(first_half_end))
    # A hole in the middle of what is stored, and an unconfirmed version of a closed candle: both missing.
    Candle.objects.filter(instrument__inst_id="ETH-USDT", timeframe__code="1m",
                          open_time__gte=listing + timedelta(hours=2), open_time__lt=listing + timedelta(hours=3),
                          ).delete()
    Candle.objects.filter(instrument__inst_id="ETH-USDT", timeframe__code="1m",
                          open_time=listing + timedelta(hours=4)).update(confirmed=False, source="ws")
    requests_before = okx.simulator.stats()["rest_requests"]

    out, _ = run_backfill("ETH-USDT", "1m", "--from", iso(start), "--to", iso(end), "--quiet")

    assert report(out) == {"already present": 720 - 60 - 1, "fetched": 720 + 60 + 1, "written": 720 + 60 + 1,
                           "unfillable": 0, "still missing": 0}
    start_ms, end_ms = datetime_to_ms(start), datetime_to_ms(end)
    assert stored("ETH-USDT", "1m", start_ms, end_ms) == truth(okx, "ETH-USDT", "1m", start_ms, end_ms)
    # Three runs of missing candles (720, 60 and 1), in gaps of one /history-candles page (100) each: no page of
    # stored candles is asked for.
    assert okx.simulator.stats()["rest_requests"] - requests_before <= 8 + 1 + 1

    again, err = run_backfill("ETH-USDT", "1m", "--from", iso(start), "--to", iso(end))

    assert report(again) == {"already present": 1440, "fetched": 0, "written": 0, "unfillable": 0,
                             "still missing": 0}
    assert err == ""  # nothing to fetch, no progress to show


def test_history_before_the_listing_is_reported_unfillable_with_the_reason(okx, listing):
    start, end = listing - timedelta(days=1), listing + timedelta(hours=1) - timedelta(minutes=1)

    out, err = run_backfill("BTC-USDT", "1m", "--from", iso(start), "--to", iso(end), "--quiet")

    assert report(out) == {"already present": 0, "fetched": 60, "written": 60, "unfillable": 1440,
                           "still missing": 0}
    assert err == ""  # --quiet: no progress
    listed = listing.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"1,440  before BTC-USDT was listed ({listed}); OKX has no candles there" in out
    start_ms, end_ms = datetime_to_ms(start), datetime_to_ms(end)
    assert stored("BTC-USDT", "1m", start_ms, end_ms) == truth(okx, "BTC-USDT", "1m", start_ms, end_ms)


def test_1s_history_past_okx_retention_is_recorded_unfillable(okx, listing, monkeypatch):
    # OKX keeps 1s candles for 90 days; the simulator's history is five, so the retention shrinks to one.
    monkeypatch.setitem(reach.REST_RETENTION, "1s", timedelta(days=1))
    now = datetime.now(tz=listing.tzinfo).replace(microsecond=0)
    start, end = now - timedelta(days=1, minutes=2), now - timedelta(days=1) + timedelta(minutes=2)

    out, _ = run_backfill("BTC-USDT", "1s", "--from", iso(start), "--to", iso(end), "--quiet")

    figures = report(out)
    assert 0 < figures["unfillable"] < 241
    assert figures["unfillable"] + figures["fetched"] == 241
    assert figures["still missing"] == 0
    assert re.search(r"^  unfillable +[\d,]+  OKX REST serves 1s candles of the last 1 days only$", out, re.MULTILINE)
    fetched_from = datetime_to_ms(end) - (figures["fetched"] - 1) * 1000
    assert stored("BTC-USDT", "1s", 0, 2**42) == truth(okx, "BTC-USDT", "1s", fetched_from, datetime_to_ms(end))


def test_history_behind_the_bars_retention_horizon_is_not_fetched(okx, listing):
    Timeframe.objects.filter(code="1s").update(retention=timedelta(days=1))
    now = datetime.now(tz=listing.tzinfo).replace(microsecond=0)
    start, end = now - timedelta(days=1, minutes=2), now - timedelta(days=1) + timedelta(minutes=2)

    out, _ = run_backfill("BTC-USDT", "1s", "--from", iso(start), "--to", iso(end), "--quiet")

    figures = report(out)
    assert 0 < figures["unfillable"] < 241
    assert figures["unfillable"] + figures["fetched"] == 241
    assert figures["still missing"] == 0
    assert re.search(r"^  unfillable +[\d,]+  behind the 1s retention horizon \(.*\); not kept$", out, re.MULTILINE)
    horizon_ms = datetime_to_ms(end) - (figures["fetched"] - 1) * 1000
    assert not Gap.objects.filter(subscription__timeframe__code="1s", start__lt=ms_to_datetime(horizon_ms)).exists()


def test_it_uses_an_existing_subscription_active_or_not(okx, listing):
    subscription = Subscription.objects.create(instrument=Instrument.objects.get(inst_id="BTC-USDT"),
                                               timeframe=Timeframe.objects.get(code="1H"), is_active=True)

    out, _ = run_backfill("BTC-USDT", "1H", "--from", iso(listing), "--to", iso(listing + timedelta(hours=23)),
                          "--quiet")

    assert report(out)["fetched"] == 24
    assert "paused one" not in out
    assert Subscription.objects.count() == 1
    assert set(subscription.gaps.values_list("state", flat=True)) == {GapState.FILLED}


def test_a_rest_outage_stops_it_with_the_work_kept_for_the_next_run(okx, listing, settings, monkeypatch):
    monkeypatch.setattr(shared_rest, "REST_MAX_RETRIES", 0)
    settings.OKX_REST_URL = f"http://127.0.0.1:{unused_port()}"
    args = ("BTC-USDT", "1m", "--from", iso(listing), "--to", iso(listing + timedelta(hours=30)), "--quiet")

    with pytest.raises(CommandError, match=r"stopped: .*ConnectError: .* run the same command again"):
        run_backfill(*args)

    assert Candle.objects.count() == 0
    assert {state for state, _ in gap_states("BTC-USDT", "1m")} == {GapState.OPEN}  # none left "filling"

    settings.OKX_REST_URL = okx.rest_url
    out, _ = run_backfill(*args)

    assert report(out)["fetched"] == 30 * 60 + 1
    assert report(out)["still missing"] == 0


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (("NOPE-USDT", "1m"), r"unknown instrument 'NOPE-USDT'\. If OKX listed it recently, run `manage.py "
                          r"sync_instruments`"),
    (("btc-usdt", "1m"), r"unknown instrument 'btc-usdt'; did you mean BTC-USDT\?"),
    (("BTC-USDT", "1h"), r"timeframe '1h' is not an OKX bar; bars are case-sensitive \(1m is a minute, 1M a "
                         r"month\)\. Active bars: 1s, 1m, 3m"),
    (("BTC-USDT", "5D"), r"OKX REST does not serve 5D candles \(WebSocket only\)"),
])
def test_it_refuses_unknown_series_with_a_clear_message(okx, args, message):
    with pytest.raises(CommandError, match=message):
        run_backfill(*args, "--from", "2024-01-01")
    assert not Subscription.objects.exists()


def test_it_says_to_sync_instruments_when_there_are_none(db):
    with pytest.raises(CommandError, match=r"No instruments are stored yet: run `manage.py sync_instruments`"):
        run_backfill("BTC-USDT", "1m", "--from", "2024-01-01")


def test_1M_is_a_month_of_hong_kong_time_not_a_minute(okx, listing):
    start = listing - timedelta(days=70)

    out, _ = run_backfill("BTC-USDT", "1M", "--from", iso(start), "--quiet")

    # Monthly bars open at midnight of the 1st in UTC+8, 16:00 UTC the day before.
    assert re.search(r"^BTC-USDT 1M from \d{4}-\d\d-\d\dT16:00:00Z to \S+: \d candles$", out, re.MULTILINE)
    months = truth(okx, "BTC-USDT", "1M", datetime_to_ms(start), datetime_to_ms(listing) + 40 * 86_400_000)
    assert stored("BTC-USDT", "1M", 0, 2**42) == months  # the month of the listing, if it has closed
    assert not Candle.objects.filter(timeframe__code="1m").exists()


@pytest.mark.parametrize(("times", "message"), [
    (("--from", "2024-02-01", "--to", "2024-01-01"), r"--from 2024-02-01T00:00:00Z is after --to 2024-01-01T00:00:00Z"),
    (("--from", "2999-01-01"), r"--from 2999-01-01T00:00:00Z is in the future"),
    (("--from", "yesterday"), r"--from: 'yesterday' is neither an ISO 8601 date or time"),
    (("--from", "1705431600"), r"--from: 1705431600 is too small for epoch milliseconds .* give 1705431600000"),
    (("--from", "2024-01-01", "--to", "2024-13-01"), r"--to: '2024-13-01' is neither"),
])
def test_it_refuses_bad_times_with_a_clear_message(okx, times, message):
    with pytest.raises(CommandError, match=message):
        run_backfill("BTC-USDT", "1m", *times)


def test_times_may_name_a_zone_or_be_epoch_milliseconds(okx, listing):
    hong_kong = (listing + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S+08:00")  # = the listing, in UTC+8
    end_ms = datetime_to_ms(listing + timedelta(minutes=9))

    out, _ = run_backfill("BTC-USDT", "1m", "--from", hong_kong, "--to", str(end_ms), "--quiet")

    assert f"from {iso(listing)} to {iso(ms_to_datetime(end_ms))}: 10 candles" in out


def test_redis_down_stops_it_before_anything_is_recorded(okx, settings):
    settings.REDIS_URL = f"redis://:secret@127.0.0.1:{unused_port()}/0"

    with pytest.raises(CommandError, match=r"Redis at redis://:\*\*\*@127\.0\.0\.1:\d+/0 is unreachable .* the "
                                           r"REST rate budget every worker shares lives there"):
        run_backfill("BTC-USDT", "1m", "--from", "2024-01-01")

    assert not Gap.objects.exists()
    assert not Subscription.objects.exists()


# --- Ctrl-C and resuming -------------------------------------------------------------------------


class Subprocess:
    """`manage.py backfill` in a process of its own, on the test database, the simulator and the test's prefix."""

    def __init__(self, sim: ThreadedSimulator, prefix: str, *args: str):
        db = connection.settings_dict
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_KEY_PREFIX": prefix, "OKX_REST_URL": sim.rest_url, "PYTHONUNBUFFERED": "1",
        }
        # --skip-checks: the system checks (URLs, admin) are tested elsewhere and cost a second per start.
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "backfill", *args, "--skip-checks"], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint,
        )

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"backfill did not stop within {timeout} s:\n{out}\n{err}")
        return self.proc.returncode, out, err


def unit_filling(index: int) -> Callable[[], bool]:
    """Whether the `index`-th unit of work (oldest first) of BTC-USDT 1m is being filled."""
    def check() -> bool:
        states = [state for state, _ in gap_states("BTC-USDT", "1m")]
        return len(states) > index and states[index] == GapState.FILLING
    return check


# A unit of work of these (old) 1m candles: one /history-candles page.
UNIT = min(MAX_GAP_CANDLES, PAGE_CANDLES["history"])


@pytest.fixture
def four_units(okx, listing) -> tuple[tuple[str, ...], int, int]:
    """Arguments of a backfill of four whole units of work (4 × UNIT candles), and its range in ms."""
    start = listing
    end = listing + timedelta(minutes=4 * UNIT - 1)
    return ("BTC-USDT", "1m", "--from", iso(start), "--to", iso(end)), datetime_to_ms(start), datetime_to_ms(end)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_ctrl_c_stops_after_the_current_unit_and_the_same_command_continues(okx, prefix, four_units):
    args, start_ms, end_ms = four_units
    okx.simulator.rest_delay(0.5, 10_000)  # about 0.5 s a unit (one page): time to interrupt one
    run = Subprocess(okx, prefix, *args)
    wait_for(unit_filling(1), timeout=30.0, what="the second unit to start", poll_s=0.02)

    run.interrupt()
    code, out, err = run.finish()

    assert code == 130
    assert "stopping after the current unit of work; Ctrl-C again to stop at once" in err
    assert (f"interrupted with {2 * UNIT:,} candles not fetched yet; the work is recorded. "
            "Run the same command again") in err
    assert f"manage.py backfill BTC-USDT 1m --from {args[3]} --to {args[5]}" in err
    assert report(out) == {"already present": 0, "fetched": 2 * UNIT, "written": 2 * UNIT, "unfillable": 0,
                           "still missing": 2 * UNIT}
    # The unit in progress was finished; the two after it stay recorded, open.
    assert gap_states("BTC-USDT", "1m") == [(GapState.FILLED, UNIT)] * 2 + [(GapState.OPEN, UNIT)] * 2
    assert stored("BTC-USDT", "1m", start_ms, end_ms) == truth(okx, "BTC-USDT", "1m", start_ms,
                                                              start_ms + (2 * UNIT - 1) * MINUTE)

    okx.simulator.rest_delay(0, 0)
    requests_before = okx.simulator.stats()["rest_requests"]
    out, _ = run_backfill(*args)

    assert report(out) == {"already present": 2 * UNIT, "fetched": 2 * UNIT, "written": 2 * UNIT, "unfillable": 0,
                           "still missing": 0}
    assert okx.simulator.stats()["rest_requests"] - requests_before == 2  # two units of one page each, no more
    assert stored("BTC-USDT", "1m", start_ms, end_ms) == truth(okx, "BTC-USDT", "1m", start_ms, end_ms)
    assert {state for state, _ in gap_states("BTC-USDT", "1m")} == {GapState.FILLED}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_second_ctrl_c_stops_at_once_and_gives_the_unit_back(okx, prefix, four_units):
    args, start_ms, end_ms = four_units
    okx.simulator.rest_delay(2, 10_000)  # a unit is one request: it must still be in flight at the interrupts
    run = Subprocess(okx, prefix, *args)
    wait_for(unit_filling(1), timeout=30.0, what="the second unit to start", poll_s=0.02)
    okx.simulator.rest_delay(30, 10_000)  # the unit's next request hangs
    time.sleep(0.5)

    run.interrupt()
    time.sleep(0.3)
    stopped_at = time.monotonic()
    run.interrupt()
    code, out, err = run.finish()

    assert time.monotonic() - stopped_at < 10  # not after the 30 s request
    assert code == 130
    assert f"interrupted with {3 * UNIT:,} candles not fetched yet" in err
    assert report(out)["fetched"] == UNIT
    states = list(Gap.objects.filter(subscription__instrument__inst_id="BTC-USDT").order_by("start")
                  .values_list("state", "attempts", "reason"))
    assert states[0][0] == GapState.FILLED
    # Given back at once, not left "filling" for ten minutes: the next run can take it now.
    assert states[1] == (GapState.OPEN, 1, "interrupted (manage.py backfill)")
    assert [state for state, _, _ in states[2:]] == [GapState.OPEN] * 2
    assert len(stored("BTC-USDT", "1m", start_ms, end_ms)) == UNIT

    okx.simulator.rest_delay(0, 0)
    out, _ = run_backfill(*args, "--quiet")

    assert report(out)["already present"] == UNIT
    assert report(out)["fetched"] == 3 * UNIT
    assert stored("BTC-USDT", "1m", start_ms, end_ms) == truth(okx, "BTC-USDT", "1m", start_ms, end_ms)
