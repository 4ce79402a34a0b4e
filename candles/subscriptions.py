"""Writes of subscriptions: creating, re-activating and pausing them (used by commands, admin and API)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from candles.models import Instrument, Subscription, SubscriptionStatus, Timeframe
from candles.signals import subscriptions_changed


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
    *, inst_ids: Iterable[str], bars: Iterable[str], backfill_from: datetime | None = None, webhook_url: str = ""
) -> SubscribeResult:
    """Subscribe every instrument × bar; idempotent for existing pairs (a paused one is resumed).

    Instruments must be known and live; bars must be active, matched verbatim (`1m` is not `1M`).
    """
    inst_ids, bars = list(dict.fromkeys(inst_ids)), list(dict.fromkeys(bars))
    instruments = {i.inst_id: i for i in Instrument.objects.filter(inst_id__in=inst_ids, state="live",
                                                                   delisted_at__isnull=True)}
    timeframes = {t.code: t for t in Timeframe.objects.filter(code__in=bars, is_active=True)}
    unknown = {"instruments": [i for i in inst_ids if i not in instruments],
               "timeframes": [b for b in bars if b not in timeframes]}
    if any(unknown.values()):
        raise UnknownNames(unknown)
    result = SubscribeResult()
    with transaction.atomic():
        for inst_id in inst_ids:
            for bar in bars:
                sub, created = Subscription.objects.get_or_create(
                    instrument=instruments[inst_id], timeframe=timeframes[bar],
                    defaults={"backfill_from": backfill_from, "webhook_url": webhook_url},
                )
                if created:
                    result.created.append(sub)
                elif not sub.is_active:
                    sub.is_active, sub.status = True, SubscriptionStatus.PENDING
                    sub.save(update_fields=["is_active", "status", "updated_at"])
                    result.reactivated.append(sub)
                else:
                    result.unchanged.append(sub)
    return result


def subscriptions_pause(*, inst_id: str, bars: Iterable[str] | None = None) -> list[Subscription]:
    """Stop collecting the active subscriptions of one instrument (all its bars, or only `bars`).

    The rows stay (paused, like the admin's pause), so subscribing again resumes them with their settings;
    candles stay too. Returns the subscriptions paused, empty when none was active; the collectors are
    nudged after commit.
    """
    active = Subscription.objects.select_related("instrument", "timeframe").filter(
        instrument__inst_id=inst_id, is_active=True,
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
            fields.append("status")
    if webhook_url is not None and webhook_url != subscription.webhook_url:
        subscription.webhook_url = webhook_url
        fields.append("webhook_url")
    if backfill_from is not _UNSET and backfill_from != subscription.backfill_from:
        subscription.backfill_from = backfill_from
        fields.append("backfill_from")
    if fields:
        subscription.save(update_fields=[*fields, "updated_at"])
    return subscription
