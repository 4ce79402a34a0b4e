"""The values behind GET /metrics: one Redis round trip and three small queries, no lock, no key scan.

Redis gives the counters every process adds to `Keys.counters`, the buffer, dead letters, the last flush,
the collectors and every channel's status; PostgreSQL gives gaps by state and the subscriptions. A source
that cannot be read leaves its metrics out of the scrape (Prometheus marks those series stale) and sets
okx_candles_metrics_source_up{source=...} to 0; the other source's metrics are still there.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict

from django.conf import settings
from django.db import DatabaseError, transaction
from redis import RedisError

from candles.models import GapState, SubscriptionStatus
from collectors import metrics as m
from collectors.api.probes import status_redis
from collectors.api.subscriptions import SubscriptionRow, limit_statements, subscription_records, subscription_rows
from collectors.api.system import gap_counts
from collectors.pipeline.connections import pipeline_keys
from collectors.pipeline.status import (
    OVERVIEW_COMMANDS,
    ChannelStatus,
    overview_parse,
    overview_queue,
    parse_channel_statuses,
)

logger = logging.getLogger(__name__)

PAUSED = "paused"
SUBSCRIPTION_STATES = (*SubscriptionStatus.values, PAUSED)

Samples = dict[m.Family, list[m.Sample]]


def _read_redis(now: float) -> tuple[dict, dict[tuple[str, str], ChannelStatus]]:
    keys = pipeline_keys()
    pipe = status_redis().pipeline(transaction=False)
    overview_queue(pipe, keys, now)
    pipe.hgetall(keys.channel_status)
    replies = pipe.execute()
    overview = overview_parse(replies[:OVERVIEW_COMMANDS], now)
    parsed = parse_channel_statuses(replies[OVERVIEW_COMMANDS].items()).values()
    return overview, {(status.inst_id, status.bar): status for status in parsed}


def _read_database(
    channels: dict[tuple[str, str], ChannelStatus] | None, now: float,
) -> tuple[dict[str, tuple[int, int]], list[SubscriptionRow]]:
    with transaction.atomic():
        limit_statements()
        return gap_counts(), subscription_rows(subscription_records(with_gaps=False), channels, now)


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
    alive, total = overview["collectors"]["alive"], overview["collectors"]["total"]
    samples[m.COLLECTORS] += [m.Sample(alive, {"state": "alive"}), m.Sample(total - alive, {"state": "dead"})]


def _database_samples(samples: Samples, gaps: dict[str, tuple[int, int]], rows: list[SubscriptionRow]) -> None:
    for state in GapState.values:
        count, missing = gaps[state]
        samples[m.GAPS].append(m.Sample(count, {"state": state}))
        samples[m.GAP_MISSING].append(m.Sample(missing, {"state": state}))
    by_status = Counter(row.status if row.active else PAUSED for row in rows)
    samples[m.SUBSCRIPTIONS] += [m.Sample(by_status[state], {"status": state}) for state in SUBSCRIPTION_STATES]


def _channel_samples(samples: Samples, rows: list[SubscriptionRow]) -> None:
    for row in rows:
        if not row.active:
            continue
        labels = {"symbol": row.symbol, "timeframe": row.timeframe}
        if row.last_message_age_s is not None:
            samples[m.SUBSCRIPTION_MESSAGE_AGE].append(m.Sample(row.last_message_age_s, labels))
        if row.lag_s is not None:
            samples[m.SUBSCRIPTION_LAG].append(m.Sample(row.lag_s, labels))


def metrics_samples(*, now: float | None = None) -> Samples:
    """Every family's samples now; families of a source that could not be read have none."""
    now = time.time() if now is None else now
    samples: Samples = defaultdict(list)
    samples[m.BUFFER_ALARM].append(m.Sample(settings.BUFFER_ALARM_ENTRIES))

    overview = channels = None
    try:
        overview, channels = _read_redis(now)
    except RedisError as exc:
        logger.warning("metrics: Redis could not be read: %s: %s", type(exc).__name__, exc)
    else:
        _pipeline_samples(samples, overview)

    database_up = False
    try:
        gaps, rows = _read_database(channels, now)
    except DatabaseError as exc:
        logger.warning("metrics: PostgreSQL could not be read: %s: %s", type(exc).__name__, exc)
    else:
        database_up = True
        _database_samples(samples, gaps, rows)
        if channels is not None:
            _channel_samples(samples, rows)

    samples[m.SOURCE_UP] += [m.Sample(int(overview is not None), {"source": "redis"}),
                             m.Sample(int(database_up), {"source": "database"})]
    return samples


def metrics_text(*, now: float | None = None) -> str:
    """The Prometheus text exposition of every family in `collectors.metrics.FAMILIES`."""
    return m.render(metrics_samples(now=now))
