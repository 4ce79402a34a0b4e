"""Exact decimal strings from integers: no float formatting artefacts, no trailing zeros (OKX style)."""

from __future__ import annotations


def scaled(value: int, exponent: int) -> str:
    """`value × 10**exponent` as OKX writes numbers: "43000", "43253.6", "0.00012", "0"."""
    if exponent >= 0 or value == 0:
        return str(value * 10**max(exponent, 0))
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(-exponent + 1, "0")
    whole, fraction = digits[:exponent], digits[exponent:].rstrip("0")
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


def unit_string(exponent: int) -> str:
    """`10**exponent` as a string: tick and lot sizes ("0.1", "0.00000001", "1000")."""
    return scaled(1, exponent)
