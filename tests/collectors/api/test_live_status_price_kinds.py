"""Mark-price and index series in the status endpoints and the metrics, over a running collector: the real runtime
collects them from the OKX simulator over real sockets, and each shows as its own row, beside the trade series of
the same id."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import override_settings

from candles.models import Instrument, PriceKind, Subscription, SubscriptionStatus, Timeframe
from collectors.live.hosting import CollectorThread
from collectors.monitoring.health import health_check
from collectors.simulator import SimulatorConfig, run_in_thread
from tests.collectors.api.exposition import parse
from tests.collectors.api.test_live_status import wait_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
COLLECTOR = "kinds-collector"


@pytest.fixture
def collector(keys, monkeypatch) -> Iterator[CollectorThread]:
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    swap = Instrument.objects.create(inst_id="BTC-USDT-SWAP", inst_type="SWAP")
    mark = Instrument.objects.create(inst_id="BTC-USDT-SWAP", inst_type="SWAP", price=PriceKind.MARK)
    index = Instrument.objects.create(inst_id="BTC-USDT", inst_type="INDEX", price=PriceKind.INDEX)
    minute = Timeframe.objects.get(code="1m")
    for row in (swap, mark, index):
        Subscription.objects.create(instrument=row, timeframe=minute)
    config = SimulatorConfig(seed=5, instruments=1, swaps=True, bars=("1m",), push_interval=0.2)
    with run_in_thread(config, port=0) as sim, override_settings(
            OKX_WS_URL=sim.ws_url, COLLECTOR_RECONCILE_S=0.5, COLLECTOR_LEASE_TTL_S=3.0, COLLECTOR_SHARDS=2):
        thread = CollectorThread(collector_id=COLLECTOR)
        thread.start()
        try:
            yield thread
        finally:
            thread.stop()


def test_each_kind_is_a_row_of_its_own_in_status_and_metrics(client, collector, r, keys):
    for part, inst_id in (("1m", "BTC-USDT-SWAP"), ("mark:1m", "BTC-USDT-SWAP"), ("index:1m", "BTC-USDT")):
        wait_for(f"a message of {inst_id} {part}", lambda p=part, i=inst_id: r.zscore(keys.channel_seen(p), i))

    health_check(redis=r, keys=keys)
    assert set(Subscription.objects.values_list("status", flat=True)) == {SubscriptionStatus.LIVE}

    swap = client.get("/api/v1/status/BTC-USDT-SWAP").json()
    assert swap["inst_type"] == "SWAP"
    rows = {(row["timeframe"], row["price"]): row for row in swap["timeframes"]}
    assert set(rows) == {("1m", "trade"), ("1m", "mark")}
    for row in rows.values():
        assert (row["status"], row["channel_state"], row["collector"]) == ("live", "subscribed", COLLECTOR)
    # BTC-USDT is only an index here: the endpoint describes it by its index row.
    index = client.get("/api/v1/status/BTC-USDT").json()
    assert index["inst_type"] == "INDEX"
    assert [(row["timeframe"], row["price"], row["status"]) for row in index["timeframes"]] == [
        ("1m", "index", "live")]

    listed = client.get("/api/v1/status/subscriptions").json()
    assert {(row["symbol"], row["price"]) for row in listed["results"]} == {
        ("BTC-USDT-SWAP", "trade"), ("BTC-USDT-SWAP", "mark"), ("BTC-USDT", "index")}

    channels = parse(client.get("/api/v1/metrics").content.decode())["okx_candles_channels"]
    for price in ("trade", "mark", "index"):
        assert channels.value(timeframe="1m", state="fresh", price=price) == 1
