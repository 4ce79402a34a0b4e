"""Readers of status entries as the collector runtime wrote them: a value of the wrong shape raises `Garbled`,
and a read that skips such entries says so in one warning line (`Skipped`)."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson

logger = logging.getLogger("collectors.monitoring.status")  # the warnings belong to the status reads


class Garbled(ValueError):
    """A status entry that does not have the shape the collector runtime writes."""



def json_object(raw: str | bytes, error: type[ValueError] = Garbled) -> dict[str, Any]:
    """`raw` as a JSON object; `error` (Garbled by default) when it is not JSON or not an object."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error("not a JSON object")
    return data


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def opt_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | bytes):
        raise Garbled(f"{name} is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise Garbled(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise Garbled(f"{name} is not finite: {value!r}")
    return number


def opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise Garbled(f"{name} is not an integer: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str | bytes):
        try:
            return int(value)
        except ValueError:
            pass
    raise Garbled(f"{name} is not an integer: {value!r}")


def int_field(value: Any, name: str) -> int:
    number = opt_int(value, name)
    return 0 if number is None else number


def opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Garbled(f"{name} is not a string: {value!r}")
    return value


class Skipped:
    """Collects skipped entries of one read and logs them in one line."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.entries: list[str] = []

    def add(self, key: Any, reason: Any) -> None:
        self.entries.append(f"{text(key)!r}: {reason}")

    def log(self) -> None:
        if self.entries:
            shown = "; ".join(self.entries[:5])
            more = f" (and {len(self.entries) - 5} more)" if len(self.entries) > 5 else ""
            logger.warning("skipped %d garbled %s: %s%s", len(self.entries), self.what, shown, more)


def number(value: Any) -> int | float:
    raw = text(value)
    try:
        return int(raw)
    except ValueError:
        number = float(raw)  # ValueError for garbage: handled by the caller
        if not math.isfinite(number):
            raise ValueError(f"not finite: {raw}") from None
        return number


def numbers(raw: dict[Any, Any], what: str) -> dict[str, int | float]:
    numbers: dict[str, int | float] = {}
    skipped = Skipped(what)
    for name, value in raw.items():
        try:
            numbers[text(name)] = number(value)
        except ValueError:
            skipped.add(name, f"not a number: {text(value)!r}")
    skipped.log()
    return dict(sorted(numbers.items()))
