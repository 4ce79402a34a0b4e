"""Writes of subscriptions: creating, re-activating and pausing them (used by commands, admin and API)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from candles.models import Instrument, Subscription, SubscriptionStatus, Timeframe


class UnknownNames(ValueError):
    def __init__(self, kind: str, names: list[str]):
        super().__init__(f"unknown {kind}: {', '.join(names)}")
        self.kind = kind
        self.names = names


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
    missing = [i for i in inst_ids if i not in instruments]
    if missing:
        raise UnknownNames("instruments", missing)
    missing = [b for b in bars if b not in timeframes]
    if missing:
        raise UnknownNames("timeframes", missing)
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
