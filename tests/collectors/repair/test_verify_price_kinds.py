"""Re-verifying a mark-price series: its own endpoint and row, no volumes, the swap's trades untouched."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Instrument
from candles.storage import CandleRow, candles_upsert
from collectors.okx.rest_endpoints import CANDLE_BUDGETS
from collectors.repair.verify import NotVerifiable, candles_verify
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.keys import Keys
from tests.support import isolated_keys

pytestmark = pytest.mark.django_db
MINUTE = 60_000
SWAP = "ETH-USDT-SWAP"


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    config = SimulatorConfig(seed=7, instruments=2, swaps=True, bars=("1m",), history_days=2)
    with run_in_thread(config, port=0) as handle:
        yield handle


@pytest.fixture
def keys(redis) -> Iterator[Keys]:
    with isolated_keys(redis) as keys:
        yield keys


@pytest.fixture
def swap(sim) -> dict[str, Instrument]:
    listed = ms_to_datetime(sim.simulator.market.list_time_ms)
    return {price: Instrument.objects.create(inst_id=SWAP, inst_type="SWAP", price=price, listed_at=listed)
            for price in ("trade", "mark")}


def mark_row(t: list[str], **changes) -> CandleRow:
    fields = dict(zip(("open", "high", "low", "close"), t[1:5], strict=True)) | changes
    return CandleRow(SWAP, "1m", int(t[0]), *fields.values(), None, None, None, True, "ws", 1, "mark")


def stored_marks(instrument: Instrument) -> list[list[str]]:
    rows = Candle.objects.filter(instrument=instrument).order_by("open_time").values_list(
        "open_time", "open", "high", "low", "close", "vol", "confirmed")
    assert all(r[5] is None and r[6] for r in rows)
    return [[str(datetime_to_ms(r[0])), *(str(v) for v in r[1:5])] for r in rows]


def test_a_mark_series_is_verified_against_the_mark_endpoint_and_rewritten_without_volumes(
        sim, redis, keys, swap):
    end = (datetime_to_ms(timezone.now()) // MINUTE - 5) * MINUTE
    start = end - 29 * MINUTE
    truth = [row[:5] for row in sim.simulator.market.truth_range(SWAP, "1m", start, end, price="mark")]
    rows = [mark_row(t) for t in truth]
    wrong = truth[4]
    rows[4] = mark_row(wrong, close=wrong[3] if Decimal(wrong[3]) != Decimal(wrong[4]) else wrong[2])
    del rows[10]
    candles_upsert(rows=rows)

    report = candles_verify(inst_id=SWAP, bar="1m", start=ms_to_datetime(start), end=ms_to_datetime(end),
                            rest_url=sim.rest_url, keys=keys, price="mark")

    assert (report.price, report.checked, report.matching, report.missing, report.different) == ("mark", 30, 28, 1, 1)
    assert report.written == 2
    assert stored_marks(swap["mark"]) == truth
    assert not Candle.objects.filter(instrument=swap["trade"]).exists()
    assert redis.exists(f"{keys.prefix}ratelimit:{CANDLE_BUDGETS['mark-price-candles'].budget}")
    assert not redis.exists(f"{keys.prefix}ratelimit:{CANDLE_BUDGETS['candles'].budget}")
    assert str(report).startswith(f"{SWAP} mark 1m ")


def test_1s_of_a_mark_series_is_not_verifiable(sim, keys, swap):
    now = timezone.now()
    with pytest.raises(NotVerifiable, match="no 1s mark candles"):
        candles_verify(inst_id=SWAP, bar="1s", start=now, end=now, rest_url=sim.rest_url, keys=keys, price="mark")
