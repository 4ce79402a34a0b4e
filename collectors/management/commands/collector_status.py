"""Show the collectors, the subscriptions in summary and the pipeline as aligned tables, or as JSON.

    manage.py collector_status [--channels] [--symbol BTC-USDT] [--state stale] [--bar 1m] [--json] [--watch 2]

By default the subscriptions are a summary (counts by state, the worst confirmation lags, the troubled ones by
name), readable at 27,000 subscriptions; the table of every channel comes with --channels or any filter
(--symbol, --state, --bar), and by itself on a small system (at most AUTO_CHANNELS channels).

Everything is read through the pipeline's read-only status views (`collectors.monitoring.status`) plus the
subscriptions in PostgreSQL, so a subscription that no collector has picked up yet shows too. When Redis or
PostgreSQL cannot be reached the command says which, and exits with status 1.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from candles.bars import BarSpec
from candles.models import Instrument, Subscription, SubscriptionStatus, Timeframe
from collectors.api.subscriptions import worst_lags
from collectors.api.system import subscription_counts, subscription_summary, troubled
from collectors.monitoring.status import (
    ChannelStatus,
    CollectorStatus,
    channel_statuses,
    collector_statuses,
    pipeline_overview,
    priced_bars,
)
from collectors.okx.protocol import PRICE_KINDS
from collectors.shared.connections import pipeline_keys, redis_client
from okxproject.cli import duration, is_tty, positive_seconds, raw_stream, redacted_url, sigterm_as_interrupt
from okxproject.keys import priced_bar, split_priced_bar

NONE = "-"
STATES = (*SubscriptionStatus.values, "paused")
# Up to this many channels, the channel table is shown without being asked for.
AUTO_CHANNELS = 50
# Lagging and troubled channels named in the summary.
EXAMPLES = 10
# Clear the screen and go home: each --watch frame replaces the previous one on a terminal.
CLEAR = "\x1b[H\x1b[2J"


class Unavailable(Exception):
    """Redis or PostgreSQL cannot be reached; the message says which and what was tried."""


class Command(BaseCommand):
    help = ("Show the collectors (connections, channels, messages, reconnects, heartbeat), every channel and "
            "subscription (state, last message, lag of the last confirmed candle, errors) and the pipeline "
            "(buffer depth, dead letters, last flush), from Redis and PostgreSQL.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--channels", action="store_true", help="list every channel (filtered by the options "
                            "below); by default only on a small system")
        parser.add_argument("--symbol", metavar="SYMBOL", help="only the channels of this instrument (exact id)")
        parser.add_argument("--state", choices=STATES, help="only the channels of subscriptions in this state")
        parser.add_argument("--bar", metavar="BAR", help="only the channels of this bar (exact, e.g. 1m)")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="machine-readable output (one JSON document)")
        parser.add_argument("--watch", type=positive_seconds, metavar="N",
                            help="refresh every N seconds until Ctrl-C (with --json: one document per line)")

    def handle(self, *args, symbol: str | None, as_json: bool, watch: float | None, channels: bool = False,
               state: str | None = None, bar: str | None = None, **options: Any) -> None:
        out = raw_stream(self.stdout)
        if symbol is not None:
            _check_symbol(symbol)
        self.filters = {"symbol": symbol, "state": state, "bar": bar,
                        "channels": True if channels or symbol or state or bar else None}
        if watch is None:
            try:
                snapshot = status_snapshot(**self.filters)
            except Unavailable as exc:
                raise CommandError(str(exc)) from None
            out.write(_as_json(snapshot, indent=2) if as_json else render(snapshot))
            return
        self._watch(out, symbol=symbol, as_json=as_json, every_s=watch)

    def _watch(self, out: Any, *, symbol: str | None, as_json: bool, every_s: float) -> None:
        """Frames until Ctrl-C; the exit status says whether the last frame could be read."""
        clear = is_tty(out) and not as_json
        failure: str | None = None
        # A service manager's stop ends it like Ctrl-C.
        with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            while True:
                close_old_connections()  # a connection PostgreSQL dropped since the last frame is replaced
                try:
                    snapshot = status_snapshot(**self.filters)
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
        if failure is not None:
            raise CommandError(failure)


def _check_symbol(symbol: str) -> None:
    """A symbol filter that matches nothing is a typo more often than not: say so."""
    try:
        known = Instrument.objects.filter(inst_id=symbol).exists()
    except DatabaseError as exc:
        raise CommandError(f"PostgreSQL is unreachable: {exc}".strip()) from None
    if not known:
        raise CommandError(f"unknown instrument {symbol!r} (ids are exact, e.g. BTC-USDT)")


# --- reading --------------------------------------------------------------------------------------------


def status_snapshot(*, symbol: str | None = None, state: str | None = None, bar: str | None = None,
                    channels: bool | None = None, now: float | None = None) -> dict[str, Any]:
    """Collectors, the subscriptions in summary, the pipeline overview and, when asked for (or when there are
    at most AUTO_CHANNELS of them), the channels joined with their subscriptions, as plain data.

    The summary costs the same whatever the subscriptions: GROUP BYs, a few named examples and the head of
    each bar's last-confirmed ZSET. Raises Unavailable when Redis or PostgreSQL cannot be reached.
    """
    now = time.time() if now is None else now
    keys = pipeline_keys()
    redis = redis_client()
    try:
        collectors = collector_statuses(redis, keys, now=now)
        overview = pipeline_overview(redis, keys, now=now)
        detail = channels if channels is not None else redis.hlen(keys.channel_status) <= AUTO_CHANNELS
    except RedisError as exc:
        raise Unavailable(f"Redis at {redacted_url(settings.REDIS_URL)} is unreachable: {exc}") from None
    try:
        timeframes = {tf.code: tf for tf in Timeframe.objects.all()}
        summary = subscription_summary()
        counts = subscription_counts(summary)
        detail = detail and counts["total"] <= AUTO_CHANNELS if channels is None else detail
        troubled_rows = {name: troubled(name, summary.by_status.get(name, 0), EXAMPLES)
                         for name in (SubscriptionStatus.ERROR, SubscriptionStatus.STALE)}
        listed = Subscription.objects.all() if symbol is None else Subscription.objects.filter(
            instrument__inst_id=symbol)
        subscriptions = [(inst_id, priced_bar(bar, price), *rest) for inst_id, bar, price, *rest in listed.values_list(
            "instrument__inst_id", "timeframe__code", "instrument__price", "is_active", "status", "status_message",
        )] if detail else []
    except DatabaseError as exc:
        raise Unavailable(f"PostgreSQL is unreachable: {exc}".strip()) from None
    try:
        lags = worst_lags(redis, keys, {code: tf.spec for code, tf in timeframes.items()}, now=now, limit=EXAMPLES)
        if not detail:
            channel_map = {}
        elif symbol is not None:  # the instrument's channels only: a row and two scores for each of its bars
            channel_map = channel_statuses(redis, keys, [(symbol, bar) for bar in priced_bars(timeframes)])
        else:
            channel_map = channel_statuses(redis, keys)
    except RedisError as exc:
        raise Unavailable(f"Redis at {redacted_url(settings.REDIS_URL)} is unreachable: {exc}") from None
    snapshot = {
        "at": now,
        "collectors": [_collector(c, now) for c in collectors],
        "subscriptions": counts,
        "worst_lags": [{"symbol": lag.symbol, "bar": lag.timeframe, "price": lag.price, "confirmed_lag_s": lag.lag_s}
                       for lag in lags],
        "troubled": {name: {"count": t.count, "examples": t.examples} for name, t in troubled_rows.items()},
        "pipeline": {**overview, "shards": overview["shards"].as_dict()},
    }
    if detail:
        rows = _channels(channel_map, subscriptions, timeframes, symbol, now)
        snapshot["channels"] = [row for row in rows if _matches(row, state, bar)]
    return snapshot


def _matches(row: dict[str, Any], state: str | None, bar: str | None) -> bool:
    if bar is not None and row["bar"] != bar:
        return False
    if state is None:
        return True
    if state == "paused":
        return row["subscription"] == "paused"
    return row["subscription"] == "active" and row["status"] == state


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
    """One row per (instrument, price kind, bar) that has a channel status, a subscription, or both. Both are
    keyed by (inst_id, priced bar): `1m`, or `mark:1m` for a mark-price channel (`keys.priced_bar`)."""
    subscribed = {(inst_id, bar): (active, status, message) for inst_id, bar, active, status, message in subscriptions}
    order = {code: tf.display_order for code, tf in timeframes.items()}
    kind_order = {kind: n for n, kind in enumerate(PRICE_KINDS)}

    def sort_key(pair: tuple[str, str]) -> tuple:
        bar, price = split_priced_bar(pair[1])
        return pair[0], kind_order.get(price, len(PRICE_KINDS)), order.get(bar, 1 << 16), bar

    rows = []
    for inst_id, part in sorted(set(channels) | set(subscribed), key=sort_key):
        if symbol is not None and inst_id != symbol:
            continue
        channel = channels.get((inst_id, part))
        active, status, message = subscribed.get((inst_id, part), (None, None, None))
        bar, price = split_priced_bar(part)
        tf = timeframes.get(bar)
        rows.append({
            "symbol": inst_id,
            "bar": bar,
            "price": price,
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
    lines += _replicas(snapshot["pipeline"]["shards"])
    lines.append("")
    lines += _subscriptions_summary(snapshot)
    channels = snapshot.get("channels")
    if channels is None:
        lines.append("Channels: not listed (--channels, or filter with --state, --bar or --symbol)")
    else:
        states = Counter(row["state"] or "not collected" for row in channels)
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        lines.append(f"Channels: {len(channels)} ({counts})" if channels else "Channels: none")
    if channels:
        # The PRICE column only when a row is of another kind than trade: a trade-only system reads as before.
        priced = any(row["price"] != "trade" for row in channels)
        headers = ("SYMBOL", *(("PRICE",) if priced else ()), "BAR", "SUBSCRIPTION", "STATE", "LAST MESSAGE",
                   "CONFIRMED LAG", "RECONNECTS", "ERROR")
        lines += table(headers, [
            (row["symbol"], *((row["price"],) if priced else ()), row["bar"], _subscription(row), row["state"] or NONE,
             _ago(row["last_message_age_s"]), _since(row["confirmed_lag_s"]), _int(row["reconnects"]),
             row["error"] or NONE)
            for row in channels], numeric={7 if priced else 6})
    lines.append("")
    lines.append(_summary(snapshot["pipeline"]))
    repair = snapshot["pipeline"].get("repair")
    if repair is not None:
        backlog = ", ".join(f"{p} {repair['backlog'][p]['candles']:,}" for p in repair["backlog"])
        eta = "not draining" if repair["eta_s"] is None else f"drained in about {duration(repair['eta_s'])}"
        lines.append(f"Repair backlog (candles): {backlog}; {eta}")
    return "\n".join(lines) + "\n"


def _replicas(shards: dict[str, Any]) -> list[str]:
    """With a hot standby (COLLECTOR_REPLICAS > 1), who holds each shard and on which host; else nothing."""
    wanted = shards["replicas"]
    if wanted == 1:
        return []
    short = shards["short"]
    lines = ["", f"Shards: {shards['shards']} × {wanted} replicas, "
                 + (f"{len(short)} short of a replica" if short else "every one held")]
    slots = ("PRIMARY", *(f"STANDBY {n}" if wanted > 2 else "STANDBY" for n in range(1, wanted)))
    rows = []
    for shard, held in enumerate(shards["holders"]):
        by_slot = {h["slot"]: f"{h['collector']} on {h['host'] or 'an unknown host'}" for h in held}
        rows.append((str(shard), *(by_slot.get(slot, NONE) for slot in range(wanted)),
                     "SHORT" if shard in short else ""))
    return lines + table(("SHARD", *slots, ""), rows, numeric={0})


def _subscriptions_summary(snapshot: dict[str, Any]) -> list[str]:
    """Counts by state, then the worst lags and the troubled subscriptions by name (a few of each)."""
    counts = snapshot["subscriptions"]
    if not counts["total"]:
        return []
    states = ", ".join(f"{n:,} {state}" for state, n in counts["by_state"].items() if n)
    lines = [f"Subscriptions: {counts['total']:,} ({states})"]
    for name, t in snapshot["troubled"].items():
        if t["count"]:
            shown = "; ".join(f"{e['symbol']} {e['timeframe']}" for e in t["examples"])
            more = f"; and {t['count'] - len(t['examples']):,} more" if t["count"] > len(t["examples"]) else ""
            lines.append(f"  {name}: {shown}{more}")
    if snapshot["worst_lags"]:
        lines.append("Worst confirmation lags:")
        priced = any(lag["price"] != "trade" for lag in snapshot["worst_lags"])
        lines += ["  " + line for line in table(("SYMBOL", *(("PRICE",) if priced else ()), "BAR", "CONFIRMED LAG"), [
            (lag["symbol"], *((lag["price"],) if priced else ()), lag["bar"], _since(lag["confirmed_lag_s"]))
            for lag in snapshot["worst_lags"]])]
    lines.append("")
    return lines


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
