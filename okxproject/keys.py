"""Every Redis key okx-candles uses, in one place: the pipeline's (buffer, status, leases, repair, REST budgets),
the live stream's and the cache's. A prefix (REDIS_KEY_PREFIX) lets several copies share one Redis.

It sits in the project package, not in an app: `candles` (the stream) and `collectors` (the pipeline) both
name their keys here, and `candles` never imports `collectors`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "okx:"

    @property
    def live(self) -> str:
        """HASH "inst|bar|open_ms" -> encoded newest version of that candle, written by collectors."""
        return f"{self.prefix}buffer:live"

    @property
    def taken(self) -> str:
        """HASH: the batch a flush took from `live`; deleted only after its rows are committed."""
        return f"{self.prefix}buffer:taken"

    @property
    def last_flush(self) -> str:
        """HASH at, rows, written, rejected, duration_ms: the last flush that committed."""
        return f"{self.prefix}flush:last"

    @property
    def flush_claim(self) -> str:
        """STRING with a TTL: a flush the collector asked for ran this recently; the scheduled one gives way."""
        return f"{self.prefix}flush:claim"

    @property
    def flush_lock(self) -> str:
        return f"{self.prefix}lock:flush"

    @property
    def dead_letters(self) -> str:
        """LIST of JSON {at, reason, raw, channel}: every frame or candle refused on the way in."""
        return f"{self.prefix}deadletter"

    @property
    def repair_backlog(self) -> str:
        """STRING of JSON: the repair scheduler's last report (backlog by priority, drain rate, ETA, requests
        by endpoint), written by every repair run; read by status, the admin dashboard and /metrics."""
        return f"{self.prefix}repair:backlog"

    @property
    def repair_retry(self) -> str:
        """ZSET "inst|bar|open_ms" scored by epoch seconds: candles REST did not have confirmed yet, not to be
        asked for again before that moment."""
        return f"{self.prefix}repair:retry"

    @property
    def repair_lock(self) -> str:
        return f"{self.prefix}lock:repair"

    @property
    def health_lock(self) -> str:
        return f"{self.prefix}lock:health"

    @property
    def counters(self) -> str:
        """HASH of monotonically increasing counters (messages, flushed, dead_letters, ...)."""
        return f"{self.prefix}counters"

    @property
    def channel_status(self) -> str:
        """HASH "inst|bar" -> JSON {state, error, collector}: what changes rarely about a channel (subscribing,
        subscribed, refused by OKX; who carries it). A collector writes a row only when it changes (channel
        added, subscribe acknowledged, refused) and deletes it when the subscription is gone; how fresh the
        channel is lives in the per-bar ZSETs beside it, so nothing here is rewritten every second."""
        return f"{self.prefix}status:channels"

    def channel_seen(self, bar: str) -> str:
        """ZSET inst_id -> epoch seconds of the channel's last message, one per bar. Each status tick, a
        collector adds only the channels that had a message since its last tick (ZADD GT: of two collectors
        carrying a channel, hot standby, the newest wins whatever order their writes land in). Its lowest
        scores are the bar's quietest channels: the health task reads the range older than its cutoff, and
        a channel whose collector died simply stops moving here until it falls into that range."""
        return f"{self.prefix}status:seen:{bar}"

    def channel_confirmed(self, bar: str) -> str:
        """ZSET inst_id -> open time (epoch ms) of the channel's last confirmed candle, one per bar, written
        by the collectors when it changes (ZADD GT). Its lowest scores are the bar's worst confirmation
        lags, so status pages read a few entries per bar instead of parsing every channel's status."""
        return f"{self.prefix}status:confirmed:{bar}"

    def channel_refused(self, bar: str) -> str:
        """SET of the inst_ids whose channel of this bar OKX refused (the row's state `invalid`), kept beside
        `channel_status` by the collectors: the health task finds subscriptions turned `error` in it
        without reading every row."""
        return f"{self.prefix}status:refused:{bar}"

    @property
    def health_audit(self) -> str:
        """HASH of the health task's two slow audits' cursors: `subscription` (the last subscription id
        re-checked in full) and `rows` (the HSCAN cursor of `channel_status` for rows nobody wants)."""
        return f"{self.prefix}health:audit"

    @property
    def collectors(self) -> str:
        """ZSET collector id scored by its last heartbeat (epoch seconds)."""
        return f"{self.prefix}collectors"

    def collector(self, collector_id: str) -> str:
        """HASH of one collector's status (connections, counters), with a TTL."""
        return f"{self.prefix}collector:{collector_id}"

    def lease(self, shard: int, slot: int = 0) -> str:
        """STRING: the collector id holding slot `slot` of a shard (COLLECTOR_REPLICAS slots per shard), with a
        TTL. Slot 0 keeps the name it had before replicas, so a deployment of one replica reads as before."""
        return f"{self.prefix}lease:shard:{shard}" if slot == 0 else f"{self.prefix}lease:shard:{shard}:{slot}"

    def lease_slots(self, shard: int, replicas: int) -> list[str]:
        return [self.lease(shard, slot) for slot in range(replicas)]

    def webhook_sent(self, subscription_id: int, digest: str) -> str:
        """STRING with a TTL: this body was queued for this subscription's webhook (deliver once per body)."""
        return f"{self.prefix}webhook:sent:{subscription_id}:{digest}"

    @property
    def lease_hosts(self) -> str:
        """HASH collector id → the host it runs on, written with its leases: assignment spreads a shard's
        replicas over hosts, and the dashboard says which host holds each."""
        return f"{self.prefix}lease:hosts"

    @property
    def control(self) -> str:
        """Pub/sub channel: a message means "subscriptions changed, reconcile now"."""
        return f"{self.prefix}control"

    @property
    def cache(self) -> str:
        """Prefix of Django's cache (the API throttle counters), set as CACHES' KEY_PREFIX."""
        return f"{self.prefix}cache"

    @property
    def rate_limits(self) -> str:
        """Prefix of the shared REST budgets: one ZSET per budget (`rate_limit`), requests admitted in its
        window scored by their start (microseconds of Redis' clock). Every REST client of every process
        draws on them (collectors.shared.rest)."""
        return f"{self.prefix}ratelimit:"

    def rate_limit(self, budget: str) -> str:
        """ZSET of one REST budget (an endpoint path, or `path:instType` for the instrument lists)."""
        return f"{self.rate_limits}{budget}"

    def collectors_counted(self, field_name: str) -> str:
        """HASH collector id -> the value of its `field_name` already added to the shared counter."""
        return f"{self.prefix}collectors:counted:{field_name}"

    @property
    def verify_reports(self) -> str:
        """LIST of the last re-verification reports (JSON), newest first."""
        return f"{self.prefix}verify:reports"

    @property
    def stream_feed(self) -> str:
        """STREAM of flushed candle rows for the live push (candles.stream), trimmed to its recent past."""
        return f"{self.prefix}stream:feed"

    @property
    def stream_feed_seq(self) -> str:
        """STRING counter: the sequence number of the last stream feed entry."""
        return f"{self.prefix}stream:feed:seq"

    @property
    def stream_listening(self) -> str:
        """STRING with a TTL: some web process has a live-stream client, so flushes feed the stream."""
        return f"{self.prefix}stream:listening"


def priced_bar(bar: str, price: str = "trade") -> str:
    """The bar part of a series' Redis names: `1m` for trade candles, `mark:1m` / `index:1m` for the other kinds.

    Every per-bar key (`channel_seen`, `channel_confirmed`, `channel_refused`) and every `inst|bar…` field takes
    this part, so a mark or index series has entries of its own beside the trade series of the same id and bar,
    and the trade names (all that existed before price kinds) are unchanged."""
    return bar if price == "trade" else f"{price}:{bar}"


def channel_parts(channel: tuple[str, ...]) -> tuple[str, str]:
    """(inst_id, priced bar) of a channel (`collectors.okx.protocol.Channel` or the plain tuple equal to it)."""
    return (channel[0], channel[1]) if len(channel) == 2 else (channel[0], f"{channel[2]}:{channel[1]}")


def candle_field(inst_id: str, bar: str, open_time_ms: int, price: str = "trade") -> str:
    """`inst|bar|open_ms`; a mark-price or index candle's bar part names its kind (`BTC-USDT-SWAP|mark:1m|…`), so
    the field keeps its three parts and never equals the trade candle's."""
    return f"{inst_id}|{priced_bar(bar, price)}|{open_time_ms}"


def split_candle_field(field: str) -> tuple[str, str, int]:
    """(inst_id, bar part, open_ms): the bar part carries a mark or index candle's kind (`split_priced_bar`)."""
    inst_id, bar, open_ms = field.rsplit("|", 2)
    return inst_id, bar, int(open_ms)


def split_priced_bar(bar_part: str) -> tuple[str, str]:
    """(bar, price) of a field's bar part: `mark:1m` → ("1m", "mark"), `1m` → ("1m", "trade")."""
    price, _, bar = bar_part.rpartition(":")
    return bar, price or "trade"
