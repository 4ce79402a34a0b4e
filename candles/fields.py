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


class CandleSourceField(models.CharField):
    """A candle's source: `ws`/`rest` in Python, one byte (`"char"`: `w`/`r`) in the database.

    The candle row is the table that grows by millions a day; a varchar cost 3–5 bytes where one does.
    Lookups, fixtures and the API keep speaking `ws`/`rest`: values are translated both ways here.
    """

    description = "Candle source (ws or rest), stored as one byte"
    TO_DB = {"ws": "w", "rest": "r"}
    FROM_DB = {"w": "ws", "r": "rest"}

    def __init__(self, *args, **kwargs):
        kwargs["max_length"] = 4
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("max_length", None)
        return name, path, args, kwargs

    def db_type(self, connection) -> str:
        return '"char"'

    def cast_db_type(self, connection) -> str:
        return '"char"'

    def from_db_value(self, value, expression, connection):
        return None if value is None else self.FROM_DB.get(value, value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        # Unknown text goes through as given, so that the table's CHECK constraint names the mistake.
        return None if value is None else self.TO_DB.get(value, value)
