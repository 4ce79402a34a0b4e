"""The data okx-candles keeps: instruments, bars, subscriptions, candles and the gaps between them."""

from __future__ import annotations

from datetime import datetime

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from candles.bars import BarSpec, datetime_to_ms
from candles.fields import CandleSourceField, ExactDecimalField


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


class SubscriptionStatus(models.TextChoices):
    PENDING = "pending"
    LIVE = "live"
    STALE = "stale"
    ERROR = "error"


# An instId glob: OKX's characters plus `*` (any run) and `?` (one character). Anything else (`[`, `%`, spaces)
# would be read differently by SQL's LIKE than an operator expects, so it is refused rather than escaped.
INST_ID_PATTERN_RE = r"^[A-Za-z0-9._*?-]{1,64}$"
validate_inst_id_pattern = RegexValidator(
    INST_ID_PATTERN_RE,
    "An instId pattern is letters, digits, '-', '_', '.', with * (any run) and ? (one character), "
    "like BTC-* or *-USDT-SWAP.",
    code="invalid_pattern",
)


class SubscriptionRule(models.Model):
    """What to collect, declared once: instruments matching the filters × bars. See candles/rules.py.

    The subscriptions it matches are materialized (created, resumed, ended) by `rules_materialize` after each
    instrument sync and each change of a rule.
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    inst_type = models.CharField("type", max_length=16, choices=InstrumentType.choices, blank=True,
                                 help_text="Empty: every type.")
    quote_ccy = models.CharField(max_length=32, blank=True,
                                 help_text="Empty: any. Swaps and futures are quoted in their instId's second "
                                           "part (BTC-USDT-SWAP: USDT).")
    settle_ccy = models.CharField(max_length=32, blank=True, help_text="Empty: any.")
    inst_id_pattern = models.CharField(
        "instId pattern", max_length=64, blank=True, validators=[validate_inst_id_pattern],
        help_text="Glob: * any run, ? one character (BTC-*, *-USDT-SWAP). Empty: every instId.",
    )
    # Which price's series it subscribes: the instrument rows of this kind (docs/price-kinds.md). Mark and index
    # rules name their instruments as trade rules do; an index's quote is its id's second part (BTC-USD: USD).
    price = models.CharField(max_length=5, choices=PriceKind.choices, default=PriceKind.TRADE,
                             help_text="trade: OKX's trades; mark: the mark price of SWAP, FUTURES and OPTION; "
                                       "index: OKX's indices (BTC-USD). Mark and index have no 1s bar.")
    all_bars = models.BooleanField("all active bars", default=False,
                                   help_text="Every active bar, now and later (mark and index: all but 1s).")
    # Codes rather than foreign keys: the API and the CLI speak codes, and the materializing SQL matches them
    # with `= ANY`. Unknown codes are refused on the way in (candles.rules.rule_validate).
    bars = ArrayField(models.CharField(max_length=8, db_collation="C"), default=list, blank=True,
                      help_text="Bar codes, case-sensitive (1m is a minute, 1M a month).")
    backfill_from = models.DateTimeField(null=True, blank=True,
                                         help_text="History start of the subscriptions the rule creates.")
    webhook_url = models.URLField(max_length=500, blank=True)
    is_active = models.BooleanField("active", default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(all_bars=True) | ~Q(bars=[]), name="subscription_rule_has_bars"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Here rather than in each caller, so the admin's form, the API and the CLI refuse the same rules.
        # OKX writes instIds and currencies in capitals; `btc-*` means what the operator thinks it means.
        self.quote_ccy = self.quote_ccy.strip().upper()
        self.settle_ccy = self.settle_ccy.strip().upper()
        self.inst_id_pattern = self.inst_id_pattern.strip().upper()
        self.bars = list(dict.fromkeys(code.strip() for code in self.bars or [] if code.strip()))
        self._clean_price()
        if self.all_bars:
            return
        if not self.bars:
            raise ValidationError({"bars": ValidationError("List at least one bar, or choose all active bars.",
                                                           code="no_bars")})
        active = dict(Timeframe.objects.filter(code__in=self.bars).values_list("code", "is_active"))
        unknown = [code for code in self.bars if code not in active]
        if unknown:
            raise ValidationError({"bars": ValidationError(
                "Unknown bars: %(codes)s (bars are case-sensitive: 1m is a minute, 1M a month).",
                code="unknown_bars", params={"codes": ", ".join(unknown), "unknown": unknown},
            )})
        inactive = [code for code in self.bars if not active[code]]
        if inactive:
            raise ValidationError({"bars": ValidationError("Bars not collected (inactive): %(codes)s.",
                                                           code="inactive_bars",
                                                           params={"codes": ", ".join(inactive)})})
        # Imported here: candles.price_series reads these models.
        from candles.price_series import PriceSeriesError, price_bars_check

        try:
            price_bars_check(self.price, self.bars)
        except PriceSeriesError as exc:
            raise ValidationError({"bars": ValidationError(
                str(exc), code="trade_only_bars",
                params={"trade_only": exc.details["invalid_timeframes"], "price": self.price},
            )}) from None

    def _clean_price(self) -> None:
        """The filters a price kind can match: mark rows are derivatives, index rows the INDEX type only."""
        if self.price == PriceKind.MARK and self.inst_type and self.inst_type not in MARK_PRICE_TYPES:
            raise ValidationError({"inst_type": ValidationError(
                "OKX publishes mark prices for SWAP, FUTURES and OPTION only: leave the type empty or choose one "
                "of them.", code="no_mark_price")})
        if self.price == PriceKind.INDEX:
            if self.inst_type and self.inst_type != InstrumentType.INDEX:
                raise ValidationError({"inst_type": ValidationError(
                    "Index candles come from indices only: leave the type empty or choose INDEX.",
                    code="not_an_index")})
            if self.settle_ccy:
                raise ValidationError({"settle_ccy": ValidationError(
                    "An index has no settlement currency: leave it empty (the quote currency is the index id's "
                    "second part, BTC-USD: USD).", code="index_not_settled")})
        if self.price == PriceKind.TRADE and self.inst_type == InstrumentType.INDEX:
            raise ValidationError({"inst_type": ValidationError(
                "An index has no trades: a rule of INDEX instruments takes price index.", code="index_not_traded")})


class Subscription(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="subscriptions")
    timeframe = models.ForeignKey(Timeframe, on_delete=models.PROTECT, related_name="subscriptions")
    is_active = models.BooleanField("active", default=True)
    status = models.CharField(max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.PENDING)
    status_message = models.TextField(blank=True)
    backfill_from = models.DateTimeField(null=True, blank=True, help_text="Fetch history from this time on.")
    webhook_url = models.URLField(max_length=500, blank=True)
    # Deliveries that failed after every retry since the last success; reset by a delivered webhook.
    webhook_failures = models.PositiveIntegerField(default=0)
    webhook_last_error = models.TextField(blank=True)
    # The newest open time gap detection has accounted for: every earlier open time (from the start of the
    # subscription's history) is stored or recorded as a gap. Detection looks only past it, so its cost
    # follows the candles that closed since, not the number of subscriptions. Null until first detected.
    detected_through = models.DateTimeField(null=True, blank=True, editable=False)
    # The rule that holds this subscription; null for an explicit one (API, admin, CLI), which no rule ever
    # pauses, resumes or changes.
    rule = models.ForeignKey(SubscriptionRule, on_delete=models.SET_NULL, null=True, blank=True,
                             related_name="subscriptions")
    # Set when the system stopped the subscription (instrument expired or delisted, no rule matches any more),
    # as opposed to an operator's pause: only such a stop may be undone by a rule.
    ended_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["instrument__inst_id", "timeframe__display_order"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "timeframe"], name="subscription_unique_pair"),
        ]
        indexes = [
            # The collectors reconcile against `WHERE is_active` every few seconds.
            models.Index(fields=["is_active", "status"], name="subscription_active_status_idx"),
            # rules_materialize ends the active subscriptions a rule holds that no rule matches any more.
            models.Index(fields=["rule"], condition=Q(rule__isnull=False, is_active=True),
                         name="subscription_rule_active_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id and self.instrument} {self.timeframe_id and self.timeframe.code}"

    def clean(self) -> None:
        # The admin's form: OKX has no 1s mark-price or index candles (the API never offers them either).
        if (self.instrument_id and self.timeframe_id and self.instrument.price != PriceKind.TRADE
                and self.timeframe.code == "1s"):
            raise ValidationError({"timeframe": f"OKX has no 1s {self.instrument.price} candles: they start at 1m."})


class CandleSource(models.TextChoices):
    WS = "ws", "WebSocket"
    REST = "rest", "REST"


class Candle(models.Model):
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
    source = CandleSourceField(choices=CandleSource.choices)
    # Receipt version (microseconds since the epoch when the row was received): the database refuses a
    # row older than the one it holds, even when a retried flush arrives after a newer one.
    version = models.BigIntegerField()

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


class CandleRecord(models.Model):
    """Read-only view of candles with a single-column key, for the admin only.

    `source` is spelled out (`ws`/`rest`) and `updated_at` is the receipt time the version encodes.
    """

    key = models.CharField(max_length=64, primary_key=True)
    instrument = models.ForeignKey(Instrument, on_delete=models.DO_NOTHING, related_name="+")
    timeframe = models.ForeignKey(Timeframe, on_delete=models.DO_NOTHING, related_name="+")
    open_time = models.DateTimeField()
    open = ExactDecimalField()
    high = ExactDecimalField()
    low = ExactDecimalField()
    close = ExactDecimalField()
    vol = ExactDecimalField(null=True)
    vol_ccy = ExactDecimalField(null=True)
    vol_ccy_quote = ExactDecimalField(null=True)
    confirmed = models.BooleanField()
    source = models.CharField(max_length=4, choices=CandleSource.choices)
    version = models.BigIntegerField()
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
