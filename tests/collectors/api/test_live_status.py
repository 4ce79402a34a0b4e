"""The endpoints over a running collector: the real runtime collects from the OKX simulator over real sockets,
publishes its status and counters to Redis, the health task and a flush run, and the endpoints report it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connection
from django.test import override_settings

from candles.models import Instrument, Subscription, SubscriptionStatus, Timeframe
from collectors.live.flush import buffer_flush
from collectors.live.hosting import CollectorThread
from collectors.monitoring.health import health_check
from collectors.simulator import SimulatorConfig, run_in_thread
from tests.collectors.api.exposition import parse

# The collector's subscription loader runs in a thread of its own: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
COLLECTOR = "test-collector"


def wait_for(what: str, condition: Callable[[], object], timeout_s: float = 20.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def sim() -> Iterator:
    with run_in_thread(SimulatorConfig(seed=5, instruments=2, bars=("1s", "1m"), push_interval=0.2), port=0) as s:
        yield s


@pytest.fixture
def collector(sim, keys, monkeypatch) -> Iterator[CollectorThread]:
    # The loader's threads close their connections after each load, so none outlives the test database.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    btc = Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT")
    for bar in ("1s", "1m"):
        Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code=bar))
    with override_settings(OKX_WS_URL=sim.ws_url, COLLECTOR_RECONCILE_S=0.5, COLLECTOR_LEASE_TTL_S=3.0,
                           COLLECTOR_SHARDS=2):
        thread = CollectorThread(collector_id=COLLECTOR)
        thread.start()
        try:
            yield thread
        finally:
            thread.stop()


def test_a_running_collector_shows_in_status_health_and_metrics(client, sim, collector, r, keys):
    wait_for("a confirmed 1s candle", lambda: r.zscore(keys.channel_confirmed("1s"), "BTC-USDT"))
    sim.simulator.drop_connections()
    wait_for("a reconnect", lambda: int(r.hget(keys.collector(COLLECTOR), "reconnects") or 0) >= 1)
    wait_for("messages after the reconnect", lambda: sim.simulator.stats()["connections"] >= 1)
    time.sleep(1.5)  # a status write after the reconnect's first pushes

    health_check(redis=r, keys=keys)  # marks the subscriptions live and counts the reconnect
    assert set(Subscription.objects.values_list("status", flat=True)) == {SubscriptionStatus.LIVE}
    buffer_flush(redis=r, keys=keys)

    health = client.get("/api/v1/health")
    assert health.status_code == 200, health.json()

    def one_second_row() -> dict:
        body = client.get("/api/v1/status/BTC-USDT").json()
        return next(row for row in body["timeframes"] if row["timeframe"] == "1s")

    second = one_second_row()
    assert (second["status"], second["channel_state"], second["collector"]) == ("live", "subscribed", COLLECTOR)
    assert second["reconnects"] >= 1
    assert second["last_message_age_s"] < 2.0
    # 1s candles: each is confirmed about a second after it opens, and the status is written every second.
    # Polled, because a loaded machine delays the collector's thread by a few hundred ms at times; a channel
    # whose confirms stopped never gets there.
    second = wait_for("a confirmed 1s candle under 2.5 s old", lambda: (row := one_second_row())["lag_s"] < 2.5
                      and row, timeout_s=10.0)
    assert second["lag_s"] < 2.5

    status = client.get("/api/v1/status").json()
    assert status["status"] == "healthy"
    assert [(c["id"], c["alive"]) for c in status["collectors"]] == [(COLLECTOR, True)]
    assert status["pipeline"]["counters"]["messages"] > 0

    collector.stop()  # its last counters are written on the way out; nothing moves after this
    counters = {k.decode(): int(v) for k, v in r.hgetall(keys.counters).items()}
    families = parse(client.get("/api/v1/metrics").content.decode())

    def total(name: str) -> float:
        return families[name].value()

    assert total("okx_candles_messages_received_total") == counters["messages"] > 0
    assert total("okx_candles_buffer_writes_total") == counters["candle_updates"] > 0
    assert total("okx_candles_candles_flushed_total") == counters["candles_flushed"] > 0
    assert total("okx_candles_ws_reconnects_total") == counters["reconnects"] >= 1
    assert families["okx_candles_flush_duration_seconds"].value("_count") == counters["flush_runs"] == 1
    assert families["okx_candles_subscriptions"].value(status="live") == 2
