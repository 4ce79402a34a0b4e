"""Each subscription with its channel's live status: what /status, /status/{symbol} and /metrics show per pair.

The subscription (status, message) comes from PostgreSQL, where the health task keeps it; the channel's last
message, last confirmed candle and reconnects come from the collectors' status in Redis, read by the caller
(`channels` is None when Redis could not be read, and the live fields are None then).

Two measures of a channel's delay, both in seconds:
* message age: since the last push of the channel (any push, open or closed candle);
* lag: how long the oldest closed candle has waited for its confirmed push. The candle after the last
  confirmed one closes one bar after it opened; until then the lag is 0, and it grows from that moment on
  until a newer confirmed candle arrives. OKX does not promise confirm pushes: a candle it never confirms
  (fetched from REST instead) shows as lag of up to one bar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, QuerySet, Sum
from redis import RedisError

from candles.bars import BarSpec
from candles.models import Gap, GapState, Subscription, Timeframe
from collectors.api.probes import status_redis
from collectors.monitoring.status import ChannelStatus, channel_statuses, priced_bars
from collectors.shared.connections import pipeline_keys
from okxproject.keys import Keys, priced_bar, split_priced_bar

logger = logging.getLogger(__name__)

UNFINISHED_GAPS = (GapState.OPEN, GapState.FILLING)
# Bounds each status query, so a status page never hangs on a database that accepts connections but stalls.
STATEMENT_TIMEOUT_MS = 2_000


def limit_statements() -> None:
    """Call first inside `transaction.atomic()`: the transaction's statements time out (SET LOCAL)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    symbol: str
    timeframe: str
    active: bool
    status: str
    status_message: str
    open_gaps: int
    missing_candles: int  # in unfinished gaps
    channel_state: str | None = None
    last_message_at: datetime | None = None
    last_message_age_s: float | None = None
    last_confirmed_open_time: datetime | None = None
    lag_s: float | None = None
    reconnects: int | None = None
    collector: str | None = None
    price: str = "trade"  # the series' price kind: trade, mark or index


def epoch_s_to_datetime(seconds: float | None) -> datetime | None:
    """None for None and for values no datetime can hold (a garbled status must not fail a page)."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def age_s(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def confirmation_lag_s(spec: BarSpec, last_confirmed_open_ms: int | None, now_ms: int) -> float | None:
    """Seconds the candle after the last confirmed one has been closed without a confirmed version (≥ 0)."""
    if last_confirmed_open_ms is None:
        return None
    try:
        next_close_ms = spec.following(spec.following(spec.floor(last_confirmed_open_ms)))
    except (ValueError, OverflowError):
        return None
    return round(max(0, now_ms - next_close_ms) / 1000, 3)


def bar_specs() -> dict[int, BarSpec]:
    """Every timeframe's bar arithmetic by id (one small query)."""
    return {tf.pk: tf.spec for tf in Timeframe.objects.all()}


def bar_specs_by_code() -> dict[str, BarSpec]:
    """Every timeframe's bar arithmetic by code (one small query)."""
    return {tf.code: tf.spec for tf in Timeframe.objects.all()}


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A subscription as PostgreSQL has it, with its bar arithmetic and unfinished gaps."""

    symbol: str
    timeframe: str
    spec: BarSpec
    active: bool
    status: str
    status_message: str
    open_gaps: int = 0
    missing_candles: int = 0
    price: str = "trade"

    @property
    def channel_key(self) -> tuple[str, str]:
        """The (inst_id, priced bar) its channel's status is kept under (`keys.priced_bar`)."""
        return self.symbol, priced_bar(self.timeframe, self.price)


RECORD_FIELDS = ("pk", "instrument__inst_id", "timeframe__code", "timeframe_id", "is_active", "status",
                 "status_message", "instrument__price")


def subscription_records(
    *, instrument_id: int | list[int] | None = None, with_gaps: bool = True, subscriptions: QuerySet | None = None,
) -> list[SubscriptionRecord]:
    """Every subscription (of one instrument, or of the `subscriptions` queryset, e.g. one page of a filtered
    list), by symbol and bar order. Three queries at most; gaps are counted only for the subscriptions read."""
    if subscriptions is None:
        subscriptions = Subscription.objects.all()
    instrument_ids = [instrument_id] if isinstance(instrument_id, int) else instrument_id
    if instrument_ids is not None:
        subscriptions = subscriptions.filter(instrument_id__in=instrument_ids)
    rows = list(subscriptions.values_list(*RECORD_FIELDS))
    if not rows:
        return []
    gaps: dict[int, tuple[int, int]] = {}
    if with_gaps:
        unfinished = Gap.objects.filter(state__in=UNFINISHED_GAPS)
        if instrument_ids is not None:
            unfinished = unfinished.filter(subscription__instrument_id__in=instrument_ids)
        elif subscriptions.query.is_sliced or subscriptions.query.where:
            unfinished = unfinished.filter(subscription_id__in=[row[0] for row in rows])
        per_subscription = unfinished.order_by().values("subscription_id").annotate(n=Count("pk"), m=Sum("missing"))
        gaps = {sub_id: (n, missing or 0) for sub_id, n, missing in
                per_subscription.values_list("subscription_id", "n", "m")}
    specs = bar_specs()
    return [
        SubscriptionRecord(symbol, bar, specs[timeframe_id], active, status, message, *gaps.get(pk, (0, 0)), price)
        for pk, symbol, bar, timeframe_id, active, status, message, price in rows
    ]


def subscription_row(record: SubscriptionRecord, channel: ChannelStatus | None, now: float) -> SubscriptionRow:
    """The record joined with its channel's status (None: not reported by any collector, or Redis down)."""
    r = record
    if channel is None:
        return SubscriptionRow(r.symbol, r.timeframe, r.active, r.status, r.status_message, r.open_gaps,
                               r.missing_candles, price=r.price)
    confirmed_open = channel.last_confirmed_open
    return SubscriptionRow(
        r.symbol, r.timeframe, r.active, r.status, r.status_message, r.open_gaps, r.missing_candles,
        channel_state=channel.state,
        last_message_at=epoch_s_to_datetime(channel.last_message_at),
        last_message_age_s=age_s(channel.last_message_at, now),
        last_confirmed_open_time=None if confirmed_open is None else epoch_s_to_datetime(confirmed_open / 1000),
        lag_s=confirmation_lag_s(r.spec, confirmed_open, int(now * 1000)),
        reconnects=channel.reconnects,
        collector=channel.collector,
        price=r.price,
    )


def subscription_rows(
    records: list[SubscriptionRecord], channels: dict[tuple[str, str], ChannelStatus] | None, now: float,
) -> list[SubscriptionRow]:
    return [subscription_row(r, None if channels is None else channels.get(r.channel_key), now)
            for r in records]


def _with_channels(records: list[SubscriptionRecord], now: float) -> tuple[list[SubscriptionRow], bool]:
    """The records joined with their channels (one HMGET of just those), and whether Redis could be read."""
    if not records:
        return [], True
    try:
        channels = channel_statuses(status_redis(), pipeline_keys(), pairs=[r.channel_key for r in records])
    except RedisError as exc:
        logger.warning("channel statuses could not be read: %s: %s", type(exc).__name__, exc)
        return subscription_rows(records, None, now), False
    return subscription_rows(records, channels, now), True


def subscription_page_rows(ids: list[int], *, now: float) -> tuple[list[SubscriptionRow], bool]:
    """One page of subscriptions (by id, in the model's order) with their gaps and channels: a constant
    number of queries and one Redis read of the page's channels, whatever the page size."""
    with transaction.atomic():
        limit_statements()
        records = subscription_records(subscriptions=Subscription.objects.filter(pk__in=ids)) if ids else []
    return _with_channels(records, now)


def instrument_subscription_rows(*, instrument_id: int | list[int], now: float) -> tuple[list[SubscriptionRow], bool]:
    """The subscriptions of one instrument row, or of several (an id's trade, mark-price and index rows), with
    their channels, and whether Redis could be read for them."""
    with transaction.atomic():
        limit_statements()
        records = subscription_records(instrument_id=instrument_id)
    return _with_channels(records, now)


@dataclass(frozen=True, slots=True)
class Lag:
    symbol: str
    timeframe: str
    lag_s: float
    last_confirmed_open_time: datetime | None
    price: str = "trade"


def worst_lags(redis: Any, keys: Keys, specs: dict[str, BarSpec], *, now: float, limit: int) -> list[Lag]:
    """The `limit` channels whose closed candles have waited longest for a confirmed push (lag > 0 only).

    Reads the `limit` oldest entries of each bar's `Keys.channel_confirmed` ZSET (one round trip, at most
    bars × limit entries, each price kind's bars apart): a bar's worst lags are its oldest last-confirmed open
    times, so the cost does not grow with the number of instruments.
    """
    if limit <= 0 or not specs:
        return []
    bars = priced_bars(specs)
    pipe = redis.pipeline(transaction=False)
    for bar in bars:
        pipe.zrange(keys.channel_confirmed(bar), 0, limit - 1, withscores=True)
    now_ms = int(now * 1000)
    lags: list[Lag] = []
    for part, entries in zip(bars, pipe.execute(), strict=True):
        bar, price = split_priced_bar(part)
        for member, score in entries:
            confirmed_open = int(score)
            lag = confirmation_lag_s(specs[bar], confirmed_open, now_ms)
            if lag:
                symbol = member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)
                lags.append(Lag(symbol, bar, lag, epoch_s_to_datetime(confirmed_open / 1000), price))
    lags.sort(key=lambda lag: (-lag.lag_s, lag.symbol, lag.timeframe, lag.price))
    return lags[:limit]
