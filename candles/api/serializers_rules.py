"""Serializers of subscription rules: the request shapes (types only; the rule's own validation is the model's,
shared with the admin and the CLI) and the responses the OpenAPI schema documents."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from candles.api.serializers import InstantField, PastInstantField
from candles.models import InstrumentType, PriceKind, SubscriptionRule

ALL_BARS = "all"


@extend_schema_field({"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string", "enum": [ALL_BARS]}],
                      "description": 'Bar codes, case-sensitive (["1m", "1H"]), or "all" for every active bar.'})
class BarsField(serializers.Field):
    default_error_messages = {"invalid": 'Must be a list of bar codes (["1m", "1H"]) or "all".'}

    def to_internal_value(self, data: object) -> dict:
        if data == ALL_BARS:
            return {"all_bars": True, "bars": []}
        if isinstance(data, list) and all(isinstance(code, str) and 0 < len(code) <= 8 for code in data) \
                and len(data) <= 64:
            return {"all_bars": False, "bars": data}
        self.fail("invalid")

    def to_representation(self, rule: SubscriptionRule) -> str | list[str]:
        return ALL_BARS if rule.all_bars else list(rule.bars)


PRICE_HELP = ("Which series of the matching instruments: trade (OKX's trades, the default), mark (the mark price; "
              "type empty or SWAP, FUTURES, OPTION) or index (OKX's indices such as BTC-USD; type empty or INDEX, "
              "quote the id's second part). Mark and index have no 1s bar; `all` bars means every active bar but "
              "1s for them.")


class RuleWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    # Not given: trade on create, unchanged on PATCH.
    price = serializers.ChoiceField(choices=PriceKind.choices, required=False, help_text=PRICE_HELP)
    # The model's choice set exactly, so the schema has one InstTypeEnum (blank allowed: every type).
    inst_type = serializers.ChoiceField(choices=InstrumentType.choices, required=False, allow_blank=True,
                                        help_text="Empty: every type.")
    quote_ccy = serializers.CharField(max_length=32, required=False, allow_blank=True,
                                      help_text="Empty: any. A swap's, future's or index's is its id's second "
                                                "part.")
    settle_ccy = serializers.CharField(max_length=32, required=False, allow_blank=True)
    inst_id_pattern = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                            help_text="Glob: * any run, ? one character (BTC-*, *-USDT-SWAP).")
    bars = BarsField()
    backfill_from = PastInstantField(required=False, allow_null=True)
    webhook_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)

    def to_internal_value(self, data: object) -> dict:
        values = super().to_internal_value(data)
        values.update(values.pop("bars", {}))
        return values


class RuleSerializer(serializers.ModelSerializer):
    bars = BarsField(source="*")
    price = serializers.ChoiceField(choices=PriceKind.choices, help_text=PRICE_HELP)
    inst_type = serializers.ChoiceField(choices=InstrumentType.choices, allow_blank=True,
                                        help_text="Empty: every type.")
    backfill_from = InstantField(allow_null=True)
    # Not the model's URLField: "" (no webhook) is not a URI, and the schema must say what is sent.
    webhook_url = serializers.CharField(help_text="Receiver of a signed POST per confirmed candle; empty: none.")
    active_subscriptions = serializers.IntegerField(read_only=True, help_text="Active subscriptions it holds.")

    class Meta:
        model = SubscriptionRule
        fields = ["id", "name", "description", "price", "inst_type", "quote_ccy", "settle_ccy", "inst_id_pattern",
                  "bars", "backfill_from", "webhook_url", "is_active", "active_subscriptions", "created_at",
                  "updated_at"]
        read_only_fields = fields


class RuleMatchSerializer(serializers.Serializer):
    instruments = serializers.IntegerField(help_text="Collectable instruments the rule matches now.")
    pairs = serializers.IntegerField(help_text="Instruments × active bars.")


class MaterializedSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField(help_text="Taken over from another rule, resumed, or given new settings.")
    ended = serializers.IntegerField(help_text="Held subscriptions no active rule matches any more.")
    finished = serializers.IntegerField(help_text="Subscriptions of expired or delisted instruments ended.")


class RuleOutcomeSerializer(serializers.Serializer):
    rule = RuleSerializer()
    matches = RuleMatchSerializer()
    materialized = MaterializedSerializer()
    warnings = serializers.ListField(child=serializers.CharField(),
                                     help_text="E.g. the rule matches no instrument now (saved all the same).")


class RulePageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = RuleSerializer(many=True)
