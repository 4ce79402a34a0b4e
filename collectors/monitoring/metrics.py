"""Every metric okx-candles exports, written in the Prometheus text format (0.0.4) by prometheus_client.

The catalogue below is the contract with dashboards and alerts: `METRIC_NAMES` lists every family name, and a
family is exported (with its # HELP and # TYPE lines) on every scrape, with or without samples. Values come
from `collectors.api.metrics`, which reads them from Redis and PostgreSQL; this module only knows names, types
and how to hand them to prometheus_client, so it has no Django or Redis import.

The values live in Redis and PostgreSQL, shared by every process, not in this process's memory: so instead of
prometheus_client's Counter and Gauge objects, a custom collector on a registry of its own yields the families
of one scrape, and `generate_latest` writes them (escaping, number formats, the counter and summary suffixes).

Counters are the sums of what every process (collectors, flush and backfill workers, the health task) adds to
the Redis hash `Keys.counters`; they only grow, so Prometheus' `rate()` applies. Durations are in seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "okx_candles_"


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    type: str  # "counter", "gauge" or "summary"
    help: str
    labels: tuple[str, ...] = ()
    # For counters read from Keys.counters: the field name there, and a factor to seconds for *_ms sums.
    counter_field: str | None = None


@dataclass(slots=True)
class Sample:
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    suffix: str = ""  # "_sum" or "_count" for summaries


def _counter(name: str, field_name: str, help_text: str) -> Family:
    return Family(PREFIX + name, "counter", help_text, counter_field=field_name)


# --- counters from Keys.counters ---------------------------------------------------------------------------
MESSAGES_RECEIVED = _counter(
    "messages_received_total", "messages",
    "Candle rows received in OKX WebSocket pushes by the collectors, valid or not.")
BUFFER_WRITES = _counter(
    "buffer_writes_total", "candle_updates",
    "Candle versions the collectors wrote to the Redis live buffer (after coalescing pushes of ~100 ms).")
CANDLES_FLUSHED = _counter(
    "candles_flushed_total", "candles_flushed",
    "Candle rows inserted or changed in PostgreSQL by flushes of the live buffer.")
FLUSH_ERRORS = _counter(
    "flush_errors_total", "flush_errors",
    "Flush runs that failed (their batch stays in Redis and is written by a later run).")
DEAD_LETTERS = _counter(
    "dead_letters_total", "dead_letters",
    "Frames, candles and rows refused on the way in and put on the dead-letter list.")
DEAD_LETTERS_TRIMMED = _counter(
    "dead_letters_trimmed_total", "dead_letters_trimmed",
    "Dead letters dropped from the list because it was full (DEAD_LETTER_MAX).")
MISSED_CONFIRMS = _counter(
    "missed_confirms_total", "missed_confirms",
    "Candles that closed without a confirm push, queued to be fetched from REST.")
RECONNECTS = _counter(
    "ws_reconnects_total", "reconnects",
    "WebSocket reconnects of the collectors (added up by the health task from each collector's status).")
COLLECTORS_REMOVED = _counter(
    "collectors_removed_total", "collectors_removed",
    "Collectors removed by the health task after their heartbeat stopped.")
GAPS_FILLED = _counter(
    "gaps_filled_total", "gaps_filled",
    "Gaps completely filled from OKX REST.")
REST_REQUESTS = _counter(
    "rest_requests_total", "rest_requests",
    "Requests sent to OKX REST by the workers (retries included).")
REST_RETRIES = _counter(
    "rest_retries_total", "rest_retries",
    "OKX REST requests retried after a transient error.")
REST_RATE_LIMITED = _counter(
    "rest_rate_limited_total", "rest_rate_limited",
    "OKX REST responses refusing a request for its rate limit (HTTP 429 or code 50011).")

FLUSH_REQUESTS_SENT = _counter(
    "flush_requests_total", "flush_requests_sent",
    "Flushes the collectors asked for because closed candles were waiting in the buffer.")

COUNTERS: tuple[Family, ...] = (
    MESSAGES_RECEIVED, BUFFER_WRITES, CANDLES_FLUSHED, FLUSH_ERRORS, DEAD_LETTERS, DEAD_LETTERS_TRIMMED,
    MISSED_CONFIRMS, RECONNECTS, COLLECTORS_REMOVED, GAPS_FILLED, REST_REQUESTS, REST_RETRIES, REST_RATE_LIMITED,
    FLUSH_REQUESTS_SENT,
)

# --- flush duration: a summary from two counters (runs and milliseconds spent) ---------------------------
FLUSH_DURATION = Family(
    PREFIX + "flush_duration_seconds", "summary",
    "Time spent in successful flush runs (_sum) and their number (_count).")
FLUSH_DURATION_MS_FIELD = "flush_duration_ms"
FLUSH_RUNS_FIELD = "flush_runs"
FLUSH_REQUEST_WAIT = Family(
    PREFIX + "flush_request_wait_seconds", "summary",
    "How long requested flushes waited for a flush worker (_sum), and how many ran (_count); a request that "
    "expired in the queue is in flush_requests_total only.")
FLUSH_REQUEST_WAIT_MS_FIELD = "flush_request_wait_ms"
FLUSH_REQUESTS_RUN_FIELD = "flush_requests"

# --- gauges from Redis -------------------------------------------------------------------------------------
BUFFER_ENTRIES = Family(
    PREFIX + "buffer_entries", "gauge",
    "Candles waiting in Redis for a flush: part=live (being written by collectors) or taken (a flush's batch).",
    ("part",))
BUFFER_ALARM = Family(
    PREFIX + "buffer_alarm_entries", "gauge",
    "BUFFER_ALARM_ENTRIES: above this many buffered candles the status turns degraded.")
DEAD_LETTERS_STORED = Family(
    PREFIX + "dead_letters_stored", "gauge",
    "Entries on the dead-letter list now.")
REST_NEEDED = Family(
    PREFIX + "rest_needed_candles", "gauge",
    "Candles closed without a confirm push that wait to be fetched from REST.")
LAST_FLUSH = Family(
    PREFIX + "last_flush_timestamp_seconds", "gauge",
    "When the last successful flush committed (Unix time).")
COLLECTORS = Family(
    PREFIX + "collectors", "gauge",
    "Collectors registered in Redis, by state: alive (recent heartbeat) or dead (not yet removed).",
    ("state",))
SHARD_REPLICAS = Family(
    PREFIX + "shard_replicas", "gauge",
    "Collectors holding each shard now (hot standby: as many as COLLECTOR_REPLICAS; fewer means one more "
    "death costs REST repairs).",
    ("shard",))
SHARD_REPLICAS_WANTED = Family(
    PREFIX + "shard_replicas_wanted", "gauge", "COLLECTOR_REPLICAS: collectors wanted per shard.")
CHANNELS = Family(
    PREFIX + "channels", "gauge",
    "Channels per timeframe by state: fresh (a message within HEALTH_STALE_AFTER_S), quiet (the last message "
    "is older) or refused (OKX refused the subscription).",
    ("timeframe", "state", "price"))
CHANNEL_MESSAGE_AGE_MAX = Family(
    PREFIX + "channel_last_message_age_max_seconds", "gauge",
    "Seconds since the last WebSocket push of the quietest channel of each timeframe (absent when no channel "
    "of it has had a message).",
    ("timeframe", "price"))
CHANNEL_LAG_MAX = Family(
    PREFIX + "channel_lag_max_seconds", "gauge",
    "Seconds the oldest closed candle has waited for its confirmed push, worst channel of each timeframe "
    "(0 when every channel's last closed candle is confirmed; absent before any confirmed candle).",
    ("timeframe", "price"))
CHANNELS_UNCONFIRMED = Family(
    PREFIX + "channels_unconfirmed", "gauge",
    "Channels of each timeframe whose newest closed candle has no confirmed push yet (their lag is above 0).",
    ("timeframe", "price"))
SUBSCRIPTION_MESSAGE_AGE = Family(
    PREFIX + "subscription_last_message_age_seconds", "gauge",
    "Seconds since the last WebSocket push of an active subscription's channel (only with "
    "METRICS_PER_SUBSCRIPTION=true).",
    ("symbol", "timeframe", "price"))
SUBSCRIPTION_LAG = Family(
    PREFIX + "subscription_lag_seconds", "gauge",
    "Seconds the oldest closed candle of an active subscription has waited for its confirmed push "
    "(0 when the last closed candle is confirmed; only with METRICS_PER_SUBSCRIPTION=true).",
    ("symbol", "timeframe", "price"))
REPAIR_BACKLOG = Family(
    PREFIX + "repair_backlog_candles", "gauge",
    "Candles waiting for REST repair, by priority (confirm, outage, history, old), from the repair "
    "scheduler's last report; absent when there is none.",
    ("priority",))
REPAIR_DRAIN = Family(
    PREFIX + "repair_drain_per_second", "gauge",
    "Candles repaired per second lately, by priority, from the repair scheduler's last report.",
    ("priority",))
REPAIR_ETA = Family(
    PREFIX + "repair_eta_seconds", "gauge",
    "Seconds until the repair backlog is drained at the current rate (absent when it is not draining).")

# --- gauges from PostgreSQL --------------------------------------------------------------------------------
GAPS = Family(
    PREFIX + "gaps", "gauge",
    "Gap records by state: open (to fill), filling, filled, unfillable (OKX has no candles there), expired "
    "(behind the timeframe's retention horizon).",
    ("state",))
GAP_MISSING = Family(
    PREFIX + "gap_missing_candles", "gauge",
    "Candles missing in gap records when they were found, by gap state.",
    ("state",))
SUBSCRIPTIONS = Family(
    PREFIX + "subscriptions", "gauge",
    "Subscriptions by status: pending, live, stale, error (active ones) and paused.",
    ("status",))

# --- storage, from PostgreSQL's catalogue and statistics (docs/storage-design.md) -------------------------
PARTITION_BYTES = Family(
    PREFIX + "partition_bytes", "gauge",
    "Bytes on disk of each timeframe's candle partitions, indexes included (and tables retention detached but "
    "has not dropped yet).",
    ("timeframe",))
ROWS = Family(
    PREFIX + "rows", "gauge",
    "Candles stored per timeframe, from PostgreSQL's statistics (live tuples of its partitions; no count).",
    ("timeframe",))
RETENTION_HORIZON = Family(
    PREFIX + "retention_horizon_seconds", "gauge",
    "How far back each timeframe keeps candles: its retention, in seconds (the horizon is now minus this); "
    "absent for timeframes kept forever.",
    ("timeframe",))
NEXT_DROP = Family(
    PREFIX + "next_drop_timestamp_seconds", "gauge",
    "When the next partition of each timeframe with a retention may be dropped (Unix time); in the past while "
    "one waits for the maintenance task.",
    ("timeframe",))
PARTITIONS_DROPPED = Family(
    PREFIX + "partitions_dropped_total", "counter",
    "Candle partitions dropped by retention, per timeframe (counted in Redis by the maintenance task).",
    ("timeframe",))

# --- the scrape itself -------------------------------------------------------------------------------------
SOURCE_UP = Family(
    PREFIX + "metrics_source_up", "gauge",
    "Whether this scrape could read a source (redis, database); metrics of a source that is down are absent.",
    ("source",))

FAMILIES: tuple[Family, ...] = (
    *COUNTERS, FLUSH_DURATION, FLUSH_REQUEST_WAIT, BUFFER_ENTRIES, BUFFER_ALARM, DEAD_LETTERS_STORED, REST_NEEDED,
    LAST_FLUSH, REPAIR_BACKLOG, REPAIR_DRAIN, REPAIR_ETA,
    COLLECTORS, SHARD_REPLICAS, SHARD_REPLICAS_WANTED,
    CHANNELS, CHANNEL_MESSAGE_AGE_MAX, CHANNEL_LAG_MAX, CHANNELS_UNCONFIRMED,
    SUBSCRIPTION_MESSAGE_AGE, SUBSCRIPTION_LAG, GAPS, GAP_MISSING, SUBSCRIPTIONS,
    PARTITION_BYTES, ROWS, RETENTION_HORIZON, NEXT_DROP, PARTITIONS_DROPPED, SOURCE_UP,
)
# Every family name exported, as it appears in the # TYPE lines (dashboards are checked against this list).
METRIC_NAMES: tuple[str, ...] = tuple(family.name for family in FAMILIES)


# --- the exposition ----------------------------------------------------------------------------------------


class _Scrape(Collector):
    """One scrape's samples as prometheus_client metric families, in the catalogue's order."""

    def __init__(self, samples: Mapping[Family, Sequence[Sample]], families: Iterable[Family]):
        self._samples = samples
        self._families = tuple(families)

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            # prometheus_client names a counter family without its _total and adds it back when writing.
            name = family.name.removesuffix("_total") if family.type == "counter" else family.name
            metric = Metric(name, family.help, family.type)
            for sample in self._samples.get(family, ()):
                metric.add_sample(family.name + sample.suffix, _labels(family, sample), _value(sample.value))
            yield metric


def _labels(family: Family, sample: Sample) -> dict[str, str]:
    unknown = set(sample.labels) - set(family.labels)
    if unknown:
        raise ValueError(f"{family.name}: labels {sorted(unknown)} are not declared")
    return {key: str(sample.labels[key]) for key in family.labels if key in sample.labels}


def _value(value: float) -> float:
    if isinstance(value, bool):
        raise TypeError("a metric value is a number, not a bool")
    return value


def render(samples: Mapping[Family, Sequence[Sample]], families: Iterable[Family] = FAMILIES) -> str:
    """The exposition of `families` in order, each with its samples (none is fine)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(samples, families))
    return generate_latest(registry).decode()
