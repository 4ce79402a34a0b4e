"""The repair_candles task fills many gaps in one run, several at a time, each exactly once."""

from __future__ import annotations

import uuid

import pytest
import redis as redis_lib

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Gap, GapState, Instrument, Subscription, Timeframe
from collectors import tasks
from collectors.simulator import SimulatorConfig, run_in_thread

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
MINUTE = 60_000


def test_one_run_fills_every_due_gap_concurrently_and_exactly(settings):
    prefix = f"test:fill-gaps:{uuid.uuid4().hex}:"
    settings.REDIS_KEY_PREFIX = prefix
    config = SimulatorConfig(seed=11, instruments=3, bars=("1m",), history_days=2)
    with run_in_thread(config, port=0) as sim:
        settings.OKX_REST_URL = sim.rest_url
        market = sim.simulator.market
        listed = ms_to_datetime(market.list_time_ms)
        names = ("BTC-USDT", "ETH-USDT", "SOL-USDT")  # the simulator's first instruments
        one_minute = Timeframe.objects.get(code="1m")
        end_ms = market.list_time_ms + 20 * 60 * MINUTE
        gaps = []
        for name in names:
            sub = Subscription.objects.create(
                instrument=Instrument.objects.create(inst_id=name, inst_type="SPOT", listed_at=listed),
                timeframe=one_minute)
            for k in range(4):  # four separate holes per instrument: twelve gaps
                start = end_ms - (k + 1) * 60 * MINUTE
                gaps.append(Gap.objects.create(subscription=sub, start=ms_to_datetime(start),
                                               end=ms_to_datetime(start + 9 * MINUTE), missing=10))

        assert tasks.repair_candles.run() == 12 * 10  # candles written

        assert set(Gap.objects.values_list("state", flat=True)) == {GapState.FILLED}
        for gap in gaps:
            sub = gap.subscription
            rows = list(Candle.objects.filter(
                instrument_id=sub.instrument_id, timeframe_id=sub.timeframe_id,
                open_time__gte=gap.start, open_time__lte=gap.end).order_by("open_time").values_list(
                    "open_time", "open", "high", "low", "close", "vol", "confirmed"))
            truth = market.truth_range(sub.instrument.inst_id, "1m", datetime_to_ms(gap.start),
                                       datetime_to_ms(gap.end))
            assert [(datetime_to_ms(r[0]), *map(str, r[1:6]), r[6]) for r in rows] == [
                (int(t[0]), *t[1:6], True) for t in truth]
        assert tasks.repair_candles.run() == 0  # nothing is due any more
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    stale = list(client.scan_iter(match=f"{prefix}*"))
    if stale:
        client.delete(*stale)
