"""Instruments OKX lists, one row per price series: the traded instrument, its mark price, an index."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from candles.fields import ExactDecimalField


class InstrumentType(models.TextChoices):
    SPOT = "SPOT"
    MARGIN = "MARGIN"
    SWAP = "SWAP"
    FUTURES = "FUTURES"
    OPTION = "OPTION"
    # An OKX index (BTC-USD, BTC-USDT: a derivative's `uly`), from /market/index-tickers: only index candles.
    INDEX = "INDEX"


class PriceKind(models.TextChoices):
    """Which price a series' candles follow: OKX's trades, its mark price, or an index."""

    TRADE = "trade"
    MARK = "mark"
    INDEX = "index"


# The instrument types OKX publishes mark-price candles for.
MARK_PRICE_TYPES = frozenset({InstrumentType.SWAP, InstrumentType.FUTURES, InstrumentType.OPTION})


class Instrument(models.Model):
    """A source of one price's candles: an OKX instrument's trades (`price` trade), its mark price (mark), or an
    OKX index (index; inst_type INDEX).

    A candle series is (this row, bar), so the candle table's key stays (instrument, timeframe, open time) for every
    price kind: BTC-USDT-SWAP's mark candles live under the row (BTC-USDT-SWAP, mark), never beside its trade
    candles, and the index BTC-USDT under (BTC-USDT, index), never beside the spot pair's. docs/price-kinds.md.
    """

    # 4-byte key: it is part of every candle's primary key.
    id = models.AutoField(primary_key=True)
    # Lookups by inst_id use the unique (inst_id, price) index.
    inst_id = models.CharField("instId", max_length=64)
    price = models.CharField(max_length=5, choices=PriceKind.choices, default=PriceKind.TRADE)
    inst_type = models.CharField("type", max_length=16, choices=InstrumentType.choices)
    base_ccy = models.CharField(max_length=32, blank=True)
    quote_ccy = models.CharField(max_length=32, blank=True)
    settle_ccy = models.CharField(max_length=32, blank=True)
    inst_family = models.CharField(max_length=64, blank=True)
    # OKX adds states over time (rebase, post_only, settling since 2026); store whatever it says.
    state = models.CharField(max_length=32, default="live", db_index=True)
    tick_size = ExactDecimalField(null=True, blank=True)
    lot_size = ExactDecimalField(null=True, blank=True)
    listed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Set when an instrument disappears from OKX's list; its candles stay.
    delisted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["inst_id", "price"]
        indexes = [
            # Instrument lists in the admin and the API filter by type and state.
            models.Index(fields=["inst_type", "state"], name="instrument_type_state_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["inst_id", "price"], name="instrument_inst_id_price_uniq"),
            # Index ids carry index candles only, and only indices do.
            models.CheckConstraint(condition=Q(inst_type="INDEX", price="index") | (~Q(inst_type="INDEX")
                                                                                   & ~Q(price="index")),
                                   name="instrument_index_kind"),
            # Mark candles exist only for derivatives.
            models.CheckConstraint(condition=~Q(price="mark") | Q(inst_type__in=["SWAP", "FUTURES", "OPTION"]),
                                   name="instrument_mark_derivatives"),
        ]

    def __str__(self) -> str:
        return self.inst_id if self.price == PriceKind.TRADE else f"{self.inst_id} ({self.price})"
