"""Writes of subscriptions: creating, re-activating and pausing them (used by commands, admin and API)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from candles.models import Instrument, PriceKind, Subscription, SubscriptionStatus, Timeframe
from candles.price_series import PriceSeriesError, price_bars_check, price_series_id
from candles.signals import subscriptions_changed

logger = logging.getLogger(__name__)


class UnknownNames(ValueError):
    """Names that are not subscribable, by kind ("instruments", "timeframes"); every bad one, not the first."""

    def __init__(self, unknown: dict[str, list[str]]):
        self.unknown = {kind: names for kind, names in unknown.items() if names}
        super().__init__("; ".join(f"unknown {kind}: {', '.join(names)}" for kind, names in self.unknown.items()))

    @property
    def kind(self) -> str:
        return next(iter(self.unknown))

    @property
    def names(self) -> list[str]:
        return self.unknown[self.kind]


@dataclass
class SubscribeResult:
    created: list[Subscription] = field(default_factory=list)
    reactivated: list[Subscription] = field(default_factory=list)
    unchanged: list[Subscription] = field(default_factory=list)

    @property
    def subscriptions(self) -> list[Subscription]:
        return self.created + self.reactivated + self.unchanged


def subscriptions_create(
    *, inst_ids: Iterable[str], bars: Iterable[str], backfill_from: datetime | None = None, webhook_url: str = "",
    price: str = PriceKind.TRADE,
) -> SubscribeResult:
    """Subscribe every instrument × bar of the `price` series (trade, mark or index; docs/price-kinds.md);
    idempotent for existing pairs (a paused one is resumed).

    Instruments must be known and live; bars must be active, matched verbatim (`1m` is not `1M`). The pairs
    become explicit: a rule that held one lets go of it (see candles.rules). Set-based whatever the number of
    pairs: one INSERT … ON CONFLICT DO NOTHING for the new ones, one UPDATE for the paused ones, one read of
    them all; the collectors are nudged once after commit.

    Raises, in this order (the order of the reads' checks): PriceSeriesError INVALID_TIMEFRAMES for 1s with mark
    or index; PriceSeriesError INVALID_PRICE (details `invalid_symbols`) for symbols that cannot have `price`
    candles (an instrument id with index, a spot pair with mark); UnknownNames for the rest.
    """
    inst_ids, bars = list(dict.fromkeys(inst_ids)), list(dict.fromkeys(bars))
    price_bars_check(price, bars)
    now = timezone.now()
    instruments = {i.inst_id: i for i in Instrument.objects.filter(inst_id__in=inst_ids, price=price,
                                                                   state="live", delisted_at__isnull=True)
                   .exclude(expires_at__lte=now)}
    timeframes = {t.code: t for t in Timeframe.objects.filter(code__in=bars, is_active=True)}
    unknown = {"instruments": [i for i in inst_ids if i not in instruments],
               "timeframes": [b for b in bars if b not in timeframes]}
    if price != PriceKind.TRADE and unknown["instruments"]:
        _refuse_other_kinds(unknown["instruments"], price)
    if any(unknown.values()):
        raise UnknownNames(unknown)
    instrument_ids = [i.pk for i in instruments.values()]
    timeframe_ids = [t.pk for t in timeframes.values()]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_INSERT_MISSING, {"instruments": instrument_ids, "timeframes": timeframe_ids, "now": now,
                                         "backfill_from": backfill_from, "webhook_url": webhook_url})
        created_ids = {row[0] for row in cursor.fetchall()}
        # One UPDATE resumes the paused pairs and takes the active ones a rule holds away from it (explicit
        # from now on: removing the rule later does not stop what was asked for by name; they stay
        # "unchanged"). Two statements scanned the 27,000 pairs twice.
        cursor.execute(_RESUME_AND_RELEASE, {"instruments": instrument_ids, "timeframes": timeframe_ids,
                                             "now": now})
        reactivated_ids = {sub_id for sub_id, was_active in cursor.fetchall() if not was_active}
        # Not select_related: building an Instrument and a Timeframe per row cost two thirds of the time at 27,000
        # pairs; the few objects loaded above are attached instead.
        subscriptions = {
            (sub.instrument_id, sub.timeframe_id): sub
            for sub in Subscription.objects.filter(instrument_id__in=instrument_ids, timeframe_id__in=timeframe_ids)
        }
        if created_ids or reactivated_ids:
            transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
    result = SubscribeResult()
    instrument_field, timeframe_field = Subscription._meta.get_field("instrument"), Subscription._meta.get_field(
        "timeframe")
    for inst_id in inst_ids:
        for bar in bars:
            instrument, timeframe = instruments[inst_id], timeframes[bar]
            sub = subscriptions[instrument.pk, timeframe.pk]
            # The ids are already right; only the caches are filled (the descriptors' checks cost 0.3 s here).
            instrument_field.set_cached_value(sub, instrument)
            timeframe_field.set_cached_value(sub, timeframe)
            if sub.pk in created_ids:
                result.created.append(sub)
            elif sub.pk in reactivated_ids:
                result.reactivated.append(sub)
            else:
                result.unchanged.append(sub)
    return result


def _refuse_other_kinds(inst_ids: list[str], price: str) -> None:
    """PriceSeriesError INVALID_PRICE naming every one of `inst_ids` (none of them a live `price` series) that
    exists but cannot have `price` candles, with the reads' reasons; the others are merely unknown or not live.

    A few queries per symbol, spent only on a refused request."""
    refused: dict[str, str] = {}
    for inst_id in inst_ids:
        try:
            # The bar does not matter any more: price_bars_check passed.
            price_series_id(inst_id, price, "1m")
        except PriceSeriesError as exc:
            if exc.code == "INVALID_PRICE":
                refused[inst_id] = str(exc)
    if refused:
        raise PriceSeriesError("INVALID_PRICE", " ".join(refused.values()),
                               {"price": price, "invalid_symbols": list(refused)})


_INSERT_MISSING = """
INSERT INTO candles_subscription (
    instrument_id, timeframe_id, is_active, status, status_message, backfill_from, webhook_url, webhook_failures,
    webhook_last_error, created_at, updated_at)
SELECT i, t, true, 'pending', '', %(backfill_from)s, %(webhook_url)s, 0, '', %(now)s, %(now)s
FROM unnest(%(instruments)s::integer[]) AS i CROSS JOIN unnest(%(timeframes)s::smallint[]) AS t
ON CONFLICT (instrument_id, timeframe_id) DO NOTHING
RETURNING id
"""

_RESUME_AND_RELEASE = """
UPDATE candles_subscription s
SET is_active = true,
    status = CASE WHEN old.is_active THEN old.status ELSE 'pending' END,
    rule_id = NULL,
    ended_at = NULL,
    updated_at = CASE WHEN old.is_active THEN old.updated_at ELSE %(now)s END
FROM candles_subscription old
WHERE old.id = s.id
  AND s.instrument_id = ANY(%(instruments)s::integer[]) AND s.timeframe_id = ANY(%(timeframes)s::smallint[])
  AND (NOT s.is_active OR s.rule_id IS NOT NULL)
RETURNING s.id, old.is_active
"""


def subscriptions_end_finished(*, now: datetime | None = None, notify: bool = True) -> int:
    """End the active subscriptions of instruments that expired (`expires_at` passed) or were delisted.

    One UPDATE, whatever the number of subscriptions; it costs what is active on such instruments, so the
    periodic health run can call it. Each gets `status_message` "expired 2026-12-25 08:00 UTC" (or "delisted
    …") and `ended_at`, so a rule may resume it if the instrument comes back. Returns how many it ended;
    with `notify`, the collectors are nudged once after commit when any was.
    """
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_END_FINISHED, {"now": now})
        ended = cursor.rowcount
    if ended:
        logger.info("ended %d subscriptions of expired or delisted instruments", ended)
        if notify:
            transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
    return ended


_END_FINISHED = """
UPDATE candles_subscription s
SET is_active = false, ended_at = %(now)s, updated_at = %(now)s,
    status_message = CASE
        WHEN i.expires_at <= %(now)s
        THEN 'expired ' || to_char(i.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC'
        ELSE 'delisted ' || to_char(i.delisted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC'
    END
FROM candles_instrument i
WHERE s.instrument_id = i.id AND s.is_active
  AND (i.delisted_at IS NOT NULL OR i.expires_at <= %(now)s)
"""


def subscriptions_pause(
    *, inst_id: str, bars: Iterable[str] | None = None, price: str = PriceKind.TRADE
) -> list[Subscription]:
    """Stop collecting the active subscriptions of one instrument's `price` series (all its bars, or only `bars`).

    The rows stay (paused, like the admin's pause), so subscribing again resumes them with their settings;
    candles stay too. Returns the subscriptions paused, empty when none was active; the collectors are
    nudged after commit.
    """
    active = Subscription.objects.select_related("instrument", "timeframe").filter(
        instrument__inst_id=inst_id, instrument__price=price, is_active=True,
    )
    if bars is not None:
        active = active.filter(timeframe__code__in=list(bars))
    with transaction.atomic():
        paused = list(active.select_for_update(of=("self",)))
        if paused:
            now = timezone.now()
            Subscription.objects.filter(pk__in=[s.pk for s in paused]).update(is_active=False, updated_at=now)
            transaction.on_commit(lambda: subscriptions_changed.send(sender=Subscription))
    for sub in paused:
        sub.is_active = False
    return paused


_UNSET = object()


def subscription_update(
    *, subscription: Subscription, is_active: bool | None = None, webhook_url: str | None = None,
    backfill_from: datetime | object | None = _UNSET,
) -> Subscription:
    """Change what an operator may change; resuming a paused subscription makes it pending again.

    The save nudges the collectors (post_save).
    """
    fields = []
    if is_active is not None and is_active != subscription.is_active:
        subscription.is_active = is_active
        fields.append("is_active")
        if is_active:
            subscription.status = SubscriptionStatus.PENDING
            # Resumed by an operator: no longer ended by the system, so a later pause of theirs sticks.
            subscription.ended_at = None
            fields += ["status", "ended_at"]
    if webhook_url is not None and webhook_url != subscription.webhook_url:
        subscription.webhook_url = webhook_url
        fields.append("webhook_url")
    if backfill_from is not _UNSET and backfill_from != subscription.backfill_from:
        subscription.backfill_from = backfill_from
        fields.append("backfill_from")
    if fields:
        subscription.save(update_fields=[*fields, "updated_at"])
    return subscription
