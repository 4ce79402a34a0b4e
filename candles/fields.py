"""Exact decimal storage without a fixed scale.

OKX sends prices and volumes as decimal strings whose scale varies by instrument (`0.00000001`,
`17447600.212916623`). PostgreSQL's unconstrained `numeric` keeps every digit as given, so a value reads
back exactly as OKX wrote it. Django's DecimalField insists on max_digits/decimal_places; this field
drops that requirement and maps to plain `numeric`.
"""

from __future__ import annotations

from django.db import models


class ExactDecimalField(models.DecimalField):
    description = "Exact decimal number of any scale (PostgreSQL numeric)"

    def __init__(self, *args, **kwargs):
        kwargs.pop("max_digits", None)
        kwargs.pop("decimal_places", None)
        super().__init__(*args, max_digits=None, decimal_places=None, **kwargs)

    def _check_decimal_places_and_max_digits(self, **kwargs):
        return []

    def _check_decimal_places(self):
        return []

    def _check_max_digits(self):
        return []

    def db_type(self, connection) -> str:
        return "numeric"

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("max_digits", None)
        kwargs.pop("decimal_places", None)
        return name, path, args, kwargs
