"""Bulk subscribe: the admin's form that subscribes many instruments × bars at once, with the filters that pick
the instruments (type, quote currency, a name pattern) and the limits that keep one submission bounded.
"""

from __future__ import annotations

from datetime import datetime

from django import forms
from django.contrib.admin import widgets as admin_widgets
from django.db.models import Q, QuerySet
from django.utils import timezone

from candles import admin_archives, admin_candles, admin_rules  # noqa: F401  (register their screens; kept in their own modules)
from candles.models import (
    Instrument,
    InstrumentType,
    PriceKind,
    Timeframe,
)

# Instruments × bars one bulk subscribe may create; each pair is a channel the collectors must carry.
MAX_BULK_PAIRS = 2_000
# Instruments offered in the bulk subscribe picker (narrow with the filters, or tick "all matching").
MAX_PICKER_INSTRUMENTS = 3_000
# Subscriptions a result page links to as one changelist filter (`?id__in=`): URLs must stay short.
MAX_LINKED_IDS = 400


# --- bulk subscribe ------------------------------------------------------------------------------------


def subscribable_instruments() -> QuerySet[Instrument]:
    """What `subscriptions_create` accepts: live instruments OKX still lists."""
    return Instrument.objects.filter(state="live", delisted_at__isnull=True)


class InstrumentFilterForm(forms.Form):
    """Narrows the instruments offered by the bulk subscribe page (sent with GET, carried along in the POST).

    `price` picks which rows are offered and subscribed: every instrument id has a trade row, a derivative a mark
    row too, an index an index row only (docs/price-kinds.md); empty means trade, as before price kinds.
    """

    price = forms.ChoiceField(label="series", required=False, choices=[
        ("", "trade (OKX's trades)"), (PriceKind.MARK, "mark price"), (PriceKind.INDEX, "index")])
    inst_type = forms.ChoiceField(label="type", required=False)
    quote_ccy = forms.ChoiceField(label="quote currency", required=False)
    q = forms.CharField(label="search", required=False, max_length=64)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        live = subscribable_instruments()
        self.fields["inst_type"].choices = [("", "any type")] + [
            (value, label) for value, label in InstrumentType.choices
        ]
        quotes = live.exclude(quote_ccy="").order_by("quote_ccy").values_list("quote_ccy", flat=True).distinct()
        self.fields["quote_ccy"].choices = [("", "any quote currency")] + [(q, q) for q in quotes]

    def matching(self) -> QuerySet[Instrument]:
        instruments = subscribable_instruments()
        if not self.is_valid():
            return instruments.none()
        data = self.cleaned_data
        instruments = instruments.filter(price=self.price_kind())
        if data["inst_type"]:
            instruments = instruments.filter(inst_type=data["inst_type"])
        if data["quote_ccy"]:
            instruments = instruments.filter(quote_ccy=data["quote_ccy"])
        if data["q"]:
            term = data["q"].strip()
            instruments = instruments.filter(
                Q(inst_id__icontains=term) | Q(base_ccy__iexact=term) | Q(inst_family__icontains=term)
            )
        return instruments.order_by("inst_id")

    def price_kind(self) -> str:
        """The series kind chosen (trade unless mark or index); call after is_valid."""
        return self.cleaned_data.get("price") or PriceKind.TRADE


class BulkSubscribeForm(forms.Form):
    instruments = forms.ModelMultipleChoiceField(
        queryset=Instrument.objects.none(), required=False,
        widget=admin_widgets.FilteredSelectMultiple("instruments", is_stacked=False),
    )
    all_matching = forms.BooleanField(
        required=False, label="Every instrument matching the filter",
        help_text="Instead of picking: subscribe every live instrument the filter above matches.",
    )
    timeframes = forms.ModelMultipleChoiceField(
        queryset=Timeframe.objects.none(), to_field_name="code", widget=forms.CheckboxSelectMultiple,
        help_text="Bars are case-sensitive: 1m is a minute, 1M a month.",
    )
    backfill_from = forms.SplitDateTimeField(
        required=False, label="History from (UTC)", widget=admin_widgets.AdminSplitDateTime,
        help_text="Optional: fetch candles from this moment on through REST. Empty: only the recent past.",
    )
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https",
                                 help_text="Optional: POST every confirmed candle of these subscriptions here.")

    def __init__(self, *args, matching: QuerySet[Instrument], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.matching = matching
        self.fields["instruments"].queryset = matching
        self.fields["timeframes"].queryset = Timeframe.objects.filter(is_active=True).order_by("display_order")

    def clean_backfill_from(self) -> datetime | None:
        value = self.cleaned_data["backfill_from"]
        if value is not None and value > timezone.now():
            raise forms.ValidationError("History cannot start in the future.")
        return value

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        if data.get("all_matching"):
            inst_ids = list(self.matching.values_list("inst_id", flat=True))
        else:
            inst_ids = [instrument.inst_id for instrument in data.get("instruments") or ()]
        if not inst_ids:
            raise forms.ValidationError("Pick at least one instrument, or tick “every instrument matching”.")
        pairs = len(inst_ids) * len(data["timeframes"])
        if pairs > MAX_BULK_PAIRS:
            raise forms.ValidationError(
                f"That is {pairs:,} subscriptions; at most {MAX_BULK_PAIRS:,} at once. Narrow the filter."
            )
        data["inst_ids"] = inst_ids
        return data
