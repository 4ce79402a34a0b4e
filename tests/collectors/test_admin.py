"""The operators' admin pages over a real database and a real Redis: the dashboard on the index, subscription
status and figures, subscribing many at once, dead letters; a non-staff user gets nothing; a Redis outage is a
notice, never an error page. (Actions that queue Celery work are in test_admin_actions.py.)"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import timedelta

import orjson
import pytest
import redis as redis_lib
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from candles import admin_bulk
from candles.admin_figures import subscription_figures
from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Gap, GapState, Instrument, Subscription, SubscriptionStatus, Timeframe
from collectors import admin_dashboard
from collectors.live.buffer import dead_letter_record, decode_entry
from collectors.live.deadletters import record_id
from collectors.live.flush import buffer_flush
from collectors.okx.ratelimit import RedisRateLimiter
from collectors.okx.rest_endpoints import CANDLES
from okxproject.keys import Keys
from tests.support import T0_MS, LiveBuffer, candle_update
from tests.support.channel_status import put_channel
from tests.support.private_services import private_redis

pytestmark = pytest.mark.django_db

MINUTE = 60_000


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def redis_down(settings) -> Iterator[str]:
    """REDIS_URL points at a Redis of our own that has been stopped."""
    with private_redis() as server:
        server.stop()
        settings.REDIS_URL = server.url
        yield server.url


def subscribe(instrument: Instrument, bar: str, **fields) -> Subscription:
    return Subscription.objects.create(instrument=instrument, timeframe=Timeframe.objects.get(code=bar), **fields)


def put_collector(redis, keys: Keys, collector_id: str, heartbeat_at: float, shards: list[int]) -> None:
    """A collector's heartbeat and status hash as the collector runtime writes them."""
    redis.zadd(keys.collectors, {collector_id: heartbeat_at})
    redis.hset(keys.collector(collector_id), mapping={
        "id": collector_id, "host": "host-a", "pid": "4242", "started_at": str(heartbeat_at - 100),
        "shards": orjson.dumps(shards),
        "connections": orjson.dumps([{
            "shard": shards[0], "state": "open", "conn_id": "abc", "channels": 3, "subscribed": 3,
            "messages": 120, "reconnects": 1, "errors": 0, "last_message_at": heartbeat_at, "detail": None,
        }]),
        "messages": "120", "reconnects": "1", "errors": "0", "channels": "3",
    })


def text(response) -> str:
    return response.content.decode()


def tile(response, tile_id: str) -> str:
    """The text of one dashboard tile, tags stripped and spaces collapsed."""
    match = re.search(rf'id="{tile_id}">(.*?)</div>', text(response), re.S)
    assert match, f"no tile {tile_id}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


# --- the dashboard on the admin index --------------------------------------------------------------------


def test_the_index_shows_collectors_buffer_flush_dead_letters_rest_budget_and_gaps(staff_client, redis, keys, btc):
    now = time.time()
    put_collector(redis, keys, "host-a:1", now - 1, [0, 1])
    put_collector(redis, keys, "host-b:2", now - 600, [2])  # heartbeat stopped
    for bar, state in (("1m", "subscribed"), ("1H", "subscribed"), ("7m", "invalid")):
        put_channel(redis, keys, "BTC-USDT", bar, state=state, last_message_at=now - 1)
    buffer = LiveBuffer(redis, keys)
    buffer.put_many([(candle_update(T0_MS + i * MINUTE), 1) for i in range(2)])
    assert buffer_flush(redis=redis, keys=keys).written == 2  # the real flush records its run
    buffer.put_many([(candle_update(T0_MS + i * MINUTE, close="106"), 2) for i in range(3, 6)])
    redis.lpush(keys.dead_letters, dead_letter_record("frame is not JSON", "{"))
    limiter = RedisRateLimiter(redis_lib.asyncio.Redis.from_url(settings.REDIS_URL), prefix=keys.prefix + "ratelimit:")

    async def three_requests() -> None:
        for _ in range(3):
            await limiter.acquire(CANDLES.path, CANDLES.limit, CANDLES.period_s)

    asyncio.run(three_requests())
    sub = subscribe(btc, "1m")
    Gap.objects.create(subscription=sub, start=ms_to_datetime(T0_MS), end=ms_to_datetime(T0_MS + 4 * MINUTE),
                       missing=5)
    Gap.objects.create(subscription=sub, start=ms_to_datetime(T0_MS - MINUTE), end=ms_to_datetime(T0_MS - MINUTE),
                       missing=1, state=GapState.UNFILLABLE)

    response = staff_client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert tile(response, "tile-collectors") == "1 / 2 collectors alive"
    # Counted from the alive collectors' connections (3 of 3 subscribed on host-a:1), not from every channel's
    # status; refused channels are the subscriptions the health task marked "error" (none here).
    assert tile(response, "tile-channels") == "3 channels subscribed"
    assert tile(response, "tile-buffer") == "3 in the buffer (3 live, 0 being flushed)"
    assert tile(response, "tile-flush").startswith("2 written by the last flush; last flush ")
    assert tile(response, "tile-dead-letters") == "1 dead letters"
    assert tile(response, "tile-gaps") == "1 open gaps (5 candles), 1 unfillable"
    assert "host-a:1" in text(response)
    assert "#0 open: 3/3 channels" in text(response)
    assert re.search(r"<td>candles</td>\s*<td>3 / 40 per 2 s</td>", text(response))
    assert reverse("admin:pipeline_dead_letters") in text(response)
    # The app list is still there below.
    assert reverse("admin:candles_subscription_changelist") in text(response)


def test_with_a_hot_standby_the_dashboard_shows_each_shard_s_primary_standby_and_hosts(
    staff_client, redis, keys, settings
):
    settings.COLLECTOR_REPLICAS, settings.COLLECTOR_SHARDS = 2, 2
    now = time.time()
    put_collector(redis, keys, "c-a", now, [0, 1])
    for shard, slot, collector_id in [(0, 0, "c-a"), (0, 1, "c-b"), (1, 0, "c-a")]:
        redis.set(keys.lease(shard, slot), collector_id, px=60_000)
    redis.hset(keys.lease_hosts, mapping={"c-a": "host-a", "c-b": "host-b"})

    response = staff_client.get(reverse("admin:index"))

    module = re.search(r'id="shards">(.*?)</table>', text(response), re.S)
    assert module, "no shards table"
    rows = [" ".join(re.sub(r"<[^>]+>", " ", row).split())
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", module.group(1), re.S)]
    assert rows == ["shard primary standby", "0 c-a on host-a c-b on host-b", "1 short c-a on host-a –"]
    assert "1 short of a replica" in module.group(1)
    assert re.search(r"c-a</td>\s*<td>host-a</td>", text(response))  # the collectors table names the host


def test_with_one_replica_the_dashboard_has_no_shards_table(staff_client, redis, keys):
    put_collector(redis, keys, "c-a", time.time(), [0])

    assert 'id="shards"' not in text(staff_client.get(reverse("admin:index")))


def test_the_flush_rate_is_the_counter_growth_since_an_earlier_view(staff_client, redis, keys, btc):
    LiveBuffer(redis, keys).put_many([(candle_update(T0_MS + i * MINUTE), 1) for i in range(4)])
    buffer_flush(redis=redis, keys=keys)
    admin_dashboard.FLUSH_SAMPLES[keys.prefix] = (time.time() - 8, 0)  # an earlier view's sample

    response = staff_client.get(reverse("admin:index"))

    assert re.fullmatch(r"0\.5/s candles flushed, last 8 s; last flush \d+ s ago", tile(response, "tile-flush"))


def test_the_dashboard_reads_redis_and_never_writes_it(staff_client, redis, keys, btc):
    LiveBuffer(redis, keys).put_many([(candle_update(T0_MS + i * MINUTE), 1) for i in range(4)])
    buffer_flush(redis=redis, keys=keys)
    put_collector(redis, keys, "host-a:1", time.time(), [0])
    before = {key: redis.dump(key) for key in redis.scan_iter(f"{keys.prefix}*")}

    for _ in range(2):
        assert staff_client.get(reverse("admin:index")).status_code == 200
        assert staff_client.get(reverse("admin:pipeline_dashboard")).status_code == 200

    assert {key: redis.dump(key) for key in redis.scan_iter(f"{keys.prefix}*")} == before


def repair_report(redis, keys: Keys, **fields) -> None:
    """The repair scheduler's report as it writes it (its contract's shape)."""
    redis.set(keys.repair_backlog, orjson.dumps({
        "updated_at": time.time() - 4,
        "backlog": {"confirm": {"candles": 12, "units": 12}, "outage": {"candles": 3000, "units": 30},
                    "history": {"candles": 50000, "units": 500}, "old": {"candles": 0, "units": 0}},
        "drained_per_s": {"confirm": 2.0, "outage": 15.5, "history": 120.0, "old": 0.0},
        "eta_s": 5400.0, "requests": {"candles": 40, "history": 300},
        "budget_per_s": {"candles": 20.0, "history": 10.0}, **fields}))


def test_the_dashboard_shows_the_repair_backlog_and_the_worst_lags(staff_client, redis, keys, btc):
    repair_report(redis, keys)
    redis.zadd(keys.channel_confirmed("1m"), {"BTC-USDT": (int(time.time()) // 60 - 10) * MINUTE})

    response = staff_client.get(reverse("admin:pipeline_dashboard"))

    body = " ".join(re.sub(r"<[^>]+>", " ", text(response)).split())
    assert "REST repair backlog (report 4 s old)" in body
    assert "outage 3,000 30 15.5/s" in body
    assert "all 53,012 drained in about 1 h" in body
    assert re.search(r"Worst confirmation lags .*? BTC-USDT 1m 8 min", body)
    assert tile(response, "tile-rest-needed").startswith("12 ")  # the confirm backlog


def test_the_dashboard_without_a_repair_report_says_so(staff_client, redis, keys):
    redis.set(keys.repair_backlog, b"not json")

    response = staff_client.get(reverse("admin:pipeline_dashboard"))

    assert "No report from the repair scheduler yet." in text(response)


def test_admin_pages_cost_a_bounded_number_of_queries(staff_client, redis, keys, instrument,
                                                      django_assert_max_num_queries):
    bars = list(Timeframe.objects.order_by("display_order"))
    for i in range(8):
        inst = instrument(f"Q{i}-USDT")
        Subscription.objects.bulk_create([Subscription(instrument=inst, timeframe=tf) for tf in bars])
    subs = list(Subscription.objects.all())
    Gap.objects.bulk_create([Gap(subscription=sub, start=ms_to_datetime(T0_MS), end=ms_to_datetime(T0_MS),
                                 missing=1) for sub in subs])
    staff_client.get(reverse("admin:index"))  # sessions, content types: cached after the first view

    for url in (reverse("admin:index"), reverse("admin:pipeline_dashboard"),
                reverse("admin:candles_subscription_changelist"), reverse("admin:candles_gap_changelist"),
                reverse("admin:candles_gap_changelist") + "?state__exact=open"):
        # The dashboard's storage figures are 6 or 7 of them (savepoint, statement timeout, timeframes, partitions,
        # retired tables, the archive's totals once it is installed, release), however many partitions there are.
        with django_assert_max_num_queries(19):
            assert staff_client.get(url).status_code == 200


def storage_row(response, bar: str) -> list[str]:
    """The cells of one bar's row in the dashboard's storage table, tags stripped."""
    match = re.search(rf'<tr id="storage-{re.escape(bar)}">(.*?)</tr>', text(response), re.S)
    assert match, f"no storage row for {bar}"
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).split())
            for cell in re.findall(r"<td>(.*?)</td>", match.group(1), re.S)]


def test_the_dashboard_shows_storage_per_bar_from_the_catalogue(staff_client, keys):
    Timeframe.objects.filter(code="1m").update(retention=timedelta(days=30))
    before = timezone.now() - timedelta(days=30)

    response = staff_client.get(reverse("admin:index"))

    after = timezone.now() - timedelta(days=30)
    bar, kept, horizon, next_drop, partitions, size, rows, *archive = storage_row(response, "1m")
    assert (bar, kept) == ("1m", "30 days")
    assert horizon in {before.strftime("%Y-%m-%d %H:%M"), after.strftime("%Y-%m-%d %H:%M")}
    assert next_drop.startswith("in ")  # the oldest 1m partition ends well inside 30 days
    assert int(partitions) >= 1
    assert size.endswith("B")
    assert rows == "0"
    assert archive in ([], ["0 files, 0 B"])  # a column of its own once the Parquet archive is installed
    assert storage_row(response, "1D")[1:4] == ["forever", "–", "–"]


def test_the_pipeline_page_is_the_dashboard_alone(staff_client, keys):
    response = staff_client.get(reverse("admin:pipeline_dashboard"))

    assert response.status_code == 200
    assert tile(response, "tile-collectors") == "0 / 0 collectors alive"
    assert "No collector has reported" in text(response)


def test_with_redis_down_the_index_shows_a_notice_and_the_database_figures(staff_client, redis_down, btc):
    Gap.objects.create(subscription=subscribe(btc, "1m"), start=ms_to_datetime(T0_MS),
                       end=ms_to_datetime(T0_MS), missing=1)

    started = time.monotonic()
    response = staff_client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert time.monotonic() - started < 5
    assert "Pipeline figures unavailable" in text(response)
    assert redis_down in text(response)
    assert tile(response, "tile-gaps") == "1 open gaps (1 candles), 0 unfillable"
    assert 'id="tile-buffer"' not in text(response)


# --- subscriptions: live status, figures, one query per page ---------------------------------------------


def test_status_badges_come_live_from_redis_with_the_age_of_the_last_update(staff_client, redis, keys, instrument):
    now = time.time()
    cases = {
        "LIVE-USDT": ({"last_message_at": now - 3}, {}),
        "STALE-USDT": ({"last_message_at": now - settings.HEALTH_STALE_AFTER_S - 60}, {}),
        "BAD-USDT": ({"state": "invalid", "error": "60018 Wrong URL or channel"}, {}),
        "PAUSED-USDT": ({"last_message_at": now - 3}, {"is_active": False}),
        "NEW-USDT": (None, {}),
    }
    for inst_id, (channel, fields) in cases.items():
        subscribe(instrument(inst_id), "1m", status=SubscriptionStatus.LIVE, **fields)
        if channel is not None:
            put_channel(redis, keys, inst_id, "1m", **channel)

    body = text(staff_client.get(reverse("admin:candles_subscription_changelist")))

    def badge_of(inst_id: str) -> str:
        row = re.search(rf"{inst_id}</a></th>.*?</tr>", body, re.S).group(0)
        return re.search(r'<span title="([^"]*)" style="background:[^"]+">([^<]+)</span>', row).groups()

    assert re.fullmatch(r"live · [34] s", badge_of("LIVE-USDT")[1])
    assert badge_of("STALE-USDT")[1].startswith("stale · 1 min")
    assert badge_of("STALE-USDT")[0].startswith("no message since")
    assert badge_of("BAD-USDT") == ("60018 Wrong URL or channel", "error")
    assert badge_of("PAUSED-USDT")[1] == "paused"
    assert badge_of("NEW-USDT")[1] == "pending"


def test_with_redis_down_the_subscription_list_shows_stored_statuses_and_a_notice(staff_client, redis_down, btc):
    subscribe(btc, "1m", status=SubscriptionStatus.STALE)

    response = staff_client.get(reverse("admin:candles_subscription_changelist"))

    assert response.status_code == 200
    assert "Live figures are unavailable" in text(response)
    assert ">stale ?</span>" in text(response)


def test_completeness_counts_confirmed_candles_of_the_last_day_against_the_bar_boundaries(btc, stored_candles):
    now = ms_to_datetime(T0_MS + 30 * MINUTE + 20_000)  # 19:30:20 UTC
    minute = subscribe(btc, "1m", backfill_from=ms_to_datetime(T0_MS - 60 * MINUTE))
    # 18:00 to 19:29, less the settle time: the 19:29 candle closed 20 s ago, > 15 s: 90 expected.
    expected = [T0_MS - 60 * MINUTE + i * MINUTE for i in range(90)]
    stored_candles(btc, "1m", [t for t in expected if t not in expected[10:13]])  # 3 missing
    stored_candles(btc, "1m", [expected[11]], confirmed=False)  # unconfirmed counts as missing
    stored_candles(btc, "1m", [T0_MS - 120 * MINUTE])  # before the window: not counted
    # 6H bars open at 00/06/12/18 Hong Kong time: 22:00, 04:00, 10:00 and 16:00 UTC. From 19:30:20 a day ago,
    # the closed ones are 22:00 (15th), 04:00 and 10:00 (16th); the 16:00 candle is still open.
    six_hours = subscribe(btc, "6H", backfill_from=ms_to_datetime(T0_MS - 30 * 3_600_000))
    stored_candles(btc, "6H", [T0_MS - 15 * 3_600_000, T0_MS - 9 * 3_600_000])  # 04:00 and 10:00 UTC
    stored_candles(btc, "6H", [T0_MS - 3 * 3_600_000], confirmed=False)  # the open one
    Gap.objects.create(subscription=minute, start=ms_to_datetime(expected[10]), end=ms_to_datetime(expected[12]),
                       missing=3)
    Gap.objects.create(subscription=minute, start=ms_to_datetime(expected[0]), end=ms_to_datetime(expected[0]),
                       missing=1, state=GapState.FILLED)
    subs = list(Subscription.objects.select_related("instrument", "timeframe").order_by("pk"))
    for sub in subs:  # created "now": the window starts at backfill_from, as the subscription asked
        sub.created_at = now

    figures = subscription_figures(subs, now=now)

    assert figures[minute.pk].expected == 90
    assert figures[minute.pk].stored == 87
    assert round(figures[minute.pk].completeness, 2) == 96.67
    assert figures[minute.pk].last_confirmed == ms_to_datetime(expected[-1])
    assert (figures[minute.pk].open_gaps, figures[minute.pk].missing_in_gaps) == (1, 3)
    assert figures[six_hours.pk].expected == 3
    assert figures[six_hours.pk].stored == 2
    assert figures[six_hours.pk].last_confirmed == ms_to_datetime(T0_MS - 9 * 3_600_000)
    assert figures[six_hours.pk].open_gaps == 0


def test_a_new_subscription_without_history_is_not_blamed_for_the_past(btc):
    sub = subscribe(btc, "1H")
    sub = Subscription.objects.select_related("instrument", "timeframe").get(pk=sub.pk)

    figures = subscription_figures([sub], now=sub.created_at + timedelta(minutes=5))

    assert figures[sub.pk].expected == 0
    assert figures[sub.pk].completeness is None


def test_the_list_shows_completeness_last_candle_and_gaps_with_a_link(staff_client, keys, btc, stored_candles):
    now_ms = datetime_to_ms(timezone.now())
    last_closed = (now_ms - 15_000) // MINUTE * MINUTE - MINUTE
    sub = subscribe(btc, "1m", backfill_from=ms_to_datetime(last_closed - 9 * MINUTE))
    stored_candles(btc, "1m", [last_closed - i * MINUTE for i in range(10)])
    Gap.objects.create(subscription=sub, start=ms_to_datetime(T0_MS), end=ms_to_datetime(T0_MS + MINUTE), missing=2)

    body = text(staff_client.get(reverse("admin:candles_subscription_changelist")))

    assert re.search(r'title="(10|11) of (10|11|12) closed candles stored, confirmed"', body)
    assert ms_to_datetime(last_closed).strftime("%Y-%m-%d %H:%M:%S") in body
    assert f"?subscription__id__exact={sub.pk}&amp;state__in=open,filling" in body
    assert ">1 (2 missing)</a>" in body


def test_the_figures_cost_the_same_queries_for_ten_rows_as_for_two(staff_client, keys, instrument):
    url = reverse("admin:candles_subscription_changelist")
    for n in range(2):
        subscribe(instrument(f"A{n}-USDT"), "1m")
    with CaptureQueriesContext(connection) as two:
        assert staff_client.get(url).status_code == 200
    for n in range(8):
        subscribe(instrument(f"B{n}-USDT"), "1H")
    with CaptureQueriesContext(connection) as ten:
        body = text(staff_client.get(url))

    assert body.count('class="action-select"') == 10
    assert len(ten.captured_queries) == len(two.captured_queries)


def test_a_subscriptions_pair_is_read_only_once_created(staff_client, btc):
    sub = subscribe(btc, "1m")

    body = text(staff_client.get(reverse("admin:candles_subscription_change", args=[sub.pk])))

    assert 'name="instrument"' not in body
    assert 'name="timeframe"' not in body
    assert 'name="webhook_url"' in body


def test_instruments_and_bars_cannot_be_deleted_in_the_admin(staff_client, btc):
    assert staff_client.post(reverse("admin:candles_instrument_delete", args=[btc.pk]), {"post": "yes"}).status_code \
        == 403
    tf = Timeframe.objects.get(code="1m")
    assert staff_client.post(reverse("admin:candles_timeframe_delete", args=[tf.pk]), {"post": "yes"}).status_code \
        == 403
    assert Instrument.objects.filter(pk=btc.pk).exists()


# --- subscribe many at once --------------------------------------------------------------------------------


@pytest.fixture
def universe(instrument) -> dict[str, Instrument]:
    return {
        "BTC-USDT": instrument("BTC-USDT", base_ccy="BTC", quote_ccy="USDT"),
        "ETH-USDT": instrument("ETH-USDT", base_ccy="ETH", quote_ccy="USDT"),
        "ETH-USDC": instrument("ETH-USDC", base_ccy="ETH", quote_ccy="USDC"),
        "BTC-USDT-SWAP": instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT", inst_family="BTC-USDT"),
        "GONE-USDT": instrument("GONE-USDT", quote_ccy="USDT", delisted_at=timezone.now()),
        "SOON-USDT": instrument("SOON-USDT", quote_ccy="USDT", state="preopen"),
    }


def offered(response) -> list[str]:
    return re.findall(r'<option value="\d+">([^<]+)</option>', re.search(
        r'<select name="instruments".*?</select>', text(response), re.S).group(0))


SUBSCRIBE = "admin:candles_subscription_subscribe"


def test_the_subscribe_page_offers_live_instruments_filtered_by_type_quote_and_search(staff_client, universe):
    url = reverse(SUBSCRIBE)

    assert offered(staff_client.get(url)) == ["BTC-USDT", "BTC-USDT-SWAP", "ETH-USDC", "ETH-USDT"]
    assert offered(staff_client.get(url, {"inst_type": "SPOT", "quote_ccy": "USDT"})) == ["BTC-USDT", "ETH-USDT"]
    assert offered(staff_client.get(url, {"q": "eth"})) == ["ETH-USDC", "ETH-USDT"]
    assert offered(staff_client.get(url, {"inst_type": "SWAP", "q": "btc"})) == ["BTC-USDT-SWAP"]
    page = text(staff_client.get(url))
    assert 'value="1m"' in page
    assert 'value="1M"' in page  # a month, listed apart from the minute
    assert "Subscribe many" in text(staff_client.get(reverse("admin:candles_subscription_changelist")))


def test_subscribing_instruments_times_bars_with_history_creates_and_shows_them(staff_client, universe):
    paused = subscribe(universe["ETH-USDT"], "1H", is_active=False)
    form = {"instruments": [universe["BTC-USDT"].pk, universe["ETH-USDT"].pk], "timeframes": ["1m", "1H"],
            "backfill_from_0": "2024-01-15", "backfill_from_1": "08:00:00"}

    response = staff_client.post(reverse(SUBSCRIBE), form)

    assert response.status_code == 200
    pairs = set(Subscription.objects.filter(is_active=True).values_list("instrument__inst_id", "timeframe__code"))
    assert pairs == {("BTC-USDT", "1m"), ("BTC-USDT", "1H"), ("ETH-USDT", "1m"), ("ETH-USDT", "1H")}
    created = Subscription.objects.exclude(pk=paused.pk)
    assert {sub.backfill_from for sub in created} == {ms_to_datetime(1_705_305_600_000)}
    body = text(response)
    assert "3 created, 1 resumed, 0 already subscribed." in body
    assert len(re.findall(r"<td>(created|resumed)</td>", body)) == 4
    ids = ",".join(str(pk) for pk in sorted(Subscription.objects.values_list("pk", flat=True)))
    assert sorted(re.search(r'\?id__in=([\d,]+)"', body).group(1).split(",")) == sorted(ids.split(","))
    again = staff_client.post(reverse(SUBSCRIBE), form)
    assert "0 created, 0 resumed, 4 already subscribed." in text(again)
    assert Subscription.objects.count() == 4


def test_every_instrument_matching_the_filter_can_be_subscribed_at_once(staff_client, universe):
    response = staff_client.post(reverse(SUBSCRIBE), {"quote_ccy": "USDT", "inst_type": "SPOT", "all_matching": "on",
                                                      "timeframes": ["1M"]})

    assert "2 created" in text(response)
    assert set(Subscription.objects.values_list("instrument__inst_id", "timeframe__code")) == {
        ("BTC-USDT", "1M"), ("ETH-USDT", "1M")}


def test_the_subscribe_page_offers_and_subscribes_the_series_of_one_price_kind(staff_client, universe, instrument):
    mark = instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT", price="mark")
    instrument("BTC-USD", inst_type="INDEX", price="index", quote_ccy="USD")
    url = reverse(SUBSCRIBE)

    assert offered(staff_client.get(url)) == ["BTC-USDT", "BTC-USDT-SWAP", "ETH-USDC", "ETH-USDT"]  # trade rows
    assert offered(staff_client.get(url, {"price": "mark"})) == ["BTC-USDT-SWAP (mark)"]
    assert offered(staff_client.get(url, {"price": "index"})) == ["BTC-USD (index)"]
    response = staff_client.post(url, {"price": "mark", "instruments": [mark.pk], "timeframes": ["1m", "1H"]})

    assert "2 created" in text(response)
    assert set(Subscription.objects.values_list("instrument_id", "timeframe__code")) == {(mark.pk, "1m"),
                                                                                        (mark.pk, "1H")}
    one_second = staff_client.post(url, {"price": "mark", "instruments": [mark.pk], "timeframes": ["1s"]})
    assert "OKX has no 1s mark candles" in text(one_second)
    assert Subscription.objects.count() == 2


def test_bad_subscribe_requests_are_refused_with_a_reason(staff_client, universe, monkeypatch):
    url = reverse(SUBSCRIBE)
    nothing = staff_client.post(url, {"timeframes": ["1m"]})
    assert "Pick at least one instrument" in text(nothing)
    no_bar = staff_client.post(url, {"instruments": [universe["BTC-USDT"].pk]})
    assert "This field is required" in text(no_bar)
    delisted = staff_client.post(url, {"instruments": [universe["GONE-USDT"].pk], "timeframes": ["1m"]})
    assert "Select a valid choice" in text(delisted)
    future = staff_client.post(url, {"instruments": [universe["BTC-USDT"].pk], "timeframes": ["1m"],
                                     "backfill_from_0": "2999-01-01", "backfill_from_1": "00:00:00"})
    assert "History cannot start in the future" in text(future)
    monkeypatch.setattr(admin_bulk, "MAX_BULK_PAIRS", 3)
    too_many = staff_client.post(url, {"all_matching": "on", "timeframes": ["1m", "1H"]})
    assert "That is 8 subscriptions; at most 3 at once" in text(too_many)
    assert Subscription.objects.count() == 0


# --- dead letters ------------------------------------------------------------------------------------------

DEAD_LETTERS = "admin:pipeline_dead_letters"


def frame(inst_id: str = "BTC-USDT", bar: str = "1m") -> str:
    return orjson.dumps({"arg": {"channel": f"candle{bar}", "instId": inst_id},
                         "data": [[str(T0_MS), "100", "110", "90", "105", "1.5", "157.5", "157.5", "1"]]}).decode()


def test_dead_letters_are_listed_newest_first_with_raw_frame_and_reason_escaped(staff_client, redis, keys):
    redis.lpush(keys.dead_letters, dead_letter_record("frame is not JSON", "<script>alert(1)</script>"))
    redis.lpush(keys.dead_letters, dead_letter_record("unknown bar '1m'", frame(), "BTC-USDT|1m"))

    body = text(staff_client.get(reverse(DEAD_LETTERS)))

    assert "2 in all (showing 1–2)" in " ".join(body.split())
    assert body.index("unknown bar &#x27;1m&#x27;") < body.index("frame is not JSON")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body
    assert body.count('name="letter"') == 2


def test_reingesting_from_the_page_moves_valid_candles_to_the_buffer_and_keeps_the_rest(staff_client, redis, keys,
                                                                                      btc):
    valid = dead_letter_record("unknown bar '1m'", frame(), "BTC-USDT|1m")
    invalid = dead_letter_record("frame is not JSON", "{")
    redis.lpush(keys.dead_letters, invalid, valid)

    response = staff_client.post(reverse(DEAD_LETTERS), {"letter": [record_id(valid), record_id(invalid)]},
                                 follow=True)

    assert response.status_code == 200
    assert "1 re-ingested (1 candles to the buffer), 1 still invalid (kept): frame is not JSON" in text(response)
    assert redis.lrange(keys.dead_letters, 0, -1) == [invalid]
    [(name, value)] = LiveBuffer(redis, keys).live().items()
    assert decode_entry(name, value)[:3] == ("BTC-USDT", "1m", T0_MS)


def test_staff_without_the_candle_permission_can_look_but_not_reingest(client, redis, keys):
    user = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_subscription"))
    client.force_login(user)
    record = dead_letter_record("frame is not JSON", "{")
    redis.lpush(keys.dead_letters, record)

    page = client.get(reverse(DEAD_LETTERS))
    refused = client.post(reverse(DEAD_LETTERS), {"letter": [record_id(record)]})

    assert page.status_code == 200
    assert 'name="letter"' not in text(page)
    assert refused.status_code == 403
    assert redis.llen(keys.dead_letters) == 1


def test_with_redis_down_the_dead_letter_page_says_so(staff_client, redis_down):
    page = staff_client.get(reverse(DEAD_LETTERS))
    reingest = staff_client.post(reverse(DEAD_LETTERS), {"letter": ["0" * 24]}, follow=True)

    assert page.status_code == 200
    assert "Dead letters unavailable" in text(page)
    assert reingest.status_code == 200
    assert "is unreachable" in text(reingest)


# --- who may see it ----------------------------------------------------------------------------------------


def test_a_non_staff_user_gets_nothing(client, redis, keys, btc):
    client.force_login(get_user_model().objects.create_user("quant", "q@example.com", "pw-for-tests"))
    sub = subscribe(btc, "1m")
    record = dead_letter_record("unknown bar '1m'", frame(), "BTC-USDT|1m")
    redis.lpush(keys.dead_letters, record)
    pages = ["admin:index", "admin:pipeline_dashboard", DEAD_LETTERS, SUBSCRIBE, "admin:candles_instrument_sync",
             "admin:candles_subscription_changelist", "admin:candles_gap_changelist"]

    for name in pages:
        for response in (client.get(reverse(name)), client.post(reverse(name), {})):
            assert response.status_code == 302, name
            assert response["Location"].startswith("/admin/login/"), name

    client.post(reverse(DEAD_LETTERS), {"letter": [record_id(record)]})
    client.post(reverse(SUBSCRIBE), {"instruments": [btc.pk], "timeframes": ["1H"]})
    client.post(reverse("admin:candles_subscription_changelist"), {"action": "pause", "_selected_action": [sub.pk]})
    assert redis.llen(keys.dead_letters) == 1
    assert list(Subscription.objects.values_list("timeframe__code", "is_active")) == [("1m", True)]
