"""Query-string parsing for the API: strict, every problem reported at once, never an exception past here.

    query = Query(request)
    limit = query.integer("limit", default=100, minimum=1, maximum=1000)
    start = query.time("start_time")
    query.done()          # raises one VALIDATION_ERROR naming every bad parameter

Text that reaches SQL is checked first: PostgreSQL refuses NUL characters in text, and names of symbols and
bars have a known shape, so anything else cannot exist and needs no query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from rest_framework.request import Request

from candles.bars import ms_to_datetime
from okxproject.api_errors import ApiError

# OKX instrument ids: BTC-USDT, BTC-USDT-SWAP, BTC-USD-240628-50000-C.
SYMBOL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# OKX bars: 1s, 1m, 1H, 1M, 6Hutc, 1Mutc.
TIMEFRAME_PATTERN = r"[0-9]{1,4}[A-Za-z]{1,7}"
_SYMBOL = re.compile(SYMBOL_PATTERN)
_TIMEFRAME = re.compile(TIMEFRAME_PATTERN)
_EPOCH_MS = re.compile(r"-?[0-9]{1,16}")
# ASCII digits only (int() would also take other scripts' digits and surrounding spaces).
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
# "…T19:00:00 08:00": a "+" of an offset that arrived unencoded in a query string, where it means a space.
_PLUS_AS_SPACE = re.compile(r"(.*[0-9]) ([0-9]{2}(:?[0-9]{2})?)")
_TRUE, _FALSE = "true", "false"

MAX_TEXT = 200


def is_symbol(value: str) -> bool:
    return bool(_SYMBOL.fullmatch(value))


def is_timeframe(value: str) -> bool:
    return bool(_TIMEFRAME.fullmatch(value))


def parse_time(raw: str) -> datetime:
    """An instant from ISO 8601 (naive means UTC) or epoch milliseconds; ValueError with a reason."""
    text = raw.strip()
    try:
        if _EPOCH_MS.fullmatch(text):
            return ms_to_datetime(int(text))
        plus = _PLUS_AS_SPACE.fullmatch(text)
        if plus and "T" in text:
            text = f"{plus.group(1)}+{plus.group(2)}"
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the supported range of dates") from None
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time or epoch milliseconds") from None


class Query:
    """Reads typed values from the query string and collects errors by parameter name."""

    def __init__(self, request: Request) -> None:
        self.params = request.query_params
        self.errors: dict[str, list[str]] = {}

    def _raw(self, name: str) -> str | None:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return None
        if "\x00" in raw or len(raw) > MAX_TEXT:
            self.error(name, f"must be at most {MAX_TEXT} characters of text")
            return None
        return raw

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def integer(self, name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
        raw = self._raw(name)
        if raw is None:
            return default
        if not _INTEGER.fullmatch(raw):
            self.error(name, "must be an integer")
            return default
        value = int(raw)
        if not minimum <= value <= maximum:
            self.error(name, f"must be between {minimum} and {maximum}")
            return default
        return value

    def boolean(self, name: str) -> bool | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if raw in (_TRUE, _FALSE):
            return raw == _TRUE
        self.error(name, "must be true or false")
        return None

    def choice(self, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return default
        allowed = list(choices)
        if raw not in allowed:
            self.error(name, f"must be one of {', '.join(allowed)}")
            return default
        return raw

    def time(self, name: str) -> datetime | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            return parse_time(raw)
        except ValueError as exc:
            self.error(name, str(exc))
            return None

    def text(self, name: str, *, max_length: int = 64, pattern: str | None = None) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if len(raw) > max_length:
            self.error(name, f"must be at most {max_length} characters")
            return None
        if pattern is not None and not re.fullmatch(pattern, raw):
            self.error(name, f"must match {pattern}")
            return None
        if not raw.isprintable():
            self.error(name, "must be printable text")
            return None
        return raw

    def done(self) -> None:
        if self.errors:
            raise ApiError("The request has invalid parameters; see details.", code="VALIDATION_ERROR",
                           details=self.errors)


def time_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start > end:
        raise ApiError("start_time is after end_time.", code="INVALID_TIME_RANGE",
                       details={"start_time": start.isoformat(), "end_time": end.isoformat()})
