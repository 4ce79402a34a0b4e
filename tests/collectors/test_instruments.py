"""Instrument sync and `manage.py sync_instruments` against the OKX simulator over real sockets."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from candles.bars import ms_to_datetime
from candles.models import Instrument, Subscription
from collectors.instruments import SyncResult, instruments_sync
from collectors.okx.rest import OkxRestClient
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
# Five majors plus the simulator's REBASE-USDT (state `rebase`), each as SPOT and as SWAP.
SPOT_IDS = ["BTC-USDT", "DOGE-USDT", "ETH-USDT", "REBASE-USDT", "SOL-USDT", "XRP-USDT"]
SWAP_IDS = [f"{inst_id}-SWAP" for inst_id in SPOT_IDS]


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with run_in_thread(SimulatorConfig(seed=1, instruments=5, swaps=True, history_days=3), port=0) as handle:
        yield handle


def trade_rows():
    """The instruments' own rows (each derivative also has its mark-price row)."""
    return Instrument.objects.filter(price="trade")


def sync(sim: ThreadedSimulator, *inst_types: str) -> SyncResult:
    return instruments_sync(inst_types=list(inst_types or ("SPOT", "SWAP")), client=OkxRestClient(sim.rest_url))


def command(sim_url: str, *args: str) -> str:
    out = io.StringIO()
    with override_settings(OKX_REST_URL=sim_url):
        call_command("sync_instruments", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_first_sync_creates_every_listed_instrument(sim):
    assert sync(sim) == SyncResult(created=12, updated=0, delisted=0, unchanged=0)
    assert list(trade_rows().values_list("inst_id", flat=True)) == sorted(SPOT_IDS + SWAP_IDS)


@pytest.mark.django_db
def test_fields_are_mapped_exactly(sim):
    sync(sim)
    btc = trade_rows().get(inst_id="BTC-USDT")
    listed = sim.simulator.market.instrument("BTC-USDT")
    assert (btc.inst_type, btc.base_ccy, btc.quote_ccy, btc.settle_ccy, btc.inst_family, btc.state) == (
        "SPOT", "BTC", "USDT", "", "", "live"
    )
    assert str(btc.tick_size) == "0.1"
    assert btc.lot_size == Decimal("0.00000001")
    assert btc.listed_at == ms_to_datetime(listed.list_time_ms)
    assert btc.listed_at.utcoffset().total_seconds() == 0
    assert btc.expires_at is None
    assert btc.delisted_at is None
    swap = trade_rows().get(inst_id="BTC-USDT-SWAP")
    assert (swap.inst_type, swap.settle_ccy, swap.inst_family, str(swap.lot_size)) == (
        "SWAP", "USDT", "BTC-USDT", "0.01"
    )


@pytest.mark.django_db
def test_an_unknown_state_is_stored_verbatim(sim):
    sync(sim)
    assert trade_rows().get(inst_id="REBASE-USDT").state == "rebase"


@pytest.mark.django_db
def test_a_second_sync_changes_nothing(sim):
    sync(sim)
    before = list(Instrument.objects.values())
    assert sync(sim) == SyncResult(created=0, updated=0, delisted=0, unchanged=12)
    assert list(Instrument.objects.values()) == before


@pytest.mark.django_db
def test_changed_fields_are_updated_even_when_only_the_decimal_scale_differs(sim):
    sync(sim)
    Instrument.objects.filter(inst_id="BTC-USDT").update(tick_size=Decimal("0.10"), state="suspend")
    Instrument.objects.filter(inst_id="ETH-USDT-SWAP").update(inst_family="")
    assert sync(sim) == SyncResult(created=0, updated=2, delisted=0, unchanged=10)
    btc = trade_rows().get(inst_id="BTC-USDT")
    assert (str(btc.tick_size), btc.state) == ("0.1", "live")
    assert trade_rows().get(inst_id="ETH-USDT-SWAP").inst_family == "ETH-USDT"


@pytest.mark.django_db
def test_instruments_gone_from_a_synced_type_are_marked_delisted_once(sim, instrument):
    instrument("GONE-USDT", inst_type="SPOT")
    instrument("GONE-USDT-SWAP", inst_type="SWAP")
    futures = instrument("BTC-USD-261225", inst_type="FUTURES")
    assert sync(sim) == SyncResult(created=12, updated=0, delisted=2, unchanged=0)
    gone = trade_rows().get(inst_id="GONE-USDT")
    assert gone.delisted_at is not None
    # A type that was not synced says nothing about its instruments.
    futures.refresh_from_db()
    assert futures.delisted_at is None
    assert sync(sim).delisted == 0
    assert trade_rows().get(inst_id="GONE-USDT").delisted_at == gone.delisted_at


@pytest.mark.django_db
def test_syncing_one_type_leaves_the_others_alone(sim, instrument):
    instrument("GONE-USDT-SWAP", inst_type="SWAP")
    assert sync(sim, "SPOT") == SyncResult(created=6, updated=0, delisted=0, unchanged=0)
    assert trade_rows().get(inst_id="GONE-USDT-SWAP").delisted_at is None


@pytest.mark.django_db
def test_an_instrument_that_comes_back_is_undelisted(sim):
    sync(sim)
    Instrument.objects.filter(inst_id="SOL-USDT").update(delisted_at=ms_to_datetime(0))
    assert sync(sim) == SyncResult(created=0, updated=1, delisted=0, unchanged=11)
    assert trade_rows().get(inst_id="SOL-USDT").delisted_at is None


@pytest.mark.django_db
def test_a_failed_fetch_writes_nothing():
    client = OkxRestClient(f"http://127.0.0.1:{free_port()}", max_retries=0)
    with pytest.raises(Exception, match="ConnectError"):
        instruments_sync(inst_types=["SPOT"], client=client)
    assert not Instrument.objects.exists()


# --- the command -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_syncs_spot_swap_and_futures_by_default_and_prints_a_summary(sim):
    output = command(sim.rest_url)
    assert f"syncing SPOT, SWAP, FUTURES instruments from {sim.rest_url}" in output
    assert "SPOT: 6 listed" in output
    assert "SWAP: 6 listed" in output
    assert "FUTURES: 0 listed" in output  # the simulator lists none
    assert "instruments: 12 created, 0 updated, 0 delisted, 0 unchanged" in output
    assert "subscriptions: 0 created" in output
    assert trade_rows().count() == 12


@pytest.mark.django_db
def test_the_command_syncs_only_the_types_asked_for(sim):
    output = command(sim.rest_url, "--type", "SWAP")
    assert "SPOT" not in output
    assert sorted(trade_rows().values_list("inst_id", flat=True)) == SWAP_IDS


@pytest.mark.django_db
def test_the_command_is_idempotent(sim):
    command(sim.rest_url)
    assert "instruments: 0 created, 0 updated, 0 delisted, 12 unchanged" in command(sim.rest_url)


@pytest.mark.django_db
def test_if_empty_does_nothing_when_instruments_are_stored(sim, instrument):
    instrument("BTC-USDT")
    output = command(sim.rest_url, "--if-empty")
    assert "1 instruments already stored; nothing to do" in output
    assert sim.simulator.stats()["rest_requests"] == 0
    assert trade_rows().count() == 1


@pytest.mark.django_db
def test_if_empty_syncs_an_empty_table(sim):
    assert "12 created" in command(sim.rest_url, "--if-empty")


@pytest.mark.django_db
def test_an_unreachable_url_is_a_clear_command_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match=f"instrument sync from {url} failed: .*ConnectError"):
        command(url, "--retries", "0")


@pytest.mark.django_db
def test_an_answer_that_is_not_okx_is_a_clear_command_error(sim):
    with pytest.raises(CommandError, match="failed: OKX REST error 404"):
        command(sim.rest_url + "/nowhere")


def test_a_failing_sync_exits_non_zero_with_the_reason_on_stderr():
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "manage.py", "sync_instruments", "--retries", "1"], cwd=ROOT,
        env={**os.environ, "OKX_REST_URL": url}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert f"instrument sync from {url} failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db
def test_every_derivative_gets_its_mark_price_series_mirroring_its_fields(sim):
    sync(sim)
    marks = Instrument.objects.filter(price="mark")
    assert sorted(marks.values_list("inst_id", flat=True)) == SWAP_IDS
    swap, mark = trade_rows().get(inst_id="ETH-USDT-SWAP"), marks.get(inst_id="ETH-USDT-SWAP")
    fields = ("inst_type", "settle_ccy", "inst_family", "state", "tick_size", "listed_at", "expires_at")
    assert [getattr(mark, f) for f in fields] == [getattr(swap, f) for f in fields]
    before = list(marks.order_by("id").values())
    sync(sim)
    assert list(marks.order_by("id").values()) == before  # nothing changed, nothing written
    trade_rows().filter(inst_id="ETH-USDT-SWAP").update(state="suspend")
    sync(sim, "SPOT")  # the next sync of any type brings the mark rows in step
    assert marks.get(inst_id="ETH-USDT-SWAP").state == "suspend"


@pytest.mark.django_db
def test_indices_come_from_okx_s_index_list_as_instruments_of_their_own_kind(sim):
    from collectors.instruments import IndexSyncResult, indices_apply, indices_sync

    sync(sim)
    listed = set(sim.simulator.market.indices)
    result = indices_sync(client=OkxRestClient(sim.rest_url))
    assert result == IndexSyncResult(created=len(listed))
    indices = Instrument.objects.filter(price="index")
    assert set(indices.values_list("inst_id", flat=True)) == listed
    assert set(indices.values_list("inst_type", flat=True)) == {"INDEX"}
    # BTC-USDT is a spot pair and an index: two rows, two series.
    assert "BTC-USDT" in listed
    assert sorted(Instrument.objects.filter(inst_id="BTC-USDT").values_list("inst_type", "price")) == [
        ("INDEX", "index"), ("SPOT", "trade")]
    assert indices_sync(client=OkxRestClient(sim.rest_url)) == IndexSyncResult(unchanged=len(listed))
    gone = sorted(listed)[0]
    result = indices_apply(listed={name: "USDT" for name in listed - {gone}})
    assert (result.delisted, indices.get(inst_id=gone).delisted_at is not None) == (1, True)
    assert indices_sync(client=OkxRestClient(sim.rest_url)).relisted == 1


@pytest.mark.django_db
def test_an_index_rule_follows_the_index_list_at_once():
    from candles.rules import rule_create
    from collectors.instruments import indices_apply

    rule_create(name="usd indices", price="index", quote_ccy="USD", bars=["1m"])
    created = indices_apply(listed={"BTC-USD": "USD", "ETH-USD": "USD", "BTC-USDT": "USDT"})
    assert created.subscriptions.created == 2
    gone = indices_apply(listed={"BTC-USD": "USD", "BTC-USDT": "USDT"})

    assert (gone.delisted, gone.subscriptions.finished) == (1, 1)
    assert set(Subscription.objects.values_list("instrument__inst_id", "instrument__price", "is_active")) == {
        ("BTC-USD", "index", True), ("ETH-USD", "index", False)}
