"""The values behind GET /metrics: one Redis round trip and a few small queries, no lock, no key scan, and
nothing read per channel or per subscription.

Redis gives the counters every process adds to `Keys.counters`, the buffer, dead letters, the last flush,
the collectors, and per timeframe the channels' figures from the heads and counts of the per-bar indexes
(`channel_seen`, `channel_confirmed`, `channel_refused`); PostgreSQL gives gaps by state, subscriptions by
status and the timeframes. A source that cannot be read leaves its metrics out of the scrape (Prometheus marks
those series stale) and sets okx_candles_metrics_source_up{source=...} to 0; the other source's metrics are
still there (the per-timeframe figures use the timeframes last read when PostgreSQL is down).

With METRICS_PER_SUBSCRIPTION=true the scrape also reads every subscription and its channel and exports two
gauges per active subscription: a cost that grows with the subscriptions, off by default.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count
from redis import RedisError

from candles.bars import BarSpec
from candles.models import GapState, Subscription, SubscriptionStatus
from candles.storage_stats import BarStorage, storage_by_bar
from collectors.api.probes import status_redis
from collectors.api.subscriptions import (
    SubscriptionRow,
    bar_specs_by_code,
    confirmation_lag_s,
    limit_statements,
    subscription_records,
    subscription_rows,
)
from collectors.api.system import gap_counts
from collectors.maintenance import dropped_counts
from collectors.monitoring import metrics as m
from collectors.monitoring.status import (
    BAR_FIGURES_COMMANDS,
    OVERVIEW_COMMANDS,
    BarFigures,
    bar_figures_parse,
    bar_figures_queue,
    channel_statuses,
    overview_parse,
    overview_queue,
    priced_bars,
)
from collectors.okx.protocol import TRADE
from collectors.shared.connections import pipeline_keys
from okxproject.keys import split_priced_bar

logger = logging.getLogger(__name__)

PAUSED = "paused"
SUBSCRIPTION_STATES = (*SubscriptionStatus.values, PAUSED)

Samples = dict[m.Family, list[m.Sample]]

# The timeframes of the last scrape that could read PostgreSQL: the per-timeframe figures come from Redis, and
# stay in a scrape while PostgreSQL is away. A process's first scrape without PostgreSQL has none.
_last_specs: dict[str, BarSpec] = {}


def _read_database() -> tuple[dict[str, tuple[int, int]], dict[str, int], dict[str, BarSpec]]:
    """Gaps by state, subscriptions by status (paused apart) and the timeframes: GROUP BYs and one small read."""
    with transaction.atomic():
        limit_statements()
        counts = dict.fromkeys(SUBSCRIPTION_STATES, 0)
        grouped = Subscription.objects.order_by().values("is_active", "status").annotate(n=Count("pk"))
        for is_active, status, n in grouped.values_list("is_active", "status", "n"):
            counts[status if is_active else PAUSED] += n
        return gap_counts(), counts, bar_specs_by_code()


def _read_storage(now: float) -> list[BarStorage]:
    """Per timeframe with partitions: sizes and live rows from the catalogue and statistics, horizons, next drop."""
    with transaction.atomic():
        limit_statements()
        return storage_by_bar(now=datetime.fromtimestamp(now, UTC))


def _storage_samples(samples: Samples, bars: list[BarStorage]) -> None:
    for bar in bars:
        labels = {"timeframe": bar.bar}
        samples[m.PARTITION_BYTES].append(m.Sample(bar.bytes, labels))
        samples[m.ROWS].append(m.Sample(bar.rows, labels))
        if bar.retention is not None:
            samples[m.RETENTION_HORIZON].append(m.Sample(bar.retention.total_seconds(), labels))
        if bar.next_drop is not None:
            samples[m.NEXT_DROP].append(m.Sample(round(bar.next_drop.timestamp(), 3), labels))


def _read_redis(now: float, specs: dict[str, BarSpec]) -> tuple[dict, list[BarFigures]]:
    keys = pipeline_keys()
    pipe = status_redis().pipeline(transaction=False)
    overview_queue(pipe, keys, now)
    fresh_since = now - settings.HEALTH_STALE_AFTER_S
    now_ms = int(now * 1000)
    bars = priced_bars(specs)
    for bar in bars:
        bar_figures_queue(pipe, keys, bar, fresh_since=fresh_since,
                          newest_closed_open=specs[split_priced_bar(bar)[0]].last_closed(now_ms))
    replies = pipe.execute()
    overview = overview_parse(replies[:OVERVIEW_COMMANDS], now)
    figures = [bar_figures_parse(bar, replies[OVERVIEW_COMMANDS + i * BAR_FIGURES_COMMANDS:][:BAR_FIGURES_COMMANDS])
               for i, bar in enumerate(bars)]
    return overview, figures


def _subscription_rows(now: float) -> list[SubscriptionRow]:
    """Every subscription with its channel (METRICS_PER_SUBSCRIPTION): a read that grows with them."""
    with transaction.atomic():
        limit_statements()
        records = subscription_records(with_gaps=False)
    channels = channel_statuses(status_redis(), pipeline_keys(),
                                [r.channel_key for r in records if r.active])
    return subscription_rows(records, channels, now)


def _pipeline_samples(samples: Samples, overview: dict) -> None:
    counters = overview["counters"]
    for family in m.COUNTERS:
        samples[family].append(m.Sample(counters.get(family.counter_field, 0)))
    samples[m.FLUSH_DURATION] += [
        m.Sample(counters.get(m.FLUSH_DURATION_MS_FIELD, 0) / 1000, suffix="_sum"),
        m.Sample(counters.get(m.FLUSH_RUNS_FIELD, 0), suffix="_count"),
    ]
    samples[m.FLUSH_REQUEST_WAIT] += [
        m.Sample(counters.get(m.FLUSH_REQUEST_WAIT_MS_FIELD, 0) / 1000, suffix="_sum"),
        m.Sample(counters.get(m.FLUSH_REQUESTS_RUN_FIELD, 0), suffix="_count"),
    ]
    buffer = overview["buffer"]
    samples[m.BUFFER_ENTRIES] += [m.Sample(buffer["live"], {"part": "live"}),
                                  m.Sample(buffer["taken"], {"part": "taken"})]
    samples[m.DEAD_LETTERS_STORED].append(m.Sample(overview["dead_letters"]))
    samples[m.REST_NEEDED].append(m.Sample(overview["rest_needed"]))
    last_flush = overview["last_flush"]
    if last_flush is not None and last_flush["at"] is not None:
        samples[m.LAST_FLUSH].append(m.Sample(last_flush["at"]))
    repair = overview.get("repair")
    if repair is not None:
        for priority, figures in repair["backlog"].items():
            samples[m.REPAIR_BACKLOG].append(m.Sample(figures["candles"], {"priority": priority}))
        for priority, rate in repair["drained_per_s"].items():
            samples[m.REPAIR_DRAIN].append(m.Sample(rate, {"priority": priority}))
        if repair["eta_s"] is not None:
            samples[m.REPAIR_ETA].append(m.Sample(repair["eta_s"]))
    for bar, dropped in sorted(dropped_counts(counters).items()):
        samples[m.PARTITIONS_DROPPED].append(m.Sample(dropped, {"timeframe": bar}))
    alive, total = overview["collectors"]["alive"], overview["collectors"]["total"]
    samples[m.COLLECTORS] += [m.Sample(alive, {"state": "alive"}), m.Sample(total - alive, {"state": "dead"})]
    shards = overview["shards"]
    samples[m.SHARD_REPLICAS] += [m.Sample(len(held), {"shard": str(shard)})
                                  for shard, held in enumerate(shards.holders)]
    samples[m.SHARD_REPLICAS_WANTED].append(m.Sample(shards.replicas))


def _database_samples(samples: Samples, gaps: dict[str, tuple[int, int]], subscriptions: dict[str, int]) -> None:
    for state in GapState.values:
        count, missing = gaps[state]
        samples[m.GAPS].append(m.Sample(count, {"state": state}))
        samples[m.GAP_MISSING].append(m.Sample(missing, {"state": state}))
    samples[m.SUBSCRIPTIONS] += [m.Sample(subscriptions[state], {"status": state}) for state in SUBSCRIPTION_STATES]


def _bar_samples(samples: Samples, figures: list[BarFigures], specs: dict[str, BarSpec], now: float) -> None:
    now_ms = int(now * 1000)
    for bar in figures:
        if bar.price != TRADE and not bar.channels:
            continue  # a kind's bar nobody collects: no series (trade bars are always shown, as before kinds)
        labels = {"timeframe": bar.timeframe, "price": bar.price}
        samples[m.CHANNELS] += [m.Sample(bar.fresh, {**labels, "state": "fresh"}),
                                m.Sample(bar.quiet, {**labels, "state": "quiet"}),
                                m.Sample(bar.refused, {**labels, "state": "refused"})]
        if bar.oldest_message_at is not None:
            samples[m.CHANNEL_MESSAGE_AGE_MAX].append(
                m.Sample(round(max(0.0, now - bar.oldest_message_at), 3), labels))
        lag = confirmation_lag_s(specs[bar.timeframe], bar.oldest_confirmed_open, now_ms)
        if lag is not None:
            samples[m.CHANNEL_LAG_MAX].append(m.Sample(lag, labels))
        samples[m.CHANNELS_UNCONFIRMED].append(m.Sample(bar.unconfirmed, labels))


def _subscription_samples(samples: Samples, rows: list[SubscriptionRow]) -> None:
    for row in rows:
        if not row.active:
            continue
        labels = {"symbol": row.symbol, "timeframe": row.timeframe, "price": row.price}
        if row.last_message_age_s is not None:
            samples[m.SUBSCRIPTION_MESSAGE_AGE].append(m.Sample(row.last_message_age_s, labels))
        if row.lag_s is not None:
            samples[m.SUBSCRIPTION_LAG].append(m.Sample(row.lag_s, labels))


def metrics_samples(*, now: float | None = None) -> Samples:
    """Every family's samples now; families of a source that could not be read have none."""
    global _last_specs
    now = time.time() if now is None else now
    samples: Samples = defaultdict(list)
    samples[m.BUFFER_ALARM].append(m.Sample(settings.BUFFER_ALARM_ENTRIES))

    database_up = False
    specs = _last_specs
    try:
        gaps, subscriptions, specs = _read_database()
    except DatabaseError as exc:
        logger.warning("metrics: PostgreSQL could not be read: %s: %s", type(exc).__name__, exc)
    else:
        database_up = True
        _last_specs = specs
        _database_samples(samples, gaps, subscriptions)
        try:
            _storage_samples(samples, _read_storage(now))
        except DatabaseError as exc:
            logger.warning("metrics: storage figures left out: %s: %s", type(exc).__name__, exc)

    redis_up = False
    try:
        overview, figures = _read_redis(now, specs)
    except RedisError as exc:
        logger.warning("metrics: Redis could not be read: %s: %s", type(exc).__name__, exc)
    else:
        redis_up = True
        _pipeline_samples(samples, overview)
        _bar_samples(samples, figures, specs, now)

    if settings.METRICS_PER_SUBSCRIPTION and database_up and redis_up:
        try:
            _subscription_samples(samples, _subscription_rows(now))
        except (DatabaseError, RedisError) as exc:
            logger.warning("metrics: per-subscription gauges left out: %s: %s", type(exc).__name__, exc)

    samples[m.SOURCE_UP] += [m.Sample(int(redis_up), {"source": "redis"}),
                             m.Sample(int(database_up), {"source": "database"})]
    return samples


def metrics_text(*, now: float | None = None) -> str:
    """The Prometheus text exposition of every family in `collectors.monitoring.metrics.FAMILIES`."""
    return m.render(metrics_samples(now=now))
