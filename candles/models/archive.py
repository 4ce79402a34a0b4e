"""The Parquet archive's record of each file it wrote."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from candles.models.timeframes import Timeframe

# --- Parquet archive (issue 15) -----------------------------------------------------------------------------
# What candles/archive.py wrote: one row per file, for the admin and GET /api/v1/archives. Kept in its own block
# at the end of the module; nothing above depends on it.


class ArchiveStatus(models.TextChoices):
    WRITTEN = "written", "written, not verified"
    OK = "ok", "verified"
    FAILED = "failed", "verification failed"


class ArchiveFile(models.Model):
    """One Parquet file of the archive: every candle of one bar whose open time falls on one UTC day.

    Only a file whose status is `ok` was read back and matched PostgreSQL's checksum of the table it came from;
    a leaf may be dropped only after all of its files are `ok`. Writing the same day again replaces the file and
    this row (one row per bar and day).
    """

    timeframe = models.ForeignKey(Timeframe, on_delete=models.PROTECT, related_name="+")
    # The UTC day: start at 00:00, end the next day's 00:00 (exclusive).
    start = models.DateTimeField()
    end = models.DateTimeField()
    rows = models.PositiveBigIntegerField()
    instruments = models.PositiveIntegerField()
    # Instrument ids in the file, for finding the files that hold one symbol.
    inst_ids = ArrayField(models.CharField(max_length=64, db_collation="C"), default=list, blank=True)
    bytes = models.PositiveBigIntegerField("size in bytes")
    path = models.CharField(max_length=1024)
    # sha256 of the rows' canonical text, as in the file's metadata (docs/archive.md says how to recompute it).
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=ArchiveStatus.choices, default=ArchiveStatus.WRITTEN)
    error = models.TextField(blank=True)
    source_table = models.CharField("table", max_length=63, help_text="The partition the rows were read from.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-start", "timeframe__display_order"]
        constraints = [
            models.UniqueConstraint(fields=["timeframe", "start"], name="archive_file_one_per_bar_day"),
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="archive_file_end_after_start"),
        ]
        indexes = [
            # GET /archives lists newest first, with or without a bar.
            models.Index(fields=["-start"], name="archive_file_start_idx"),
        ]

    def __str__(self) -> str:
        # Stored and read back in UTC (USE_TZ), so the date is the UTC day.
        return f"{self.timeframe_id and self.timeframe.code} {self.start.date().isoformat()} ({self.status})"
