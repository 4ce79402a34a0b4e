"""Read-only views of the pipeline's Redis status, for the health task, the REST API and the admin.

The collector runtime writes these keys (see `keys.py`; a channel's status is its row in `channel_status`
plus its scores in the per-bar `channel_seen` and `channel_confirmed` ZSETs, written by `status_writer.py`);
this module only reads them, for the channels asked for or per bar from the ZSETs' counts and heads, never by
reading every channel. An entry that does not parse (a partial write, a hand edit) is skipped with one
warning per read, never raised: a status page must not fail because one channel's status is garbled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings

from collectors.monitoring.parsing import (
    Garbled,
    Skipped,
    int_field,
    json_object,
    numbers,
    opt_float,
    opt_int,
    opt_str,
    text,
)
from collectors.monitoring.repair_report import repair_report_decode
from collectors.monitoring.replicas import replicas_parse, replicas_queue
from collectors.okx.protocol import PRICE_KINDS, TRADE, TRADE_ONLY_BARS
from collectors.okx.ws_contract import ConnectionStatus  # the shape the runtime publishes
from okxproject.keys import Keys, priced_bar, split_priced_bar

logger = logging.getLogger(__name__)

CHANNEL_STATES = frozenset({"subscribed", "invalid", "pending"})
# A collector is alive while its heartbeat is younger than this many lease TTLs.
ALIVE_LEASE_TTLS = 3
LAST_FLUSH_FIELDS = ("at", "rows", "written", "rejected", "duration_ms")



class _PricedBar:
    """`timeframe` and `price` of a `bar` field that is the status keys' bar part (`keys.priced_bar`): `1m`, or
    `mark:1m` for a mark-price channel."""

    __slots__ = ()
    bar: str

    @property
    def timeframe(self) -> str:
        return split_priced_bar(self.bar)[0]

    @property
    def price(self) -> str:
        return split_priced_bar(self.bar)[1]


@dataclass(frozen=True, slots=True)
class ChannelStatus(_PricedBar):
    inst_id: str
    bar: str
    state: str  # "subscribed", "invalid" or "pending"
    last_message_at: float | None  # epoch seconds
    last_confirmed_open: int | None  # epoch milliseconds
    error: str | None  # OKX's code and message when the channel was refused
    collector: str | None
    reconnects: int = 0



@dataclass(frozen=True, slots=True)
class CollectorStatus:
    id: str
    heartbeat_at: float  # the ZSET score: the last heartbeat, epoch seconds
    alive: bool
    # The rest comes from the collector's hash, which expires after the collector stops: absent then.
    host: str | None = None
    pid: int | None = None
    started_at: float | None = None
    shards: list[int] = field(default_factory=list)
    connections: list[ConnectionStatus] = field(default_factory=list)
    messages: int = 0
    reconnects: int = 0
    errors: int = 0
    channels: int = 0
    details_missing: bool = False




# --- channels ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelRow:
    """A row of `keys.channel_status`: what changes rarely about a channel."""

    state: str
    error: str | None
    collector: str | None


def parse_channel_row(value: str | bytes) -> ChannelRow:
    """The JSON value of one `keys.channel_status` entry. Raises Garbled. Fields of the older format
    (last_message_at, last_confirmed_open, reconnects) are ignored: the per-bar ZSETs hold those now."""
    data = json_object(value)
    state = data.get("state")
    if state not in CHANNEL_STATES:
        raise Garbled(f"unknown state {state!r}")
    return ChannelRow(state=state, error=opt_str(data.get("error"), "error"),
                      collector=opt_str(data.get("collector"), "collector"))


def split_channel_field(field_name: str | bytes) -> tuple[str, str]:
    """"inst_id|bar" -> (inst_id, bar). Raises Garbled."""
    inst_id, sep, bar = text(field_name).rpartition("|")
    if not sep or not inst_id or not bar:
        raise Garbled("field is not 'inst_id|bar'")
    return inst_id, bar


def channel_field(inst_id: str, bar: str) -> str:
    return f"{inst_id}|{bar}"


def channel_status_of(
    inst_id: str, bar: str, row: ChannelRow | None, seen: float | None, confirmed: float | None, reconnects: int = 0,
) -> ChannelStatus | None:
    """A channel's status from its row and its two ZSET scores; None when Redis knows nothing of it.

    Without a row (deleted as its subscription ended while another collector took it up again), a channel
    that had messages was subscribed: OKX pushes candles only on subscribed channels.
    """
    if row is None and seen is None and confirmed is None:
        return None
    return ChannelStatus(
        inst_id=inst_id,
        bar=bar,
        state=row.state if row is not None else "subscribed",
        last_message_at=seen,
        last_confirmed_open=None if confirmed is None else int(confirmed),
        error=row.error if row is not None else None,
        collector=row.collector if row is not None else None,
        reconnects=reconnects,
    )


def channel_statuses(
    redis: Any, keys: Keys, pairs: Iterable[tuple[str, str]] | None = None
) -> dict[tuple[str, str], ChannelStatus]:
    """The status of each channel of `pairs` by (inst_id, bar) (absent ones are left out), or of every
    channel that has a row when `pairs` is None.

    Two round trips whatever the number of pairs: the rows (HMGET) with a ZMSCORE per bar of each per-bar
    ZSET, then each named collector's reconnect count. A garbled row leaves its channel out (one warning).
    """
    skipped = Skipped("channel statuses")
    if pairs is None:
        raw_rows = redis.hgetall(keys.channel_status)
        wanted: list[tuple[str, str]] = []
        for field_name in raw_rows:
            try:
                wanted.append(split_channel_field(field_name))
            except Garbled as exc:
                skipped.add(field_name, exc)
        rows_by_field = {text(k): v for k, v in raw_rows.items()}
        row_values = [rows_by_field[channel_field(*pair)] for pair in wanted]
        scores = _scores(redis, keys, wanted, rows=False)[1:]
    else:
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return {}
        row_values, *scores = _scores(redis, keys, wanted, rows=True)
    seen, confirmed = scores
    rows: dict[tuple[str, str], ChannelRow] = {}
    garbled: set[tuple[str, str]] = set()
    for pair, value in zip(wanted, row_values, strict=True):
        if value is None:
            continue
        try:
            rows[pair] = parse_channel_row(value)
        except Garbled as exc:
            skipped.add(channel_field(*pair), exc)
            garbled.add(pair)
    skipped.log()
    reconnects = collector_reconnects(redis, keys, {row.collector for row in rows.values() if row.collector})
    statuses: dict[tuple[str, str], ChannelStatus] = {}
    for pair in wanted:
        if pair in garbled:
            continue
        row = rows.get(pair)
        status = channel_status_of(pair[0], pair[1], row, seen.get(pair), confirmed.get(pair),
                                   reconnects.get(row.collector, 0) if row is not None and row.collector else 0)
        if status is not None:
            statuses[pair] = status
    return statuses


def _scores(
    redis: Any, keys: Keys, pairs: list[tuple[str, str]], *, rows: bool,
) -> tuple[list[Any], dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """In one round trip: the rows of `pairs` (when `rows`, else []), and their scores in the per-bar
    `channel_seen` and `channel_confirmed` ZSETs (pairs without a score are left out)."""
    by_bar: dict[str, list[str]] = {}
    for inst_id, bar in pairs:
        by_bar.setdefault(bar, []).append(inst_id)
    pipe = redis.pipeline(transaction=False)
    if rows:
        pipe.hmget(keys.channel_status, [channel_field(*pair) for pair in pairs])
    for bar, inst_ids in by_bar.items():
        pipe.zmscore(keys.channel_seen(bar), inst_ids)
        pipe.zmscore(keys.channel_confirmed(bar), inst_ids)
    replies = pipe.execute()
    row_values = replies.pop(0) if rows else []
    seen: dict[tuple[str, str], float] = {}
    confirmed: dict[tuple[str, str], float] = {}
    for (bar, inst_ids), seen_scores, confirmed_scores in zip(by_bar.items(), replies[::2], replies[1::2],
                                                               strict=True):
        for inst_id, seen_at, confirmed_open in zip(inst_ids, seen_scores, confirmed_scores, strict=True):
            if seen_at is not None:
                seen[(inst_id, bar)] = float(seen_at)
            if confirmed_open is not None:
                confirmed[(inst_id, bar)] = float(confirmed_open)
    return row_values, seen, confirmed


def collector_reconnects(redis: Any, keys: Keys, collector_ids: Iterable[str]) -> dict[str, int]:
    """Each named collector's reconnects since it started (one round trip; a collector whose status hash
    expired, or whose count does not parse, is left out)."""
    ids = sorted(collector_ids)
    if not ids:
        return {}
    pipe = redis.pipeline(transaction=False)
    for collector_id in ids:
        pipe.hget(keys.collector(collector_id), "reconnects")
    counts: dict[str, int] = {}
    for collector_id, value in zip(ids, pipe.execute(), strict=True):
        try:
            counts[collector_id] = int_field(None if value is None else text(value), "reconnects")
        except Garbled:
            continue
    return counts


# --- channels per bar, from the per-bar indexes only ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BarFigures(_PricedBar):
    bar: str
    fresh: int  # channels with a message at or after `fresh_since`
    quiet: int  # channels whose last message is older
    refused: int  # channels OKX refused
    oldest_message_at: float | None  # epoch seconds: the quietest channel's last message
    oldest_confirmed_open: int | None  # epoch ms: the open time of the most lagging last confirmed candle
    unconfirmed: int  # channels whose last confirmed candle opened before `newest_closed_open`


    @property
    def channels(self) -> int:
        return self.fresh + self.quiet + self.refused


def priced_bars(codes: Iterable[str]) -> list[str]:
    """The bar part of every status key a collector may write for these bar codes: the code itself for trade
    channels, then `mark:<code>` and `index:<code>` for the bars those kinds have (all but `1s`)."""
    codes = list(codes)
    return codes + [priced_bar(code, price) for price in PRICE_KINDS if price != TRADE for code in codes
                    if code not in TRADE_ONLY_BARS]


# Commands `bar_figures_queue` puts on a pipeline per bar.
BAR_FIGURES_COMMANDS = 6


def bar_figures_queue(pipe: Any, keys: Keys, bar: str, *, fresh_since: float, newest_closed_open: int) -> None:
    """Queue the reads of one bar's figures: counts and heads of its ZSETs, no per-channel entry read."""
    seen = keys.channel_seen(bar)
    pipe.zcount(seen, repr(fresh_since), "+inf")
    pipe.zcount(seen, "-inf", f"({fresh_since!r}")
    pipe.scard(keys.channel_refused(bar))
    pipe.zrange(seen, 0, 0, withscores=True)
    pipe.zrange(keys.channel_confirmed(bar), 0, 0, withscores=True)
    pipe.zcount(keys.channel_confirmed(bar), "-inf", f"({newest_closed_open}")


def bar_figures_parse(bar: str, replies: Sequence[Any]) -> BarFigures:
    """The figures from the replies of the `BAR_FIGURES_COMMANDS` commands `bar_figures_queue` queued."""
    fresh, quiet, refused, oldest_seen, oldest_confirmed, unconfirmed = replies
    return BarFigures(
        bar=bar, fresh=int(fresh), quiet=int(quiet), refused=int(refused),
        oldest_message_at=float(oldest_seen[0][1]) if oldest_seen else None,
        oldest_confirmed_open=int(oldest_confirmed[0][1]) if oldest_confirmed else None,
        unconfirmed=int(unconfirmed),
    )


# --- collectors ----------------------------------------------------------------------------------------


def alive_after(now: float, lease_ttl_s: float | None = None) -> float:
    """The oldest heartbeat (epoch seconds) of a collector still counted alive at `now`."""
    ttl = settings.COLLECTOR_LEASE_TTL_S if lease_ttl_s is None else lease_ttl_s
    return now - ALIVE_LEASE_TTLS * ttl


def _json_field(raw: dict[str, Any], name: str, kind: type) -> Any:
    value = raw.get(name)
    if value is None:
        return kind()
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise Garbled(f"{name} is not JSON") from None
    if not isinstance(data, kind):
        raise Garbled(f"{name} is not a JSON {kind.__name__}")
    return data


def _connection(data: Any) -> ConnectionStatus:
    if not isinstance(data, dict):
        raise Garbled("a connection is not a JSON object")
    return ConnectionStatus(
        shard=int_field(data.get("shard"), "connection shard"),
        state=str(data.get("state") or "unknown"),
        conn_id=None if data.get("conn_id") is None else str(data["conn_id"]),
        channels=int_field(data.get("channels"), "connection channels"),
        subscribed=int_field(data.get("subscribed"), "connection subscribed"),
        messages=int_field(data.get("messages"), "connection messages"),
        reconnects=int_field(data.get("reconnects"), "connection reconnects"),
        errors=int_field(data.get("errors"), "connection errors"),
        last_message_at=opt_float(data.get("last_message_at"), "connection last_message_at"),
        detail="" if data.get("detail") is None else str(data["detail"]),
    )


def parse_collector(collector_id: str, heartbeat_at: float, alive: bool, raw: dict[Any, Any]) -> CollectorStatus:
    """A collector from its ZSET entry and its hash (`raw`, possibly empty). Raises Garbled."""
    if not raw:
        return CollectorStatus(id=collector_id, heartbeat_at=heartbeat_at, alive=alive, details_missing=True)
    fields = {text(k): text(v) for k, v in raw.items()}
    shards = _json_field(fields, "shards", list)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in shards):
        raise Garbled("shards is not a list of integers")
    return CollectorStatus(
        id=collector_id,
        heartbeat_at=heartbeat_at,
        alive=alive,
        host=fields.get("host"),
        pid=opt_int(fields.get("pid"), "pid"),
        started_at=opt_float(fields.get("started_at"), "started_at"),
        shards=sorted(shards),
        connections=[_connection(c) for c in _json_field(fields, "connections", list)],
        messages=int_field(fields.get("messages"), "messages"),
        reconnects=int_field(fields.get("reconnects"), "reconnects"),
        errors=int_field(fields.get("errors"), "errors"),
        channels=int_field(fields.get("channels"), "channels"),
    )


def collector_statuses(
    redis: Any, keys: Keys, now: float | None = None, lease_ttl_s: float | None = None
) -> list[CollectorStatus]:
    """Every collector in `keys.collectors`, most recent heartbeat first. Alive: heartbeat within 3 lease TTLs."""
    now = time.time() if now is None else now
    cutoff = alive_after(now, lease_ttl_s)
    members = redis.zrevrange(keys.collectors, 0, -1, withscores=True)
    if not members:
        return []
    pipe = redis.pipeline(transaction=False)
    for member, _score in members:
        pipe.hgetall(keys.collector(text(member)))
    hashes = pipe.execute()
    statuses: list[CollectorStatus] = []
    skipped = Skipped("collector statuses")
    for (member, score), raw in zip(members, hashes, strict=True):
        collector_id = text(member)
        try:
            statuses.append(parse_collector(collector_id, float(score), float(score) >= cutoff, raw))
        except Garbled as exc:
            skipped.add(collector_id, exc)
            # Still listed: its heartbeat is known even when its details are not.
            statuses.append(CollectorStatus(id=collector_id, heartbeat_at=float(score),
                                            alive=float(score) >= cutoff, details_missing=True))
    skipped.log()
    return statuses


# --- the whole pipeline --------------------------------------------------------------------------------




# Commands `overview_queue` puts on a pipeline; their replies are what `overview_parse` reads.
OVERVIEW_COMMANDS = 10


def channel_counts(collectors: Iterable[CollectorStatus]) -> dict[str, int]:
    """Channels subscribed and pending, as the alive collectors count them on their connections: a few
    numbers per collector instead of every channel's status."""
    subscribed = pending = 0
    for c in collectors:
        if not c.alive:
            continue
        for conn in c.connections:
            subscribed += conn.subscribed
            pending += max(0, conn.channels - conn.subscribed)
    return {"subscribed": subscribed, "pending": pending}


def overview_queue(pipe: Any, keys: Keys, now: float, lease_ttl_s: float | None = None) -> None:
    """Queue the reads of `pipeline_overview` on `pipe`, so a caller can add its own to the same round trip."""
    pipe.hlen(keys.live)
    pipe.hlen(keys.taken)
    pipe.llen(keys.dead_letters)
    pipe.hgetall(keys.counters)
    pipe.hgetall(keys.last_flush)
    pipe.zcard(keys.collectors)
    pipe.zcount(keys.collectors, alive_after(now, lease_ttl_s), "+inf")
    pipe.get(keys.repair_backlog)
    replicas_queue(pipe, keys, settings.COLLECTOR_SHARDS, settings.COLLECTOR_REPLICAS)


def overview_parse(replies: Sequence[Any], now: float) -> dict:
    """The overview from the replies of the `OVERVIEW_COMMANDS` commands `overview_queue` queued."""
    live, taken, dead_letters, counters, last_flush_raw, total, alive, repair_raw, *slots = replies
    last_flush: dict[str, Any] | None = None
    if last_flush_raw:
        flush_numbers = numbers(last_flush_raw, "last flush fields")
        last_flush = {name: flush_numbers.get(name) for name in LAST_FLUSH_FIELDS}
        at = last_flush["at"]
        last_flush["age_s"] = None if at is None else round(max(0.0, now - at), 3)
    repair = repair_report_decode(repair_raw)
    # The repair plane replaced the rest_needed set: its confirm backlog is the same figure (candles closed
    # without a confirm push), so the old field keeps its meaning for clients.
    rest_needed = 0 if repair is None else repair["backlog"]["confirm"]["candles"]
    return {
        "buffer": {"live": int(live), "taken": int(taken), "depth": int(live) + int(taken)},
        "dead_letters": int(dead_letters),
        "rest_needed": int(rest_needed),
        "repair": repair,
        "counters": numbers(counters, "counters"),
        "last_flush": last_flush,
        "collectors": {"alive": int(alive), "total": int(total)},
        "shards": replicas_parse(slots, settings.COLLECTOR_REPLICAS),
    }


def pipeline_overview(redis: Any, keys: Keys, now: float | None = None, lease_ttl_s: float | None = None) -> dict:
    """Buffer depth, dead letters, counters, the last flush and collectors alive, in one round trip.

    {"buffer": {"live", "taken", "depth"}, "dead_letters", "rest_needed", "repair": report | None,
     "counters": {name: n},
     "last_flush": {"at", "rows", "written", "rejected", "duration_ms", "age_s"} | None,
     "collectors": {"alive", "total"}, "shards": ShardReplicas}
    """
    now = time.time() if now is None else now
    pipe = redis.pipeline(transaction=False)
    overview_queue(pipe, keys, now, lease_ttl_s)
    return overview_parse(pipe.execute(), now)
