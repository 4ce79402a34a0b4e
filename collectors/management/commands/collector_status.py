"""Show the collectors, their channels and the pipeline as aligned tables, or as JSON.

    manage.py collector_status [--symbol BTC-USDT] [--json] [--watch 2]

Everything is read through the pipeline's read-only status views (`collectors.pipeline.status`) plus the
subscriptions in PostgreSQL, so a subscription that no collector has picked up yet shows too. When Redis or
PostgreSQL cannot be reached the command says which, and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from candles.bars import BarSpec
from candles.models import Instrument, Subscription, Timeframe
from collectors.pipeline.connections import pipeline_keys, redis_client
from collectors.pipeline.status import (
    ChannelStatus,
    CollectorStatus,
    channel_statuses,
    collector_statuses,
    pipeline_overview,
)
from okxproject.cli import duration, is_tty, raw_stream, redacted_url

NONE = "-"
# Clear the screen and go home: each --watch frame replaces the previous one on a terminal.
CLEAR = "\x1b[H\x1b[2J"


class Unavailable(Exception):
    """Redis or PostgreSQL cannot be reached; the message says which and what was tried."""


class Command(BaseCommand):
    help = ("Show the collectors (connections, channels, messages, reconnects, heartbeat), every channel and "
            "subscription (state, last message, lag of the last confirmed candle, errors) and the pipeline "
            "(buffer depth, dead letters, last flush), from Redis and PostgreSQL.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbol", metavar="SYMBOL", help="only the channels of this instrument (exact id)")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="machine-readable output (one JSON document)")
        parser.add_argument("--watch", type=_positive_seconds, metavar="N",
                            help="refresh every N seconds until Ctrl-C (with --json: one document per line)")

    def handle(self, *args, symbol: str | None, as_json: bool, watch: float | None, **options: Any) -> None:
        out = raw_stream(self.stdout)
        if symbol is not None:
            _check_symbol(symbol)
        if watch is None:
            try:
                snapshot = status_snapshot(symbol=symbol)
            except Unavailable as exc:
                raise CommandError(str(exc)) from None
            out.write(_as_json(snapshot, indent=2) if as_json else render(snapshot))
            return
        self._watch(out, symbol=symbol, as_json=as_json, every_s=watch)

    def _watch(self, out: Any, *, symbol: str | None, as_json: bool, every_s: float) -> None:
        """Frames until Ctrl-C; the exit status says whether the last frame could be read."""
        clear = is_tty(out) and not as_json
        failure: str | None = None
        # A service manager's stop ends it like Ctrl-C (signals reach only the main thread).
        installed = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if installed else None
        try:
            while True:
                close_old_connections()  # a connection PostgreSQL dropped since the last frame is replaced
                try:
                    snapshot = status_snapshot(symbol=symbol)
                    frame = _as_json(snapshot) if as_json else render(snapshot)
                    failure = None
                except Unavailable as exc:
                    failure = str(exc)
                    frame = _as_json({"at": time.time(), "error": failure}) if as_json else f"{failure}\n"
                if as_json:
                    out.write(frame)
                else:
                    stamp = f"every {duration(every_s)}, {_iso(time.time())}; Ctrl-C stops"
                    out.write(f"{CLEAR if clear else ''}-- collector_status, {stamp}\n{frame}\n")
                out.flush()
                time.sleep(every_s)
        except KeyboardInterrupt:
            pass
        finally:
            if installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if failure is not None:
            raise CommandError(failure)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the interval must be a positive number of seconds")
    return value


def _check_symbol(symbol: str) -> None:
    """A symbol filter that matches nothing is a typo more often than not: say so."""
    try:
        known = Instrument.objects.filter(inst_id=symbol).exists()
    except DatabaseError as exc:
        raise CommandError(f"PostgreSQL is unreachable: {exc}".strip()) from None
    if not known:
        raise CommandError(f"unknown instrument {symbol!r} (ids are exact, e.g. BTC-USDT)")


# --- reading --------------------------------------------------------------------------------------------


def status_snapshot(*, symbol: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Collectors, channels (joined with subscriptions) and the pipeline overview, as plain data.

    Raises Unavailable when Redis or PostgreSQL cannot be reached.
    """
    now = time.time() if now is None else now
    keys = pipeline_keys()
    redis = redis_client()
    try:
        collectors = collector_statuses(redis, keys, now=now)
        channels = channel_statuses(redis, keys)
        overview = pipeline_overview(redis, keys, now=now)
    except RedisError as exc:
        raise Unavailable(f"Redis at {redacted_url(settings.REDIS_URL)} is unreachable: {exc}") from None
    try:
        timeframes = {tf.code: tf for tf in Timeframe.objects.all()}
        subscriptions = list(Subscription.objects.values_list(
            "instrument__inst_id", "timeframe__code", "is_active", "status", "status_message"))
    except DatabaseError as exc:
        raise Unavailable(f"PostgreSQL is unreachable: {exc}".strip()) from None
    return {
        "at": now,
        "collectors": [_collector(c, now) for c in collectors],
        "channels": _channels(channels, subscriptions, timeframes, symbol, now),
        "pipeline": overview,
    }


def _collector(status: CollectorStatus, now: float) -> dict[str, Any]:
    data = asdict(status)
    data["heartbeat_age_s"] = _age(status.heartbeat_at, now)
    return data


def _channels(
    channels: dict[tuple[str, str], ChannelStatus],
    subscriptions: Iterable[tuple[str, str, bool, str, str]],
    timeframes: dict[str, Timeframe],
    symbol: str | None,
    now: float,
) -> list[dict[str, Any]]:
    """One row per (instrument, bar) that has a channel status, a subscription, or both."""
    subscribed = {(inst_id, bar): (active, status, message) for inst_id, bar, active, status, message in subscriptions}
    order = {code: tf.display_order for code, tf in timeframes.items()}
    pairs = sorted(set(channels) | set(subscribed), key=lambda p: (p[0], order.get(p[1], 1 << 16), p[1]))
    rows = []
    for inst_id, bar in pairs:
        if symbol is not None and inst_id != symbol:
            continue
        channel = channels.get((inst_id, bar))
        active, status, message = subscribed.get((inst_id, bar), (None, None, None))
        tf = timeframes.get(bar)
        rows.append({
            "symbol": inst_id,
            "bar": bar,
            "subscription": None if active is None else ("active" if active else "paused"),
            "status": status,
            "status_message": message or None,
            "state": channel.state if channel else None,
            "collector": channel.collector if channel else None,
            "last_message_at": channel.last_message_at if channel else None,
            "last_message_age_s": _age(channel.last_message_at, now) if channel else None,
            "last_confirmed_open": channel.last_confirmed_open if channel else None,
            "confirmed_lag_s": _lag(channel, tf.spec if tf else None, now) if channel else None,
            "reconnects": channel.reconnects if channel else 0,
            "error": channel.error if channel else None,
        })
    return rows


def _age(moment: float | None, now: float) -> float | None:
    return None if moment is None else round(max(0.0, now - moment), 3)


def _lag(channel: ChannelStatus, spec: BarSpec | None, now: float) -> float | None:
    """Seconds since the last confirmed candle closed (a healthy channel stays under one bar plus a little)."""
    if channel.last_confirmed_open is None or spec is None:
        return None
    return round(max(0.0, now - spec.following(channel.last_confirmed_open) / 1000), 3)


def _as_json(data: Any, indent: int | None = None) -> str:
    return json.dumps(data, indent=indent, separators=None if indent else (",", ":")) + "\n"


# --- rendering ------------------------------------------------------------------------------------------


def render(snapshot: dict[str, Any]) -> str:
    """The snapshot as plain text: two aligned tables and a summary line."""
    lines: list[str] = []
    collectors = snapshot["collectors"]
    alive = sum(1 for c in collectors if c["alive"])
    lines.append(f"Collectors: {alive} of {len(collectors)} alive" if collectors else
                 "Collectors: none (start one: make run, or manage.py run_collector)")
    if collectors:
        lines += table(
            ("ID", "ALIVE", "SHARDS", "CONNECTIONS", "CHANNELS", "MESSAGES", "RECONNECTS", "ERRORS", "HEARTBEAT"),
            [(c["id"], "yes" if c["alive"] else "NO", _shards(c["shards"]), _connections(c["connections"]),
              _int(c["channels"]), _int(c["messages"]), _int(c["reconnects"]), _int(c["errors"]),
              _ago(c["heartbeat_age_s"])) if not c["details_missing"] else
             (c["id"], "yes" if c["alive"] else "NO", NONE, NONE, NONE, NONE, NONE, NONE, _ago(c["heartbeat_age_s"]))
             for c in collectors],
            numeric={4, 5, 6, 7},
        )
    lines.append("")
    channels = snapshot["channels"]
    states = Counter(row["state"] or "not collected" for row in channels)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    lines.append(f"Channels: {len(channels)} ({counts})" if channels else "Channels: none")
    if channels:
        lines += table(
            ("SYMBOL", "BAR", "SUBSCRIPTION", "STATE", "LAST MESSAGE", "CONFIRMED LAG", "RECONNECTS", "ERROR"),
            [(row["symbol"], row["bar"], _subscription(row), row["state"] or NONE, _ago(row["last_message_age_s"]),
              _since(row["confirmed_lag_s"]), _int(row["reconnects"]), row["error"] or NONE)
             for row in channels],
            numeric={6},
        )
    lines.append("")
    lines.append(_summary(snapshot["pipeline"]))
    return "\n".join(lines) + "\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Collection[int] = ()) -> list[str]:
    """Columns padded to their widest cell; `numeric` columns right-aligned. The last column is not padded."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [str(cell).rjust(width) if i in numeric else str(cell).ljust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return [line(headers), *map(line, rows)]


def _summary(pipeline: dict[str, Any]) -> str:
    buffer = pipeline["buffer"]
    flush = pipeline["last_flush"]
    if flush is None:
        last = "no flush yet"
    else:
        took = f", {flush['duration_ms']:,} ms" if flush.get("duration_ms") is not None else ""
        rows = f" ({_int(flush.get('rows'))} rows, {_int(flush.get('written'))} written{took})"
        last = f"last flush {_ago(flush.get('age_s'))}{rows}"
    return (f"Buffer depth {buffer['depth']:,} (live {buffer['live']:,}, being flushed {buffer['taken']:,}); "
            f"dead letters {pipeline['dead_letters']:,}; REST queue {pipeline['rest_needed']:,}; {last}")


def _subscription(row: dict[str, Any]) -> str:
    if row["subscription"] is None:
        return "none"
    if row["subscription"] == "paused":
        return "paused"
    return row["status"] or "active"


def _shards(shards: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    if not shards:
        return NONE
    runs: list[list[int]] = []
    for shard in sorted(shards):
        if runs and shard == runs[-1][1] + 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _connections(connections: list[dict[str, Any]]) -> str:
    """"2 open, 1 backoff"."""
    if not connections:
        return NONE
    states = Counter(c["state"] for c in connections)
    return ", ".join(f"{n} {state}" for state, n in sorted(states.items()))


def _int(value: Any) -> str:
    return NONE if value is None else f"{value:,}"


def _ago(age_s: float | None) -> str:
    return NONE if age_s is None else f"{duration(age_s)} ago"


def _since(age_s: float | None) -> str:
    return NONE if age_s is None else duration(age_s)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
