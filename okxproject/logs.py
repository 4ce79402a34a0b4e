"""Structured logs: JSON lines in production, readable lines in development, context on every line.

Code that works for one request, task or channel binds its context once (`log_context(request_id=...)`,
`log_context(inst_id="BTC-USDT", bar="1m")`) and every line logged inside the block carries it, including
lines from libraries. Context lives in a ContextVar, so concurrent asyncio tasks and threads each see their
own.

    LOGGING = logging_config(level="INFO", fmt="json")
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import orjson

_context: ContextVar[dict[str, Any]] = ContextVar("okx_candles_log_context", default={})  # noqa: B039 (never mutated)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is worth printing.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "context"}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields to every log line written inside the block (nested blocks add to the outer ones)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the bound context and any `extra=` fields into `record.context`."""

    def filter(self, record: logging.LogRecord) -> bool:
        extra = {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRS}
        record.context = {**_context.get(), **extra}
        return True


def _context_of(record: logging.LogRecord) -> dict[str, Any]:
    context = getattr(record, "context", None)
    if context is None:  # a handler without the filter: still show the bound context
        context = _context.get()
    return context


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC ISO 8601), level, logger, message, the context, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _context_of(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class ReadableFormatter(logging.Formatter):
    """`2026-11-24 10:00:00,123 INFO collectors.backfill filled 300 candles  inst_id=BTC-USDT bar=1m`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context_of(record)
        if not context:
            return line
        pairs = " ".join(f"{key}={value}" for key, value in context.items())
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields, not before them
        return f"{head}  {pairs}{sep}{tail}"


def _iso_utc(epoch_s: float) -> str:
    seconds = int(epoch_s)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((epoch_s - seconds) * 1000):03d}Z"


# Celery's loggers that write a line per task: received (worker), succeeded with its whole return value (trace),
# sent by beat. At OKX's scale that is several lines a second that say nothing is wrong; a failed task is still
# logged, at ERROR, by the trace logger.
TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


def logging_config(*, level: str, fmt: str, log_tasks: bool = False) -> dict[str, Any]:
    """Django's LOGGING: every line to stderr through the context filter, as JSON or readable text. Without
    `log_tasks` (LOG_TASKS), Celery's line per task is kept below INFO so the console shows what matters."""
    formatter = {"()": JsonFormatter} if fmt == "json" else {"()": ReadableFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"main": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # SQL is logged at DEBUG by Django; keep it out even when the rest is at DEBUG.
            "django.db.backends": {"level": "INFO"},
            # httpx and httpcore log every REST request at INFO: at OKX's budgets (30 a second) that is a line
            # and its formatting per request, with nothing an operator acts on; failures are logged by our client.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            **({} if log_tasks else {name: {"level": "WARNING"} for name in TASK_LOGGERS}),
        },
    }
