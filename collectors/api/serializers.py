"""Response shapes of /status, /status/{symbol} and /health: they serialize the responses and document them.

Epoch seconds from the collectors' status become ISO 8601 UTC here; a value no datetime can hold (a garbled
status entry) becomes null rather than an error.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from collectors.api.subscriptions import epoch_s_to_datetime
from collectors.api.system import CHECK_NAMES, DEGRADED, FAIL, HEALTHY, PASS, UNHEALTHY, UNKNOWN
from collectors.monitoring.repair_report import PRICE_ENDPOINTS

STATUSES = (HEALTHY, DEGRADED, UNHEALTHY)


class EpochDateTimeField(serializers.DateTimeField):
    """Epoch seconds (as the collectors write them) shown as an ISO 8601 UTC date-time."""

    def to_representation(self, value: Any) -> str | None:
        moment = epoch_s_to_datetime(value) if isinstance(value, int | float) else value
        return None if moment is None else super().to_representation(moment)


@extend_schema_field({"type": "object", "additionalProperties": {"type": "number"}})
class NumberMapField(serializers.Field):
    """A name → number map, numbers kept as they are (integers stay integers)."""

    def to_representation(self, value: dict[str, int | float]) -> dict[str, int | float]:
        return dict(value)


# --- health ------------------------------------------------------------------------------------------------


class HealthCheckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=(PASS, FAIL, UNKNOWN),
                                     help_text="unknown: not evaluated because Redis or PostgreSQL is down.")
    impact = serializers.ChoiceField(choices=(UNHEALTHY, DEGRADED), help_text="What a failure of it makes the system.")
    message = serializers.CharField()


class HealthChecksSerializer(serializers.Serializer):
    database = HealthCheckSerializer(help_text="PostgreSQL answers SELECT 1 on a new connection.")
    redis = HealthCheckSerializer(help_text="Redis (REDIS_URL) answers PING.")
    broker = HealthCheckSerializer(help_text="The Celery broker (CELERY_BROKER_URL) answers PING, when it is Redis.")
    collectors = HealthCheckSerializer(help_text="A collector is alive whenever subscriptions are active.")
    replicas = HealthCheckSerializer(help_text="With COLLECTOR_REPLICAS > 1: every shard is held by that many "
                                               "collectors while subscriptions are active (hot standby).")
    buffer = HealthCheckSerializer(help_text="Buffered candles stay at or below BUFFER_ALARM_ENTRIES.")
    flush = HealthCheckSerializer(help_text="A flush ran within 10 × FLUSH_INTERVAL_S while candles wait.")
    subscriptions = HealthCheckSerializer(help_text="No active subscription is stale or in error.")


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=STATUSES)
    timestamp = serializers.DateTimeField()
    checks = HealthChecksSerializer()
    failing = serializers.ListField(child=serializers.ChoiceField(choices=CHECK_NAMES),
                                    help_text="Names of the failing checks.")


class LivenessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=("alive",))
    timestamp = serializers.DateTimeField()
    pid = serializers.IntegerField()
    uptime_s = serializers.FloatField(help_text="Seconds since this server process loaded the application.")


# --- status ------------------------------------------------------------------------------------------------


class ServiceProbeSerializer(serializers.Serializer):
    up = serializers.BooleanField()
    latency_ms = serializers.FloatField(allow_null=True, help_text="null when the probe did not finish in time.")
    error = serializers.CharField(help_text="Why the probe failed (or why it was not made); empty when up.")
    checked = serializers.BooleanField(help_text="False when the service could not be probed (a non-Redis broker).")


class CollectorCountsSerializer(serializers.Serializer):
    alive = serializers.IntegerField()
    total = serializers.IntegerField(help_text="Registered in Redis, alive or not yet removed.")


class ServicesSerializer(serializers.Serializer):
    database = ServiceProbeSerializer()
    redis = ServiceProbeSerializer()
    broker = ServiceProbeSerializer()
    collectors = CollectorCountsSerializer(allow_null=True, help_text="null when Redis is down.")


class BufferSerializer(serializers.Serializer):
    live = serializers.IntegerField(help_text="Candles written by collectors since the last flush took a batch.")
    taken = serializers.IntegerField(help_text="Candles of a flush's batch not yet committed.")
    depth = serializers.IntegerField(help_text="live + taken.")
    alarm_entries = serializers.IntegerField(help_text="BUFFER_ALARM_ENTRIES.")


class LastFlushSerializer(serializers.Serializer):
    at = EpochDateTimeField(allow_null=True)
    age_s = serializers.FloatField(allow_null=True)
    rows = serializers.IntegerField(allow_null=True, help_text="Candles in the batch.")
    written = serializers.IntegerField(allow_null=True, help_text="Rows inserted or changed.")
    rejected = serializers.IntegerField(allow_null=True, help_text="Rows refused (dead-lettered).")
    duration_ms = serializers.FloatField(allow_null=True)


class ShardHolderSerializer(serializers.Serializer):
    slot = serializers.IntegerField(help_text="0: the primary, which writes the channels' status rows.")
    collector = serializers.CharField()
    host = serializers.CharField(allow_null=True, help_text="The host the collector named in its leases.")


class ShardsSerializer(serializers.Serializer):
    replicas = serializers.IntegerField(help_text="COLLECTOR_REPLICAS: collectors wanted per shard.")
    shards = serializers.IntegerField(help_text="COLLECTOR_SHARDS.")
    short = serializers.ListField(child=serializers.IntegerField(),
                                  help_text="Shards held by fewer collectors than `replicas`.")
    holders = serializers.ListField(child=ShardHolderSerializer(many=True),
                                    help_text="Per shard (by number), the collectors holding it, slot 0 first.")


class PipelineSerializer(serializers.Serializer):
    buffer = BufferSerializer()
    dead_letters = serializers.IntegerField(help_text="Entries on the dead-letter list.")
    rest_needed = serializers.IntegerField(help_text="Candles closed without a confirm push, waiting for REST: the "
                                                     "repair report's confirm backlog when there is one.")
    last_flush = LastFlushSerializer(allow_null=True, help_text="null until a flush has committed.")
    counters = NumberMapField(help_text="Every counter in Redis by name (see docs/status-and-metrics.md).")
    shards = ShardsSerializer(help_text="Which collectors hold each shard, on which host (hot standby).")


class GapFiguresSerializer(serializers.Serializer):
    gaps = serializers.IntegerField()
    missing_candles = serializers.IntegerField(help_text="Open times missing when the gaps were found.")


class GapsByPrioritySerializer(serializers.Serializer):
    confirm = GapFiguresSerializer(help_text="Missed confirms: candles closed without a confirm push.")
    outage = GapFiguresSerializer(help_text="Candles missed while a collector or OKX was away.")
    history = GapFiguresSerializer(help_text="History asked for by backfill_from.")
    old = GapFiguresSerializer(help_text="Gaps found long after they happened.")


class GapsSerializer(serializers.Serializer):
    open = serializers.IntegerField()
    filling = serializers.IntegerField()
    filled = serializers.IntegerField(help_text="Exact up to 50,000 gap rows; above, PostgreSQL's row estimate of "
                                                "the gap table minus the other states (filled gaps only accumulate).")
    unfillable = serializers.IntegerField()
    expired = serializers.IntegerField(help_text="Gaps behind their bar's retention horizon (expired by policy): "
                                                 "never filled, pruned after GAP_KEEP_DAYS.")
    missing_candles = serializers.IntegerField(help_text="Candles missing in open and filling gaps.")
    unfinished_by_priority = GapsByPrioritySerializer(help_text="Open and filling gaps by repair priority.")


class RepairBacklogEntrySerializer(serializers.Serializer):
    candles = serializers.IntegerField()
    units = serializers.IntegerField(help_text="Repair units (REST requests' worth of candles) queued.")


class RepairBacklogSerializer(serializers.Serializer):
    confirm = RepairBacklogEntrySerializer()
    outage = RepairBacklogEntrySerializer()
    history = RepairBacklogEntrySerializer()
    old = RepairBacklogEntrySerializer()


class RepairRatesSerializer(serializers.Serializer):
    confirm = serializers.FloatField()
    outage = serializers.FloatField()
    history = serializers.FloatField()
    old = serializers.FloatField()


class EndpointCountsSerializer(serializers.Serializer):
    """Trade candles' `candles` and `history`, then the mark-price and index endpoints by OKX's names."""

    candles = serializers.IntegerField()
    history = serializers.IntegerField()

    def get_fields(self) -> dict[str, serializers.Field]:
        # OKX's endpoint names have hyphens, which no class attribute can.
        return {**super().get_fields(), **{name: serializers.IntegerField() for name in PRICE_ENDPOINTS}}


class EndpointRatesSerializer(serializers.Serializer):
    candles = serializers.FloatField()
    history = serializers.FloatField()

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**super().get_fields(), **{name: serializers.FloatField() for name in PRICE_ENDPOINTS}}


class RepairSerializer(serializers.Serializer):
    updated_at = EpochDateTimeField(allow_null=True, help_text="When the repair scheduler wrote this report.")
    backlog = RepairBacklogSerializer(help_text="Candles (and repair units) waiting, by priority.")
    drained_per_s = RepairRatesSerializer(help_text="Candles repaired per second lately, by priority.")
    eta_s = serializers.FloatField(allow_null=True,
                                   help_text="Seconds until the backlog is drained at that rate; null: not draining.")
    requests = EndpointCountsSerializer(help_text="REST requests sent, by endpoint.")
    budget_per_s = EndpointRatesSerializer(help_text="OKX's REST budget, requests per second, by endpoint.")


class CollectorConnectionSerializer(serializers.Serializer):
    shard = serializers.IntegerField()
    state = serializers.CharField()
    conn_id = serializers.CharField(allow_null=True)
    channels = serializers.IntegerField()
    subscribed = serializers.IntegerField()
    messages = serializers.IntegerField()
    reconnects = serializers.IntegerField()
    errors = serializers.IntegerField()
    last_message_at = EpochDateTimeField(allow_null=True)
    detail = serializers.CharField()


class CollectorSerializer(serializers.Serializer):
    id = serializers.CharField()
    alive = serializers.BooleanField(help_text="Heartbeat within three lease TTLs.")
    heartbeat_at = EpochDateTimeField(allow_null=True)
    host = serializers.CharField(allow_null=True)
    pid = serializers.IntegerField(allow_null=True)
    started_at = EpochDateTimeField(allow_null=True)
    shards = serializers.ListField(child=serializers.IntegerField())
    channels = serializers.IntegerField()
    messages = serializers.IntegerField()
    reconnects = serializers.IntegerField()
    errors = serializers.IntegerField()
    connections = CollectorConnectionSerializer(many=True)
    details_missing = serializers.BooleanField(help_text="True when its status hash expired or is unreadable.")


class SubscriptionStatusSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    active = serializers.BooleanField(help_text="False when paused.")
    status = serializers.CharField(help_text="pending, live, stale or error, as last set by the health task.")
    status_message = serializers.CharField()
    open_gaps = serializers.IntegerField(help_text="Gaps open or being filled.")
    missing_candles = serializers.IntegerField(help_text="Candles missing in those gaps.")
    channel_state = serializers.CharField(allow_null=True,
                                          help_text="subscribed, pending or invalid; null when no collector "
                                                    "reports the channel (or Redis is down).")
    last_message_at = serializers.DateTimeField(allow_null=True)
    last_message_age_s = serializers.FloatField(allow_null=True)
    last_confirmed_open_time = serializers.DateTimeField(allow_null=True,
                                                         help_text="Open time of the last confirmed candle pushed.")
    lag_s = serializers.FloatField(allow_null=True,
                                   help_text="Seconds the oldest closed candle has waited for its confirmed push.")
    reconnects = serializers.IntegerField(allow_null=True,
                                          help_text="Reconnects of the collector serving the channel, since it "
                                                    "started.")
    collector = serializers.CharField(allow_null=True)
    price = serializers.CharField(help_text="The series' price kind: trade, mark (mark price) or index.")


class SubscriptionStatesSerializer(serializers.Serializer):
    live = serializers.IntegerField()
    stale = serializers.IntegerField()
    error = serializers.IntegerField()
    pending = serializers.IntegerField()
    paused = serializers.IntegerField()


class SubscriptionCountsSerializer(serializers.Serializer):
    by_state = SubscriptionStatesSerializer(help_text="Active subscriptions by status (as set by the health "
                                                      "task), and the paused ones.")
    active = serializers.IntegerField()
    paused = serializers.IntegerField()
    total = serializers.IntegerField()
    detail = serializers.CharField(help_text="Where each subscription's status is listed, filtered and paged.")


class LagSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    lag_s = serializers.FloatField(help_text="Seconds the oldest closed candle has waited for its confirmed push.")
    last_confirmed_open_time = serializers.DateTimeField(allow_null=True)
    price = serializers.CharField(help_text="The series' price kind: trade, mark (mark price) or index.")


class TroubledExampleSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    status_message = serializers.CharField()
    price = serializers.CharField(help_text="The series' price kind: trade, mark (mark price) or index.")


class TroubledSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    examples = TroubledExampleSerializer(many=True, help_text="The first few, by symbol and bar.")


class ProblemsSerializer(serializers.Serializer):
    top = serializers.ListField(child=serializers.CharField(),
                                help_text="One line per problem worth a look, most severe first; empty when none.")
    error = TroubledSerializer(allow_null=True, help_text="Active subscriptions in error (OKX refused the channel).")
    stale = TroubledSerializer(allow_null=True, help_text="Active subscriptions without a recent message.")
    gaps_by_priority = GapsByPrioritySerializer(allow_null=True, help_text="Open and filling gaps by priority.")
    dead_letters = serializers.IntegerField(allow_null=True)


class StatusSerializer(HealthSerializer):
    services = ServicesSerializer()
    pipeline = PipelineSerializer(allow_null=True, help_text="null when Redis is down.")
    gaps = GapsSerializer(allow_null=True, help_text="null when PostgreSQL is down.")
    collectors = CollectorSerializer(many=True, allow_null=True, help_text="null when Redis is down.")
    subscriptions = SubscriptionCountsSerializer(
        allow_null=True, help_text="Counts by state (a summary: each subscription's status is at "
                                   "/api/v1/status/subscriptions); null when PostgreSQL is down.")
    worst_lags = LagSerializer(many=True, allow_null=True,
                               help_text="The channels with the longest confirmation lag (lag > 0 only), worst "
                                         "first, at most 10; null when Redis or PostgreSQL is down.")
    problems = ProblemsSerializer()
    repair = RepairSerializer(allow_null=True, help_text="The repair scheduler's last report; null when there is "
                                                         "none (or Redis is down).")


class SubscriptionStatusPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Subscriptions matching the filters.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    live_status_available = serializers.BooleanField(
        help_text="False when Redis could not be read: the channel fields are null then.")
    results = SubscriptionStatusSerializer(many=True)


class SymbolStatusSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    inst_type = serializers.CharField()
    state = serializers.CharField(help_text="OKX's instrument state (live, suspend, ...).")
    delisted_at = serializers.DateTimeField(allow_null=True)
    timestamp = serializers.DateTimeField()
    live_status_available = serializers.BooleanField(
        help_text="False when Redis could not be read: the channel fields are null then.")
    timeframes = SubscriptionStatusSerializer(
        many=True, help_text="One entry per subscribed timeframe (paused ones too); empty when none.")
