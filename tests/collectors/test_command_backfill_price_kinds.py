"""`manage.py backfill --price mark|index`: a mark-price or index history, fetched from that kind's endpoints."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
import redis as redis_lib
from django.core.management import CommandError, call_command

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Instrument, Subscription
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.cli import iso

pytestmark = pytest.mark.django_db


@pytest.fixture
def okx(db, settings) -> Iterator[ThreadedSimulator]:
    """The simulator as OKX, with the rows of a spot pair, its index, and a swap's trades and mark."""
    prefix = f"test:cli-backfill-price:{uuid.uuid4().hex}:"
    settings.REDIS_KEY_PREFIX = prefix
    config = SimulatorConfig(seed=3, instruments=2, swaps=True, bars=("1m", "1s"), history_days=3)
    with run_in_thread(config, port=0) as sim:
        settings.OKX_REST_URL = sim.rest_url
        listed = ms_to_datetime(sim.simulator.market.list_time_ms)
        for inst_id, inst_type, price in (("BTC-USDT", "SPOT", "trade"), ("BTC-USDT", "INDEX", "index"),
                                          ("BTC-USDT-SWAP", "SWAP", "trade"), ("BTC-USDT-SWAP", "SWAP", "mark")):
            Instrument.objects.create(inst_id=inst_id, inst_type=inst_type, price=price, listed_at=listed)
        yield sim
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    stale = list(client.scan_iter(match=f"{prefix}*"))
    if stale:
        client.delete(*stale)
    client.close()


def run_backfill(*args: str) -> str:
    out = StringIO()
    call_command("backfill", *args, "--quiet", stdout=out, stderr=StringIO())
    return out.getvalue()


def stored(inst_id: str, price: str) -> list[list[str]]:
    rows = Candle.objects.filter(instrument__inst_id=inst_id, instrument__price=price, confirmed=True).order_by(
        "open_time").values_list("open_time", "open", "high", "low", "close", "vol")
    assert all(row[5] is None for row in rows)
    return [[str(datetime_to_ms(row[0])), *(str(value) for value in row[1:5])] for row in rows]


@pytest.mark.parametrize(("inst_id", "price"), [("BTC-USDT-SWAP", "mark"), ("BTC-USDT", "index")])
def test_a_mark_or_index_history_is_stored_exactly_as_its_endpoints_have_it(okx, inst_id, price):
    listed = ms_to_datetime(okx.simulator.market.list_time_ms)
    start, end = listed + timedelta(hours=2), listed + timedelta(hours=7) - timedelta(minutes=1)  # 300 minutes

    out = run_backfill(inst_id, "1m", "--price", price, "--from", iso(start), "--to", iso(end))

    truth = okx.simulator.market.truth_range(inst_id, "1m", datetime_to_ms(start), datetime_to_ms(end), price=price)
    assert len(truth) == 300
    assert stored(inst_id, price) == [row[:5] for row in truth]
    assert not Candle.objects.filter(instrument__price="trade").exists()  # the trade row of that id: untouched
    assert f"{inst_id} {price} 1m from {iso(start)}" in out
    assert Subscription.objects.get().instrument.price == price  # the work was recorded on that series


@pytest.mark.parametrize(("args", "message"), [
    (("BTC-USDT", "1m", "--price", "mark"), r"'BTC-USDT' has no mark series \(it has: index, trade\)"),
    (("BTC-USDT-SWAP", "1s", "--price", "mark"), r"OKX has no 1s mark candles"),
])
def test_it_refuses_a_series_okx_does_not_have(okx, args, message):
    with pytest.raises(CommandError, match=message):
        run_backfill(*args, "--from", "2024-01-01")
    assert not Subscription.objects.exists()
