"""What a collector tells Redis about its channels, at the cost of what changed since its last tick.

Three things, each in the key that suits how often it changes (see `keys.py`):

* a row per channel in `Keys.channel_status` (state, OKX's error, collector), written when this collector's
  view of it changes: the channel is taken up (pending), OKX acknowledged it (subscribed) or refused it
  (invalid, also kept in the bar's `channel_refused` SET). Acks that repeat after a reconnect change nothing
  and write nothing;
* the time of each channel's last message, in its bar's `channel_seen` ZSET, for the channels that had a
  message since the last tick only (ingest notes them as the messages arrive);
* the open time of each channel's last confirmed candle, in its bar's `channel_confirmed` ZSET, when it moved.

A channel whose subscription is gone (it left the active subscriptions, not merely this collector's shards)
has its row and its entries deleted. A channel handed to another collector (a shard lost or released) keeps
them: the new owner rewrites the row, and if nobody takes it up its last message ages until the health task
calls it stale. With no change and no message, a tick queues nothing.

A mark-price or index channel is written under its priced bar (`keys.priced_bar`: `mark:1m`), so its row
(`BTC-USDT-SWAP|mark:1m`) and its ZSETs (`status:seen:mark:1m`) are its own, beside the trade channel's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import Any

import orjson

from collectors.live.ingest import ChannelKey, ChannelTrack
from collectors.okx.protocol import Channel
from okxproject.keys import Keys, channel_parts

# Entries per ZADD: at most this many in one command, so that Redis serves other clients between them.
ZADD_CHUNK = 2_000

# (state, error): "subscribed", "pending" or "invalid", and OKX's code and message for an invalid channel.
RowState = tuple[str, str | None]
Tracks = dict[ChannelKey, ChannelTrack]


@dataclass(frozen=True, slots=True)
class Queued:
    written: dict[Channel, RowState]
    dirty: set[Channel]
    ended: set[Channel]


def _entry(by_bar: dict[str, list[bytes]], bar: str, member: str, score: str) -> None:
    args = by_bar.get(bar)
    if args is None:
        args = by_bar[bar] = []
    args += (score.encode(), member.encode())


def channel_row(state: str, error: str | None, collector: str) -> str:
    """The JSON of a `Keys.channel_status` row (read by `status.parse_channel_row`)."""
    return orjson.dumps({"state": state, "error": error, "collector": collector}).decode()


class ChannelStatusWriter:
    """Tracks what this collector published about its channels and sends only what changed."""

    def __init__(self, keys: Keys, collector_id: str) -> None:
        self.keys = keys
        self.collector_id = collector_id
        self.carried: Set[Channel] = frozenset()
        self.rows: Set[Channel] = frozenset()  # the carried channels whose status rows this collector writes
        self.written: dict[Channel, RowState] = {}  # rows as this collector last wrote them
        self.dirty: set[Channel] = set()  # rows that may have changed since the last tick
        self.ended: set[Channel] = set()  # subscriptions gone: rows and entries to delete

    def carry(self, channels: Set[Channel], subscribed: Set[Channel], rows: Set[Channel] | None = None) -> None:
        """The channels this collector carries from now on (refused ones included); `subscribed` is every
        active subscription's channel, whichever collector carries it. `rows` (default: all carried) are those
        whose status rows this collector writes: with replicas, the channels of the shards it is primary of."""
        rows = channels if rows is None else rows
        added, dropped = channels - self.carried, self.carried - channels
        self.carried = channels
        self.dirty |= added | (rows - self.rows)
        for channel in self.rows - rows:
            self.written.pop(channel, None)  # another replica writes its row now; rewrite it if it comes back
        self.rows = rows
        self.ended -= added
        for channel in dropped:
            self.written.pop(channel, None)
            if channel not in subscribed:
                self.ended.add(channel)

    def changed(self, channel: Channel) -> None:
        """The channel's state may have changed (an ack, a refusal)."""
        self.dirty.add(channel)

    def queue(
        self, pipe: Any, *, state_of: Callable[[Channel], RowState], tracks: Tracks, seen: Tracks,
        confirmed: Tracks,
    ) -> Queued:
        """Queue on `pipe` what changed: rows, refusals, deletions and the ZSET entries of `seen` (channels
        with a message since the last tick) and `confirmed` (a newer confirmed candle). Once the pipe has
        run, pass the result to `sent`, or to `unsent` if it failed."""
        dirty, ended, self.dirty, self.ended = self.dirty, self.ended, set(), set()
        # ZADD arguments by bar, score then member, as they are read (a member twice is harmless: GT). Only
        # carried channels: a push still in flight when a channel was dropped must not bring its entry back.
        carried = self.carried
        seen_by_bar: dict[str, list[bytes]] = {}
        confirmed_by_bar: dict[str, list[bytes]] = {}
        for channel, track in seen.items():  # every channel, when all had a message: kept inline
            at = track.last_message_at
            if at is not None and channel in carried:
                # A mark or index channel's bar part names its kind (keys.priced_bar): ZSETs of their own.
                inst_id, bar = channel if len(channel) == 2 else channel_parts(channel)
                args = seen_by_bar.get(bar)
                if args is None:
                    args = seen_by_bar[bar] = []
                args += (repr(at).encode(), inst_id.encode())
        for channel, track in confirmed.items():
            if track.last_confirmed_open is not None and channel in carried:
                inst_id, bar = channel_parts(channel)
                _entry(confirmed_by_bar, bar, inst_id, str(track.last_confirmed_open))
        rows: dict[str, str] = {}
        refused: dict[str, list[str]] = {}
        accepted: dict[str, list[str]] = {}
        written: dict[Channel, RowState] = {}
        row_channels = self.rows
        for channel in dirty:
            if channel not in row_channels:
                continue
            row_state = state_of(channel)
            previous = self.written.get(channel)
            if row_state == previous:
                continue
            inst_id, bar = channel_parts(channel)
            rows[f"{inst_id}|{bar}"] = channel_row(*row_state, self.collector_id)
            written[channel] = row_state
            (refused if row_state[0] == "invalid" else accepted).setdefault(bar, []).append(inst_id)
            if previous is None:
                # Taken up (again): its entries may have been deleted when the subscription ended earlier.
                track = tracks.get(channel)
                if track is not None and track.last_message_at is not None:
                    _entry(seen_by_bar, bar, inst_id, repr(track.last_message_at))
                if track is not None and track.last_confirmed_open is not None:
                    _entry(confirmed_by_bar, bar, inst_id, str(track.last_confirmed_open))
        if rows:
            pipe.hset(self.keys.channel_status, mapping=rows)
        for bar, inst_ids in refused.items():
            pipe.sadd(self.keys.channel_refused(bar), *inst_ids)
        for bar, inst_ids in accepted.items():
            pipe.srem(self.keys.channel_refused(bar), *inst_ids)
        # GT: of two collectors carrying a channel (hot standby), the newer figure wins, whatever order their
        # writes land in. The arguments are bytes already: redis-py's encoding of 54,000 str and float
        # arguments (every channel seen) doubled the tick's CPU.
        zsets = [(self.keys.channel_seen(bar), args) for bar, args in seen_by_bar.items()]
        zsets += [(self.keys.channel_confirmed(bar), args) for bar, args in confirmed_by_bar.items()]
        for key, args in zsets:
            for start in range(0, len(args), 2 * ZADD_CHUNK):
                pipe.execute_command("ZADD", key, "GT", *args[start:start + 2 * ZADD_CHUNK])
        self._queue_deletions(pipe, ended)
        return Queued(written, dirty, ended)

    def sent(self, queued: Queued) -> None:
        self.written.update(queued.written)

    def unsent(self, queued: Queued) -> None:
        """The queued writes failed (Redis away): what they carried goes with the next tick."""
        self.dirty |= queued.dirty
        self.ended |= {channel for channel in queued.ended if channel not in self.carried}

    def _queue_deletions(self, pipe: Any, ended: Iterable[Channel]) -> None:
        by_bar: dict[str, list[str]] = {}
        fields = []
        for inst_id, bar in map(channel_parts, ended):
            by_bar.setdefault(bar, []).append(inst_id)
            fields.append(f"{inst_id}|{bar}")
        if fields:
            pipe.hdel(self.keys.channel_status, *fields)
        for bar, inst_ids in by_bar.items():
            pipe.zrem(self.keys.channel_seen(bar), *inst_ids)
            pipe.zrem(self.keys.channel_confirmed(bar), *inst_ids)
            pipe.srem(self.keys.channel_refused(bar), *inst_ids)
