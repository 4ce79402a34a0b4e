"""Mark-price and index series are collected like trade ones, and never share anything with the trade series of
the same id and bar: their channel tracks, status rows and indexes, health, and the rows they land in.

The end-to-end test runs the collector runtime (in its thread, as a Celery worker hosts it) against the simulator
over real sockets, then the flush, and reads PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aredis
from django.conf import settings
from django.db import connection

from candles.models import Instrument, PriceKind, Subscription, SubscriptionStatus, Timeframe
from collectors.instruments import instruments_refresh
from collectors.live.hosting import CollectorThread, load_subscription_snapshot
from collectors.live.ingest import Ingest
from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
from collectors.monitoring.health import health_check
from collectors.monitoring.status import channel_statuses
from collectors.okx.candle_rows import CandleText
from collectors.okx.protocol import Channel
from collectors.simulator import SimulatorConfig, run_in_thread
from okxproject.keys import Keys

MINUTE_MS = 60_000
T0_MS = 1_705_431_600_000  # on a minute boundary
TRADE = Channel("BTC-USDT-SWAP", "1m")
MARK = Channel("BTC-USDT-SWAP", "1m", "mark")
INDEX = Channel("BTC-USDT", "1m", "index")
SPOT = Channel("BTC-USDT", "1m")


def candle(channel: Channel, open_ms: int, confirmed: bool, *, high: str = "110") -> CandleText:
    if channel.price == "trade":
        return CandleText(channel.inst_id, channel.bar, open_ms, "100", high, "90", "105", "1.5", "157.5", "157.5",
                          confirmed)
    return CandleText(channel.inst_id, channel.bar, open_ms, "100", high, "90", "105", None, None, None, confirmed,
                      channel.price)


@pytest.fixture
def specs(db) -> dict:
    return {tf.code: tf.spec for tf in Timeframe.objects.filter(code__in=["1m", "1H"])}


def test_ingest_keeps_a_track_per_kind_and_names_the_kind_in_a_dead_letter(keys: Keys, specs):
    ingest = Ingest(keys, specs, clock_us=lambda: (T0_MS + 2 * MINUTE_MS) * 1000)
    ingest.accept(candle(TRADE, T0_MS, True), "")
    ingest.accept(candle(MARK, T0_MS + MINUTE_MS, False), "")
    ingest.accept(candle(INDEX, T0_MS, True), "")
    ingest.accept(candle(MARK, T0_MS, False, high="50"), "raw mark frame")  # high below open: refused

    assert set(ingest.channels) == {TRADE, MARK, INDEX}
    assert (ingest.channels[TRADE].last_confirmed_open, ingest.channels[MARK].last_confirmed_open) == (T0_MS, None)
    assert ingest.channels[MARK].open_ms == T0_MS + MINUTE_MS
    assert SPOT not in ingest.channels  # the index of the same name is not the spot pair
    # Three buffer entries, one per series: the field names the kind.
    assert set(ingest.pending) == {f"BTC-USDT-SWAP|1m|{T0_MS}", f"BTC-USDT-SWAP|mark:1m|{T0_MS + MINUTE_MS}",
                                   f"BTC-USDT|index:1m|{T0_MS}"}
    assert b'"channel":"BTC-USDT-SWAP|mark:1m"' in ingest.dead[0]


def run(keys: Keys, specs: dict, channels: list[Channel], accepted: list[CandleText]) -> None:
    """A runtime that is not running (no connection opens): the channels subscribed, acknowledged and fed
    `accepted`, then one status tick."""

    async def main() -> None:
        config = RuntimeConfig(ws_url="ws://127.0.0.1:9/unused", keys=keys, collector_id="kinds-test", shards=1)
        runtime = CollectorRuntime(config, redis_factory=lambda: None,
                                   load_snapshot=lambda: SubscriptionSnapshot(frozenset(), {}))
        runtime.ingest.specs = specs
        runtime.ingest.clock_us = lambda: int(time.time() * 1_000_000)
        runtime.redis = aredis.Redis.from_url(settings.REDIS_URL)
        try:
            runtime.snapshot = SubscriptionSnapshot(frozenset(channels), {})
            runtime.owned = {0}
            runtime._collect_owned()
            for channel in channels:
                runtime.client.handler.on_subscribed(channel)
            for update in accepted:
                runtime.ingest.accept(update, "")
            await runtime._publish_status()
        finally:
            await runtime.redis.aclose()

    asyncio.run(main())


def test_each_kind_has_its_own_status_row_and_indexes(keys: Keys, redis, specs):
    now_ms = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    run(keys, specs, [TRADE, MARK, INDEX, SPOT],
        [candle(TRADE, now_ms - MINUTE_MS, True), candle(MARK, now_ms - 2 * MINUTE_MS, True),
         candle(INDEX, now_ms, False)])

    statuses = channel_statuses(redis, keys)
    assert set(statuses) == {("BTC-USDT-SWAP", "1m"), ("BTC-USDT-SWAP", "mark:1m"), ("BTC-USDT", "index:1m"),
                             ("BTC-USDT", "1m")}
    mark = statuses[("BTC-USDT-SWAP", "mark:1m")]
    assert (mark.timeframe, mark.price, mark.state) == ("1m", "mark", "subscribed")
    assert mark.last_confirmed_open == now_ms - 2 * MINUTE_MS
    assert statuses[("BTC-USDT-SWAP", "1m")].last_confirmed_open == now_ms - MINUTE_MS
    assert statuses[("BTC-USDT", "index:1m")].last_message_at is not None
    assert statuses[("BTC-USDT", "1m")].last_message_at is None  # the spot pair had no message
    assert redis.zrange(keys.channel_seen("1m"), 0, -1) == [b"BTC-USDT-SWAP"]
    assert redis.zrange(keys.channel_seen("mark:1m"), 0, -1) == [b"BTC-USDT-SWAP"]
    assert redis.zrange(keys.channel_seen("index:1m"), 0, -1) == [b"BTC-USDT"]


@pytest.mark.django_db
def test_health_sets_a_mark_subscription_from_its_own_channel(keys: Keys, redis, specs, instrument):
    swap = instrument("BTC-USDT-SWAP", inst_type="SWAP")
    mark = instrument("BTC-USDT-SWAP", inst_type="SWAP", price=PriceKind.MARK)
    minute = Timeframe.objects.get(code="1m")
    trade_sub = Subscription.objects.create(instrument=swap, timeframe=minute)
    mark_sub = Subscription.objects.create(instrument=mark, timeframe=minute)
    now_ms = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    run(keys, specs, [TRADE, MARK], [candle(MARK, now_ms, False)])

    health_check(redis=redis, keys=keys)

    trade_sub.refresh_from_db()
    mark_sub.refresh_from_db()
    assert mark_sub.status == SubscriptionStatus.LIVE
    assert trade_sub.status == SubscriptionStatus.PENDING  # its channel had no message: the mark's is not its


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_snapshot_carries_each_subscriptions_kind(instrument):
    swap = instrument("BTC-USDT-SWAP", inst_type="SWAP")
    mark = instrument("BTC-USDT-SWAP", inst_type="SWAP", price=PriceKind.MARK)
    index = instrument("BTC-USDT", inst_type="INDEX", price=PriceKind.INDEX)
    for row, bar in [(swap, "1m"), (mark, "1m"), (mark, "1H"), (index, "1m")]:
        Subscription.objects.create(instrument=row, timeframe=Timeframe.objects.get(code=bar))

    # In a thread of its own, as the runtime calls it (it closes that thread's connection when done).
    with ThreadPoolExecutor(1) as pool:
        snapshot = pool.submit(load_subscription_snapshot).result()

    assert snapshot.channels == {TRADE, MARK, Channel("BTC-USDT-SWAP", "1H", "mark"), INDEX}
    assert {channel.name for channel in snapshot.channels} == {"candle1m", "mark-price-candle1m",
                                                               "mark-price-candle1H", "index-candle1m"}


def _stored(inst_id: str, price: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (extract(epoch FROM c.open_time) * 1000)::bigint, c.open::text, c.vol::text, c.confirmed "
            "FROM candles_candle c JOIN candles_instrument i ON i.id = c.instrument_id "
            "JOIN candles_timeframe t ON t.id = c.timeframe_id WHERE i.inst_id = %s AND i.price = %s AND t.code = '1m' "
            "ORDER BY c.open_time", [inst_id, price])
        return cursor.fetchall()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_mark_and_index_candles_flow_from_the_simulator_to_their_own_rows(keys: Keys, redis, settings):
    from collectors.live.flush import buffer_flush

    with run_in_thread(SimulatorConfig(instruments=2, swaps=True, bars=("1m",), push_interval=0.2)) as sim:
        settings.OKX_WS_URL, settings.OKX_REST_URL = sim.ws_url, sim.rest_url
        settings.COLLECTOR_SHARDS, settings.COLLECTOR_RECONCILE_S = 1, 0.5
        instruments_refresh(inst_types=["SPOT", "SWAP"])
        minute = Timeframe.objects.get(code="1m")
        series = [("BTC-USDT-SWAP", PriceKind.TRADE), ("BTC-USDT-SWAP", PriceKind.MARK),
                  ("BTC-USDT", PriceKind.INDEX), ("BTC-USDT", PriceKind.TRADE)]
        for inst_id, price in series:
            Subscription.objects.create(instrument=Instrument.objects.get(inst_id=inst_id, price=price),
                                        timeframe=minute)
        thread = CollectorThread("kinds-e2e")
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and redis.hlen(keys.live) < len(series):
                time.sleep(0.2)
        finally:
            thread.stop()
        assert redis.hlen(keys.live) >= len(series), "the collector wrote too few buffer entries"
        buffer_flush(redis=redis, keys=keys)
        market = sim.simulator.market

        opens = {}
        for inst_id, price in series:
            rows = _stored(inst_id, price)
            assert rows, f"no {price} candle of {inst_id}"
            open_ms, open_price, vol, _ = rows[-1]
            # The open of a candle is fixed from its first push: the stored one is the simulator's own.
            assert open_price == market.current(inst_id, "1m", open_ms + 1, price)[1]
            assert (vol is None) == (price != PriceKind.TRADE)
            opens[inst_id, price] = open_price
    # Each row holds its own kind's prices (the mark carries a basis over the swap's trades). The simulator's
    # index is the smooth spot price, whose open may equal the spot pair's: the rows above are told apart by kind.
    assert opens["BTC-USDT-SWAP", "mark"] != opens["BTC-USDT-SWAP", "trade"]
