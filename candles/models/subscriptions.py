"""What is collected: subscriptions (an instrument × a bar) and the rules that create them."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from candles.models.instruments import MARK_PRICE_TYPES, Instrument, InstrumentType, PriceKind
from candles.models.timeframes import Timeframe


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
