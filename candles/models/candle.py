"""The candles table (partitioned by bar, then open time) and its read-only admin view."""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q

from candles.fields import CandleSourceField, ExactDecimalField
from candles.models.instruments import Instrument
from candles.models.timeframes import Timeframe


class CandleSource(models.TextChoices):
    WS = "ws", "WebSocket"
    REST = "rest", "REST"


class CandleColumns(models.Model):
    """A candle's own columns, declared once for the table and its admin view: the open time, OKX's numbers
    exactly, the confirm flag and the receipt version. The series (instrument, bar) and the source's storage
    differ between the two."""

    open_time = models.DateTimeField()
    open = ExactDecimalField()
    high = ExactDecimalField()
    low = ExactDecimalField()
    close = ExactDecimalField()
    # Empty for mark-price and index candles, which carry no volumes.
    vol = ExactDecimalField(null=True)
    vol_ccy = ExactDecimalField(null=True)
    # Absent in OKX's older 7-field payloads.
    vol_ccy_quote = ExactDecimalField(null=True)
    confirmed = models.BooleanField()
    # Receipt version (microseconds since the epoch when the row was received): the database refuses a
    # row older than the one it holds, even when a retried flush arrives after a newer one.
    version = models.BigIntegerField()

    class Meta:
        abstract = True


class Candle(CandleColumns):
    """One OKX candle. The key is (instrument, timeframe, open time); written only by `candles_upsert`.

    A composite primary key measured better than a surrogate id plus a unique constraint (one index
    instead of two: 13 % smaller, 60 % faster upserts, faster range reads; see bench/upsert.py
    --compare-keys). Django 5.2's admin cannot register composite keys, so the admin browses candles
    through `CandleRecord`, a read-only view with a single-column key.

    The table is partitioned by bar, then by open time (migration 0011, `candles/partitions.py`): an insert
    needs the leaf of its open time to exist. `candles_upsert` makes it; any other insert (fixtures, tests)
    calls `partitions_ensure` first. The row is compact (docs/storage-design.md §3): no `updated_at` (the
    version is the receipt time) and the source in one byte.
    """

    pk = models.CompositePrimaryKey("instrument_id", "timeframe_id", "open_time")
    # No database foreign keys: their per-row triggers cost a third of the upsert's time, and the only
    # writer (candles_upsert) takes both ids from a join with their tables in the same statement.
    # PROTECT still guards deletes made through Django.
    instrument = models.ForeignKey(
        Instrument, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    timeframe = models.ForeignKey(
        Timeframe, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    source = CandleSourceField(choices=CandleSource.choices)

    class Meta:
        indexes = [
            # Per leaf: the admin's newest candles across every series, which no btree of the key gives.
            # Rows arrive in time order, so the ranges stay tight (24 KB per leaf; docs/storage-design.md §5).
            BrinIndex(fields=["open_time"], pages_per_range=32, name="candle_open_time_brin"),
            # The repair plane's queue of closed candles whose confirm push never came: it holds only the
            # unconfirmed rows (the open candle of each series, plus those), so reading it costs the backlog.
            models.Index(fields=["timeframe", "open_time"], include=["instrument"], condition=Q(confirmed=False),
                         name="candle_unconfirmed_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(source__in=["ws", "rest"]), name="candle_source_known"),
            # REST caches lag: only closed candles may come from REST.
            models.CheckConstraint(condition=Q(confirmed=True) | Q(source="ws"), name="candle_rest_closed_only"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id}/{self.timeframe_id}@{self.open_time.isoformat()}"


class CandleRecord(CandleColumns):
    """Read-only view of candles with a single-column key, for the admin only.

    `source` is spelled out (`ws`/`rest`) and `updated_at` is the receipt time the version encodes.
    """

    key = models.CharField(max_length=64, primary_key=True)
    instrument = models.ForeignKey(Instrument, on_delete=models.DO_NOTHING, related_name="+")
    timeframe = models.ForeignKey(Timeframe, on_delete=models.DO_NOTHING, related_name="+")
    source = models.CharField(max_length=4, choices=CandleSource.choices)
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "candles_candle_record"
        verbose_name = "candle"
        constraints = [
            # Declared (not created: the model is unmanaged) so the admin knows this ordering is total
            # and does not append the key to ORDER BY.
            models.UniqueConstraint(fields=["instrument", "timeframe", "open_time"], name="candle_record_key"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id and self.instrument.inst_id} {self.timeframe_id and self.timeframe.code} " \
               f"{self.open_time.isoformat()}"
