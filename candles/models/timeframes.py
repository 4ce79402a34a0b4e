"""OKX's 27 bars, with each bar's alignment, REST reach and retention."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q

from candles.bars import BarSpec, datetime_to_ms


class Alignment(models.IntegerChoices):
    UTC = 0, "UTC"
    HONG_KONG = 8, "UTC+8"


class Timeframe(models.Model):
    """One OKX bar. Codes are case-sensitive: `1m` is a minute, `1M` a month."""

    id = models.SmallAutoField(primary_key=True)
    code = models.CharField(max_length=8, unique=True, db_collation="C")
    # Fixed length in seconds; 0 for calendar bars (months), whose length varies.
    seconds = models.PositiveIntegerField()
    # Calendar months per bar (1M, 3M); 0 for fixed-length bars.
    months = models.PositiveSmallIntegerField(default=0)
    utc_offset_hours = models.SmallIntegerField(
        "alignment", choices=Alignment.choices, default=Alignment.UTC,
        help_text="Time zone whose clock the bar boundaries follow.",
    )
    # One open time of this bar: every open time is anchor + k × length (for calendar bars, the anchor's
    # month starts the cycle of `months`). Editable so that a bar whose phase OKX does not document can be
    # corrected from observed data without a code change.
    anchor = models.DateTimeField()
    rest_candles = models.BooleanField("REST /candles", default=True)
    rest_history = models.BooleanField("REST /history-candles", default=True)
    display_order = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    retention = models.DurationField(
        null=True, blank=True,
        help_text="How long candles of this bar are kept, counted back from now (e.g. 7 days). Empty: forever. "
                  "Whole partitions go once they lie wholly behind the horizon, so a little more is kept.",
    )
    archive = models.BooleanField(
        "archive before dropping", default=False,
        help_text="Write a partition to Parquet before retention drops it.",
    )

    class Meta:
        ordering = ["display_order"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(seconds__gt=0, months=0) | Q(seconds=0, months__gt=0)),
                name="timeframe_fixed_or_calendar",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def spec(self) -> BarSpec:
        return BarSpec(self.code, self.seconds, self.months, self.utc_offset_hours, datetime_to_ms(self.anchor))

    @property
    def is_calendar(self) -> bool:
        return self.months > 0

    def horizon(self, now: datetime) -> datetime | None:
        """The oldest open time still kept at `now` (None: kept forever): the one definition of the horizon."""
        return None if self.retention is None else now - self.retention

    @property
    def alignment_label(self) -> str:
        zone = self.get_utc_offset_hours_display()
        return f"calendar month ({zone})" if self.is_calendar else zone
