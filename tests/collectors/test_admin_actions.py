"""Admin actions that queue Celery work, run end to end: the admin queues the task, Celery runs it eagerly in
the test, the task calls the service against the OKX simulator over real sockets, real PostgreSQL and Redis.
A broker that is down is an error message within seconds, never a hung page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from celery import Celery
from django.urls import reverse
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Gap, GapState, Instrument, Subscription, Timeframe
from candles.storage import CandleRow, candles_upsert
from collectors import admin_tasks
from collectors.admin_common import enqueue
from collectors.repair.verify import verify_reports
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.celery import app as celery_app
from tests.support.ports import free_port as closed_port

pytestmark = pytest.mark.django_db

MINUTE = 60_000
CHANGELIST = "admin:candles_subscription_changelist"


@pytest.fixture
def sim(settings) -> Iterator[ThreadedSimulator]:
    config = SimulatorConfig(seed=11, instruments=3, swaps=True, bars=("1m", "1H"), history_days=2)
    with run_in_thread(config, port=0) as handle:
        settings.OKX_REST_URL = handle.rest_url
        yield handle


@pytest.fixture
def eager() -> Iterator[None]:
    """Tasks run in the caller, as a worker would run them; their errors surface in the test."""
    saved = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture
def btc(sim) -> Instrument:
    return Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT", base_ccy="BTC", quote_ccy="USDT",
                                     listed_at=ms_to_datetime(sim.simulator.market.list_time_ms))


@pytest.fixture
def window() -> tuple[int, int]:
    """Thirty closed minutes ending well before now."""
    end = (datetime_to_ms(timezone.now()) // MINUTE - 5) * MINUTE
    return end - 29 * MINUTE, end


def truth(sim, start_ms: int, end_ms: int, bar: str = "1m") -> list[list[str]]:
    return sim.simulator.market.truth_range("BTC-USDT", bar, start_ms, end_ms)


def stored(start_ms: int, end_ms: int) -> list[list[str]]:
    rows = Candle.objects.filter(
        instrument__inst_id="BTC-USDT", timeframe__code="1m",
        open_time__gte=ms_to_datetime(start_ms), open_time__lte=ms_to_datetime(end_ms),
    ).order_by("open_time").values_list("open_time", "open", "high", "low", "close", "vol", "vol_ccy",
                                        "vol_ccy_quote", "confirmed")
    return [[str(datetime_to_ms(r[0])), *(str(v) for v in r[1:8]), "1" if r[8] else "0"] for r in rows]


def range_form(start_ms: int, end_ms: int) -> dict[str, str]:
    start, end = ms_to_datetime(start_ms), ms_to_datetime(end_ms)
    return {"start_0": start.strftime("%Y-%m-%d"), "start_1": start.strftime("%H:%M:%S"),
            "end_0": end.strftime("%Y-%m-%d"), "end_1": end.strftime("%H:%M:%S")}


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- backfill and re-verify a range --------------------------------------------------------------------


def test_the_range_actions_first_ask_for_the_range(staff_client, keys, btc):
    sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))

    for action in ("backfill_range", "verify_range"):
        response = staff_client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [sub.pk]})
        body = response.content.decode()
        assert response.status_code == 200
        assert 'name="start_0"' in body
        assert f'name="_selected_action" value="{sub.pk}"' in body
        assert "BTC-USDT 1m" in body

    backwards = range_form(datetime_to_ms(timezone.now()) - 10 * MINUTE, datetime_to_ms(timezone.now()) - 20 * MINUTE)
    refused = staff_client.post(reverse(CHANGELIST), {"action": "backfill_range", "_selected_action": [sub.pk],
                                                      "apply": "yes", **backwards})
    assert "must start before it ends" in refused.content.decode()
    assert not Gap.objects.exists()


def test_backfilling_a_range_now_stores_exactly_okxs_candles(staff_client, keys, eager, sim, btc, window):
    start, end = window
    sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))
    expected = truth(sim, start, end)
    present = [CandleRow("BTC-USDT", "1m", int(t[0]), *t[1:8], True, "ws", 5) for t in expected[10:15]]
    candles_upsert(rows=present)

    response = staff_client.post(reverse(CHANGELIST), {
        "action": "backfill_range", "_selected_action": [sub.pk], "apply": "yes", **range_form(start, end),
    }, follow=True)

    assert response.status_code == 200
    assert messages_of(response) == ["Queued a backfill of 1 subscription(s); see Flower and the gaps list."]
    assert stored(start, end) == expected
    # The candles that were there are untouched (still the WebSocket's); the rest came from REST.
    assert set(Candle.objects.filter(source="ws").values_list("version", flat=True)) == {5}
    assert Candle.objects.filter(source="rest").count() == 25
    assert set(Gap.objects.values_list("state", flat=True)) == {GapState.FILLED}


def test_reverifying_a_range_rewrites_what_differs_and_reports_on_the_index(staff_client, keys, redis, eager, sim,
                                                                            btc, window):
    start, end = window
    sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))
    expected = truth(sim, start, end)
    rows = [CandleRow("BTC-USDT", "1m", int(t[0]), *t[1:8], True, "ws", 5) for t in expected]
    wrong = expected[4]
    other = wrong[3] if Decimal(wrong[4]) != Decimal(wrong[3]) else wrong[2]  # low (or high): valid, not OKX's
    assert Decimal(other) != Decimal(wrong[4])
    rows[4] = CandleRow("BTC-USDT", "1m", int(wrong[0]), *wrong[1:4], other, *wrong[5:8], True, "ws", 5)
    candles_upsert(rows=rows[:20] + rows[21:])

    response = staff_client.post(reverse(CHANGELIST), {
        "action": "verify_range", "_selected_action": [sub.pk], "apply": "yes", **range_form(start, end),
    }, follow=True)

    assert messages_of(response) == [
        "Queued a re-verification of 1 subscription(s); see Flower and the reports on the admin index."]
    assert stored(start, end) == expected
    [report] = verify_reports(redis, keys)
    assert (report.checked, report.matching, report.missing, report.different, report.written) == (30, 28, 1, 1, 2)
    index = staff_client.get(reverse("admin:index")).content.decode()
    assert 'id="verify-reports"' in index
    assert "BTC-USDT 1m" in index


def test_a_long_backfill_continues_in_new_messages_until_done(keys, eager, sim, btc, window, monkeypatch):
    start, end = window
    sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))
    monkeypatch.setattr("collectors.repair.detect.MAX_GAP_CANDLES", 10)  # three gaps
    monkeypatch.setattr(admin_tasks, "RUN_BUDGET_S", 0.0)  # each run fills one gap, then hands over
    runs = []
    real_apply_async = admin_tasks.fill_range_gaps.apply_async

    def counting(*args, **kwargs):
        runs.append(args)
        kwargs.pop("countdown", None)  # no waiting in the test
        return real_apply_async(*args, **kwargs)

    monkeypatch.setattr(admin_tasks.fill_range_gaps, "apply_async", counting)

    result = admin_tasks.backfill_range(sub.pk, start, end)

    assert result["recorded"] == 3
    assert len(runs) == 2
    assert stored(start, end) == truth(sim, start, end)


# --- gaps, instruments ---------------------------------------------------------------------------------


# Committed for real, as in production: the fills are queued only once the reopened gaps are committed.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_filling_gaps_now_retries_unfillable_ones_and_skips_filled_ones(staff_client, keys, eager, sim, btc, window):
    start, end = window
    sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))
    unfillable = Gap.objects.create(subscription=sub, start=ms_to_datetime(start),
                                    end=ms_to_datetime(start + 9 * MINUTE), missing=10, state=GapState.UNFILLABLE,
                                    attempts=5, reason="REST was down")
    open_gap = Gap.objects.create(subscription=sub, start=ms_to_datetime(start + 10 * MINUTE),
                                  end=ms_to_datetime(end), missing=20)
    filled = Gap.objects.create(subscription=sub, start=ms_to_datetime(start - 5 * MINUTE),
                                end=ms_to_datetime(start - MINUTE), missing=5, state=GapState.FILLED)
    url = reverse("admin:candles_gap_changelist")

    response = staff_client.post(url, {"action": "fill_now",
                                       "_selected_action": [unfillable.pk, open_gap.pk, filled.pk]}, follow=True)

    assert messages_of(response) == ["Queued fills of 2 gap(s) (1 unfillable reopened; 1 already filled, skipped); "
                                     "watch their state here."]
    assert stored(start, end) == truth(sim, start, end)
    assert dict(Gap.objects.values_list("pk", "state")) == {
        unfillable.pk: GapState.FILLED, open_gap.pk: GapState.FILLED, filled.pk: GapState.FILLED}


def test_sync_from_okx_queues_the_instrument_sync(staff_client, keys, eager, sim):
    Instrument.objects.create(inst_id="GONE-USDT", inst_type="SPOT")
    # A stored type is synced too; OKX (here the simulator) listing none of it is a glitch, not delistings.
    Instrument.objects.create(inst_id="BTC-USD-250328", inst_type="FUTURES")
    url = reverse("admin:candles_instrument_sync")
    page = staff_client.get(reverse("admin:candles_instrument_changelist")).content.decode()
    assert f'action="{url}"' in page

    response = staff_client.post(url, follow=True)

    assert messages_of(response) == [
        "Queued a sync of SPOT, SWAP, FUTURES instruments from OKX; they appear here when it is done (see Flower)."]
    assert Instrument.objects.filter(inst_type="SPOT", delisted_at__isnull=True).count() == 4  # + REBASE-USDT
    assert Instrument.objects.filter(inst_type="SWAP", price="trade").count() == 4
    assert Instrument.objects.filter(inst_type="SWAP", price="mark").count() == 4  # their mark-price series
    assert Instrument.objects.get(inst_id="GONE-USDT").delisted_at is not None
    assert Instrument.objects.get(inst_id="BTC-USD-250328", price="trade").delisted_at is None
    assert staff_client.get(url).status_code == 405


# --- a broker that is down -----------------------------------------------------------------------------


def test_a_broker_that_is_down_is_an_error_within_seconds_not_a_hang():
    app = Celery("broker-down", broker=f"redis://127.0.0.1:{closed_port()}/0", set_as_current=False)
    app.conf.broker_connection_timeout = 1

    @app.task(name="broker_down.noop")
    def noop() -> None:
        pass

    started = time.monotonic()
    error = enqueue(noop)

    assert error is not None
    assert "refused" in error.lower()
    assert time.monotonic() - started < 5


def test_an_action_reports_a_refused_queue_and_changes_nothing(staff_client, keys, btc, monkeypatch):
    sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    # The broker's refusal as kombu surfaces it (the real thing is the test above); here: what the action does.
    monkeypatch.setattr(admin_tasks.backfill_range, "apply_async", refuse)
    now = datetime_to_ms(timezone.now())

    response = staff_client.post(reverse(CHANGELIST), {
        "action": "backfill_range", "_selected_action": [sub.pk], "apply": "yes",
        **range_form(now - 60 * MINUTE, now - 30 * MINUTE),
    }, follow=True)

    assert response.status_code == 200
    [message] = messages_of(response)
    assert message.startswith("Could not queue 1 task(s): ConnectionRefusedError")
    assert not Gap.objects.exists()
