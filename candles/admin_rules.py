"""The admin's screen of subscription rules (imported by candles/admin.py).

Saving, deleting and the actions go through candles.rules, so the subscriptions follow at once, set-based, and
the collectors are nudged once. The form's errors are the model's (shared with the API and the CLI); a rule
that matches nothing now is saved with a warning.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from candles.models import SubscriptionRule, Timeframe
from candles.rules import RuleOutcome, rule_save_and_materialize, rules_delete, rules_materialize


class SubscriptionRuleForm(forms.ModelForm):
    bars = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Ignored when “all active bars” is ticked. Case-sensitive: 1m is a minute, 1M a month.",
    )

    # https for a URL typed without a scheme (Django 6's default, asked for now to silence its warning).
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https",
                                 help_text="Receives a signed POST per confirmed candle of every subscription.")

    class Meta:
        model = SubscriptionRule
        fields = ["name", "description", "is_active", "price", "inst_type", "quote_ccy", "settle_ccy",
                  "inst_id_pattern", "all_bars", "bars", "backfill_from", "webhook_url"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Read per form, so bars added or switched off in the admin show at once.
        codes = Timeframe.objects.filter(is_active=True).values_list("code", flat=True)
        known = list(codes)
        # Keep a bar the rule lists that was switched off since, so the operator sees it (and the error).
        known += [code for code in (self.instance.bars or []) if code not in known]
        self.fields["bars"].choices = [(code, code) for code in known]


@admin.register(SubscriptionRule)
class SubscriptionRuleAdmin(admin.ModelAdmin):
    form = SubscriptionRuleForm
    list_display = ("name", "is_active", "price", "instruments_filter", "bars_label", "held", "updated_at")
    list_filter = ("is_active", "price", "inst_type")
    search_fields = ("name", "description", "inst_id_pattern")
    readonly_fields = ("created_at", "updated_at")
    actions = ("apply_rules", "activate", "deactivate")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_active")}),
        ("Series: the price kind, then instruments (every filter that is set must match)",
         {"fields": ("price", "inst_type", "quote_ccy", "settle_ccy", "inst_id_pattern")}),
        ("Bars", {"fields": ("all_bars", "bars")}),
        ("Subscriptions it creates", {"fields": ("backfill_from", "webhook_url")}),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SubscriptionRule]:
        return super().get_queryset(request).annotate(
            held_count=Count("subscriptions", filter=Q(subscriptions__is_active=True)),
        )

    @admin.display(description="instruments")
    def instruments_filter(self, obj: SubscriptionRule) -> str:
        parts = [f"type {obj.inst_type}" if obj.inst_type else "",
                 f"quote {obj.quote_ccy}" if obj.quote_ccy else "",
                 f"settle {obj.settle_ccy}" if obj.settle_ccy else "",
                 f"instId {obj.inst_id_pattern}" if obj.inst_id_pattern else ""]
        return ", ".join(p for p in parts if p) or "all"

    @admin.display(description="bars")
    def bars_label(self, obj: SubscriptionRule) -> str:
        return "all active" if obj.all_bars else " ".join(obj.bars)

    @admin.display(description="active subscriptions", ordering="held_count")
    def held(self, obj: SubscriptionRule) -> int:
        return obj.held_count

    def save_model(self, request: HttpRequest, obj: SubscriptionRule, form: forms.Form, change: bool) -> None:
        self._report(request, rule_save_and_materialize(rule=obj))

    def delete_model(self, request: HttpRequest, obj: SubscriptionRule) -> None:
        self.delete_queryset(request, SubscriptionRule.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SubscriptionRule]) -> None:
        messages.info(request, f"Subscriptions: {rules_delete(rules=queryset)}.")

    @admin.action(description="Apply every active rule now", permissions=["change"])
    def apply_rules(self, request: HttpRequest, queryset: QuerySet[SubscriptionRule]) -> None:
        self.message_user(request, f"Subscriptions: {rules_materialize()}.", messages.SUCCESS)

    @admin.action(description="Activate the selected rules", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[SubscriptionRule]) -> None:
        self._switch(request, queryset, active=True)

    @admin.action(description="Deactivate the selected rules (their subscriptions end)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[SubscriptionRule]) -> None:
        self._switch(request, queryset, active=False)

    def _switch(self, request: HttpRequest, queryset: QuerySet[SubscriptionRule], *, active: bool) -> None:
        with transaction.atomic():
            changed = queryset.filter(is_active=not active).update(is_active=active)
            result = rules_materialize()
        self.message_user(request, f"{changed} rule(s) {'activated' if active else 'deactivated'}; "
                                   f"subscriptions: {result}.", messages.SUCCESS)

    def _report(self, request: HttpRequest, outcome: RuleOutcome) -> None:
        messages.info(request, f"Rule {outcome.rule.name!r} matches {outcome.matches.instruments} instruments "
                               f"({outcome.matches.pairs} pairs); subscriptions: {outcome.materialized}.")
        for warning in outcome.warnings:
            messages.warning(request, warning)
