"""Gap records: runs of missing candles, their state and repair priority (the state machine is candles/gaps.py)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from candles.models.subscriptions import Subscription


class GapState(models.TextChoices):
    OPEN = "open"
    FILLING = "filling"
    FILLED = "filled"
    UNFILLABLE = "unfillable"
    EXPIRED = "expired", "expired by policy"


class RepairPriority(models.IntegerChoices):
    """The order in which the repair scheduler spends OKX's REST budgets (lower first)."""

    CONFIRM = 1, "missed confirm"
    OUTAGE = 2, "outage"
    HISTORY = 3, "history"
    OLD = 4, "old gap"


class Gap(models.Model):
    """A run of missing open times of one subscription, from `start` to `end` inclusive."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="gaps")
    start = models.DateTimeField()
    end = models.DateTimeField()
    missing = models.PositiveIntegerField(default=0, help_text="Open times missing when the gap was found.")
    state = models.CharField(max_length=16, choices=GapState.choices, default=GapState.OPEN)
    attempts = models.PositiveIntegerField(default=0)
    priority = models.PositiveSmallIntegerField(choices=RepairPriority.choices, default=RepairPriority.OUTAGE)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-end"]
        constraints = [
            models.CheckConstraint(condition=Q(end__gte=models.F("start")), name="gap_end_not_before_start"),
            # Detection runs often; an unfinished gap is recorded once.
            models.UniqueConstraint(
                fields=["subscription", "start"],
                condition=Q(state__in=["open", "filling"]),
                name="gap_unfinished_unique_start",
            ),
        ]
        indexes = [
            # Backfill picks unfinished gaps, most recent first.
            models.Index(fields=["state", "-end"], name="gap_state_end_idx"),
            # The repair scheduler takes unfinished gaps by priority, most recent first.
            models.Index(fields=["priority", "-end"], condition=Q(state__in=["open", "filling"]),
                         name="gap_unfinished_priority_idx"),
        ]

    def __str__(self) -> str:
        return f"gap {self.start.isoformat()} to {self.end.isoformat()} ({self.state})"
