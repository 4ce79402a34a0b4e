"""Tell the collectors at once when subscriptions change (they also reconcile every few seconds)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from candles.models import Subscription
from candles.signals import subscriptions_changed
from collectors.shared.connections import pipeline_keys, redis_client

logger = logging.getLogger(__name__)


def nudge_collectors() -> None:
    try:
        redis_client().publish(pipeline_keys().control, "reconcile")
    except Exception as exc:  # a lost nudge costs seconds (the next reconcile), never data
        logger.warning("could not nudge the collectors: %r", exc)


@receiver(post_save, sender=Subscription)
@receiver(post_delete, sender=Subscription)
def subscription_changed(sender, **kwargs) -> None:
    transaction.on_commit(nudge_collectors)


@receiver(subscriptions_changed)
def subscriptions_bulk_changed(sender, **kwargs) -> None:
    nudge_collectors()  # already sent after commit
