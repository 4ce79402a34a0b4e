"""Serializers: request validation, and the response shapes the OpenAPI schema documents.

Candle rows are not serialized here (see candles.candle_shape: built straight from the read's tuples for
speed); `CandleSerializer` only documents their shape.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from candles.api.params import parse_time
from candles.bars import ms_to_datetime
from candles.models import Instrument, InstrumentType, PriceKind, Subscription, Timeframe

EXACT = "Exact decimal string, digits as OKX sent them (never a float)."


@extend_schema_field({"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
                      "description": "ISO 8601 (naive means UTC) or epoch milliseconds."})
class InstantField(serializers.Field):
    """An instant given as ISO 8601 text or epoch milliseconds; written out as ISO 8601 UTC."""

    default_error_messages = {"invalid": "Must be an ISO 8601 date-time or epoch milliseconds."}

    def to_internal_value(self, data: object) -> datetime:
        try:
            if isinstance(data, int) and not isinstance(data, bool):
                return ms_to_datetime(data)
            if isinstance(data, str) and "\x00" not in data and len(data) <= 64:
                return parse_time(data)
        except (ValueError, OverflowError):
            pass
        self.fail("invalid")

    def to_representation(self, value: datetime) -> str:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class PastInstantField(InstantField):
    default_error_messages = {"future": "Must not be in the future."}

    def to_internal_value(self, data: object) -> datetime:
        moment = super().to_internal_value(data)
        if moment > timezone.now():
            self.fail("future")
        return moment


@extend_schema_field({"type": "string", "nullable": True})
class ExactDecimalField(serializers.Field):
    """A stored numeric as its exact digits in plain notation (str() would write 0.00000001 as 1E-8)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def to_representation(self, value: Decimal) -> str:
        return format(value, "f")


# --- candles -----------------------------------------------------------------------------------------------


NO_VOLUME = " Null on mark-price and index candles, which have no volumes."


class CandleSerializer(serializers.Serializer):
    """The v1 contract's `CandleData` (original design), numbers as exact strings; see candles.candle_shape."""

    timestamp = serializers.DateTimeField(help_text="Open time, ISO 8601 UTC.")
    open_time_ms = serializers.IntegerField(help_text="Open time in epoch milliseconds (OKX's ts).")
    open = serializers.CharField(help_text=EXACT)
    high = serializers.CharField(help_text=EXACT)
    low = serializers.CharField(help_text=EXACT)
    close = serializers.CharField(help_text=EXACT)
    volume = serializers.CharField(allow_null=True, help_text="OKX vol: base currency (spot) or contracts "
                                                              "(derivatives). " + EXACT + NO_VOLUME)
    volume_currency = serializers.CharField(allow_null=True, help_text="OKX volCcy: quote (spot) or base "
                                                                       "(derivatives). " + EXACT + NO_VOLUME)
    volume_quote = serializers.CharField(allow_null=True, help_text="OKX volCcyQuote, null when OKX sent none."
                                                                    + NO_VOLUME)
    confirm = serializers.BooleanField(help_text="True once the candle is closed (final).")

    class Meta:
        ref_name = "Candle"


class RetentionSerializer(serializers.Serializer):
    horizon = serializers.DateTimeField(help_text="Candles opening before this instant are not kept for this bar.")

    class Meta:
        ref_name = "Retention"


class CandlePaginationSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next page (same filters), null on the last.")
    next_cursor = serializers.CharField(allow_null=True, help_text="The `cursor` parameter of the next page.")
    has_more = serializers.BooleanField(help_text="False on the last page.")
    limit = serializers.IntegerField(help_text="Candles per page asked for (or the default).")

    class Meta:
        ref_name = "CandlePagination"


_CANDLE_EXAMPLE = {
    "timestamp": "2024-01-16T19:00:00Z", "open_time_ms": 1705431600000, "open": "43000.10", "high": "43010",
    "low": "42990.5", "close": "43005.00000001", "volume": "0.00000001", "volume_currency": "12.5",
    "volume_quote": "12.5", "confirm": True,
}
_NO_VOLUMES = {"volume": None, "volume_currency": None, "volume_quote": None}
# One example per price kind: the same open time, so a reader sees the three series of one minute side by side.
_KIND_EXAMPLES = {
    "trade": ("BTC-USDT", _CANDLE_EXAMPLE),
    "mark": ("BTC-USDT-SWAP", {**_CANDLE_EXAMPLE, "open": "43012.4", "high": "43020.1", "low": "43001.7",
                               "close": "43015.2", **_NO_VOLUMES}),
    "index": ("BTC-USD", {**_CANDLE_EXAMPLE, "open": "42998.61", "high": "43008.9", "low": "42989.35",
                           "close": "43003.07", **_NO_VOLUMES}),
}
_KIND_TITLES = {"trade": "trade candles (the default)", "mark": "mark-price candles (price=mark)",
                "index": "index candles (price=index)"}


def _page_example(price: str) -> OpenApiExample:
    symbol, candle = _KIND_EXAMPLES[price]
    query = "" if price == "trade" else f"price={price}&"
    body = {
        "symbol": symbol, "timeframe": "1m", "count": 1, "data": [candle],
        "pagination": {"next": f"http://127.0.0.1:8000/api/v1/data/{symbol}/1m?{query}limit=1"
                               "&cursor=ZDE3MDU0MzE2MDAwMDA",
                       "next_cursor": "ZDE3MDU0MzE2MDAwMDA", "has_more": True, "limit": 1},
    }
    if price != "trade":
        body["price"] = price
    return OpenApiExample(f"A page of one candle: {symbol}, {_KIND_TITLES[price]}", response_only=True, value=body)


def _latest_example(price: str) -> OpenApiExample:
    symbol, candle = _KIND_EXAMPLES[price]
    body = {"symbol": symbol, "timeframe": "1m", "candle": {**candle, "confirm": False}}
    if price != "trade":
        body["price"] = price
    return OpenApiExample(f"The open candle: {symbol}, {_KIND_TITLES[price]}", response_only=True, value=body)


PAGE_PRICE_HELP = "Only on mark-price and index pages: which price's candles these are (trade pages omit it)."


@extend_schema_serializer(examples=[_page_example(price) for price in _KIND_EXAMPLES])
class CandlePageSerializer(serializers.Serializer):
    """The v1 contract's `CandleDataResponse` (original design), plus `retention`."""

    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    count = serializers.IntegerField(help_text="Candles in this page.")
    data = CandleSerializer(many=True)
    pagination = CandlePaginationSerializer()
    retention = RetentionSerializer(
        required=False, help_text="Only when the range reaches behind the bar's retention horizon (a bar with a "
                                  "retention, and no start_time or one before the horizon): candles stop there.")
    price = serializers.ChoiceField(choices=PriceKind.choices, required=False, help_text=PAGE_PRICE_HELP)


@extend_schema_serializer(examples=[_latest_example(price) for price in _KIND_EXAMPLES])
class LatestCandleSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    candle = CandleSerializer()
    price = serializers.ChoiceField(choices=PriceKind.choices, required=False, help_text=PAGE_PRICE_HELP)


# --- subscriptions --------------------------------------------------------------------------------------


SUBSCRIPTION_PRICE_HELP = ("Which price's series: trade (OKX's trades), mark (the mark price of a SWAP, FUTURES or "
                           "OPTION instrument) or index (an OKX index such as BTC-USD).")


class SubscriptionSerializer(serializers.ModelSerializer):
    symbol = serializers.CharField(source="instrument.inst_id")
    timeframe = serializers.CharField(source="timeframe.code")
    price = serializers.ChoiceField(source="instrument.price", choices=PriceKind.choices,
                                    help_text=SUBSCRIPTION_PRICE_HELP)
    backfill_from = InstantField(allow_null=True)
    webhook_url = serializers.CharField(help_text="Receiver of a signed POST per confirmed candle; empty: none.")
    rule = serializers.IntegerField(source="rule_id", allow_null=True,
                                    help_text="Id of the rule holding it (GET /rules/{id}); null: made by hand.")

    class Meta:
        model = Subscription
        fields = ["id", "symbol", "timeframe", "price", "is_active", "status", "status_message", "backfill_from",
                  "webhook_url", "webhook_failures", "webhook_last_error", "rule", "created_at", "updated_at"]
        read_only_fields = fields


class SubscribeRequestSerializer(serializers.Serializer):
    symbols = serializers.ListField(child=serializers.CharField(max_length=64))
    timeframes = serializers.ListField(child=serializers.CharField(max_length=16))
    webhook_url = serializers.URLField(max_length=500, required=False, allow_blank=True, default="",
                                       help_text="Receives a signed POST per confirmed candle.")
    backfill_from = PastInstantField(required=False, allow_null=True, default=None,
                                     help_text="Fetch history from this instant on.")
    price = serializers.ChoiceField(
        choices=PriceKind.choices, required=False, default=PriceKind.TRADE,
        help_text=SUBSCRIPTION_PRICE_HELP + " The default is trade. Mark and index have no 1s (400 "
                  "INVALID_TIMEFRAMES); a symbol without such a series (an instrument id with index, a spot pair "
                  "with mark) is 400 INVALID_PRICE.")

    def get_fields(self):
        # Limits are read per request (not at import), so settings apply as configured, in the schema too.
        fields = super().get_fields()
        fields["symbols"] = serializers.ListField(
            child=serializers.CharField(max_length=64), min_length=1, max_length=settings.API_MAX_SYMBOLS,
            help_text="OKX instrument ids, exact (BTC-USDT); each must be a known live instrument.",
        )
        fields["timeframes"] = serializers.ListField(
            child=serializers.CharField(max_length=16), min_length=1, max_length=settings.API_MAX_TIMEFRAMES,
            help_text="OKX bars, case-sensitive (1m is a minute, 1M a month); each must be an active bar.",
        )
        return fields


class SubscribeResponseSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text="Pairs subscribed for the first time.")
    reactivated = serializers.IntegerField(help_text="Paused pairs resumed.")
    unchanged = serializers.IntegerField(help_text="Pairs already active.")
    subscriptions = SubscriptionSerializer(many=True, help_text="Every requested pair.")


class UnsubscribeResponseSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    paused = serializers.IntegerField(help_text="Subscriptions stopped; their rows and candles stay.")
    subscriptions = SubscriptionSerializer(many=True)


class SubscriptionUpdateSerializer(serializers.Serializer):
    is_active = serializers.BooleanField(required=False, help_text="false pauses, true resumes.")
    webhook_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    backfill_from = PastInstantField(required=False, allow_null=True)


class SubscriptionPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Matches over all pages.")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = SubscriptionSerializer(many=True)


# --- reference data ------------------------------------------------------------------------------------


class InstrumentSerializer(serializers.ModelSerializer):
    symbol = serializers.CharField(source="inst_id")
    type = serializers.ChoiceField(source="inst_type", choices=InstrumentType.choices)
    tick_size = ExactDecimalField(help_text=EXACT)
    lot_size = ExactDecimalField(help_text=EXACT)
    prices = serializers.SerializerMethodField(
        help_text="The price kinds whose candles this id has (the `price` parameter of /data): trade, plus mark "
                  "for derivatives whose mark price is known; index for an index.")

    class Meta:
        model = Instrument
        fields = ["symbol", "type", "prices", "base_ccy", "quote_ccy", "settle_ccy", "inst_family", "state",
                  "tick_size", "lot_size", "listed_at", "expires_at", "delisted_at"]
        read_only_fields = fields


    def get_prices(self, instrument: Instrument) -> list[str]:
        if instrument.price != PriceKind.TRADE:
            return [instrument.price]
        return ["trade", "mark"] if getattr(instrument, "has_mark", False) else ["trade"]


class InstrumentPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = InstrumentSerializer(many=True)


class TimeframeSerializer(serializers.ModelSerializer):
    alignment = serializers.CharField(source="get_utc_offset_hours_display",
                                      help_text="Clock the bar boundaries follow: UTC or UTC+8 (Hong Kong).")

    class Meta:
        model = Timeframe
        fields = ["code", "seconds", "months", "alignment", "is_active"]
        read_only_fields = fields


class TimeframeListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    results = TimeframeSerializer(many=True)


# --- statistics and market ------------------------------------------------------------------------------


class StatisticsValuesSerializer(serializers.Serializer):
    open = serializers.CharField(allow_null=True, help_text="Open of the first candle in the period.")
    close = serializers.CharField(allow_null=True, help_text="Close of the last candle in the period.")
    change = serializers.CharField(allow_null=True, help_text="close - open, exact.")
    change_percent = serializers.CharField(allow_null=True, help_text="(close - open) / open × 100, 4 decimals.")
    high = serializers.CharField(allow_null=True)
    low = serializers.CharField(allow_null=True)
    volume = serializers.CharField(allow_null=True, help_text="Sum of vol.")
    volume_currency = serializers.CharField(allow_null=True, help_text="Sum of volCcy (the candles' volume_currency).")
    volume_quote = serializers.CharField(allow_null=True, help_text="Sum of volCcyQuote (null if any is missing).")
    vwap = serializers.CharField(allow_null=True, help_text="Volume-weighted average price, 8 decimals.")
    vwap_method = serializers.ChoiceField(
        choices=["quote_volume", "typical_price"], allow_null=True,
        help_text="quote_volume: quote volume / base volume (exact traded average); typical_price: "
                  "(high + low + close) / 3 weighted by vol, when quote volumes are missing.",
    )
    candle_count = serializers.IntegerField()
    expected_candles = serializers.IntegerField(help_text="Open times of the bar in the period, from listing.")
    completeness_percent = serializers.CharField(help_text="candle_count / expected_candles × 100, 2 decimals.")


class StatisticsSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    period = serializers.CharField()
    start = serializers.DateTimeField(help_text="Start of the period (now - period).")
    end = serializers.DateTimeField(help_text="End of the period (now).")
    statistics = StatisticsValuesSerializer()


class MarketSymbolSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    timeframe = serializers.CharField(help_text="The symbol's shortest subscribed bar, which the figures use.")
    last_price = serializers.CharField(allow_null=True, help_text="Close of the newest candle.")
    last_time = serializers.DateTimeField(allow_null=True, help_text="Open time of the newest candle.")
    open_24h = serializers.CharField(allow_null=True, help_text="Open of the first candle of the last 24 h.")
    change_24h_percent = serializers.CharField(allow_null=True)
    high_24h = serializers.CharField(allow_null=True)
    low_24h = serializers.CharField(allow_null=True)
    volume_24h = serializers.CharField(allow_null=True, help_text="Sum of vol over the last 24 h.")
    volume_quote_24h = serializers.CharField(allow_null=True, help_text="Sum of volCcyQuote over the last 24 h.")


class MarketOverviewSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    count = serializers.IntegerField()
    symbols = MarketSymbolSerializer(many=True)

