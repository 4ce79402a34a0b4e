"""The feed between the write path and the web processes: every version of a candle that a commit wrote.

`candles_upsert` asks `listening()` once a batch. While some web process has a stream client, the merge hands
back its written rows as one JSON array made by PostgreSQL, and `publish` appends it after commit to a Redis
stream as one entry: one Redis call a batch, no Python work per candle on the writing side. With nobody
listening (the usual case of a collecting-only deployment) the write path does exactly what it did before.

An entry holds `seq` (one more than the previous entry's: a reader that finds a jump knows it missed entries
and replays from the database), `at` (the publisher's clock at commit, seconds since the epoch) and `rows`: one
line per written row, `instrument_id:timeframe_id<TAB>[instrument_id, timeframe_id, open_time_ms, timestamp, open,
high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, version]`, numbers as the stored numeric's text. The
key in front lets a reader pick the rows of the series it serves without decoding the others (a batch of 20,000
rows is 4 MB of JSON, and a web process decodes only the lines of series its clients follow). The stream keeps the
last STREAM_FEED_MAXLEN entries: enough for a web process to ride out a reconnect; beyond that it replays.

Listening is a key that each web process with clients sets with a TTL and refreshes. A writer reads it at most
every LISTENING_CACHE_S, so a web process that sets it waits that long (plus a margin) before it trusts that
every commit is published (`hub.Hub.await_feed`).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

import orjson
import redis
from django.conf import settings

from okxproject.keys import Keys

logger = logging.getLogger(__name__)

LISTENING_CACHE_S = 1.0
# How long the listening key lives without a refresh; web processes refresh it every LISTENING_REFRESH_S.
LISTENING_TTL_MS = 10_000
LISTENING_REFRESH_S = 2.0

# KEYS[1] = the stream, KEYS[2] = its sequence; ARGV = maxlen, commit time, rows.
_PUBLISH_LUA = """
local seq = redis.call("INCR", KEYS[2])
redis.call("XADD", KEYS[1], "MAXLEN", "~", ARGV[1], "*", "seq", seq, "at", ARGV[2], "rows", ARGV[3])
return seq
"""


def series_key(instrument_id: int, timeframe_id: int) -> bytes:
    """The key in front of a feed line."""
    return f"{instrument_id}:{timeframe_id}".encode()


def decode_rows(payload: bytes) -> list[list]:
    """Every row of an entry's `rows`, decoded."""
    return [orjson.loads(line.partition(b"\t")[2]) for line in payload.split(b"\n") if line]


def _keys() -> Keys:
    return Keys(prefix=settings.REDIS_KEY_PREFIX)


def feed_key() -> str:
    return _keys().stream_feed


def feed_seq_key() -> str:
    return _keys().stream_feed_seq


def listening_key() -> str:
    return _keys().stream_listening


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


def _redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


_lock = threading.Lock()
_listening = False
_checked_at = float("-inf")


def listening() -> bool:
    """Whether any web process has a stream client (read from Redis at most every LISTENING_CACHE_S).

    Redis unreachable counts as listening: publishing will then fail and say so, where silence would hide it.
    """
    global _listening, _checked_at
    now = time.monotonic()
    if now - _checked_at < LISTENING_CACHE_S:
        return _listening
    try:
        value = bool(_redis().exists(listening_key()))
    except redis.RedisError:
        value = True
    with _lock:
        _listening, _checked_at = value, now
    return value


def listening_forget() -> None:
    """Ask Redis again on the next batch (tests that start and stop listeners)."""
    global _checked_at
    with _lock:
        _checked_at = float("-inf")


# Batches whose publication failed, oldest first, sent again before the next one. Bounded: a web process that
# misses entries past this replays from the database (`seq` is only taken when an entry is appended, so the
# loss shows as nothing; the bound is logged when reached).
_unpublished: list[str] = []
UNPUBLISHED_MAX = 100


def publish(rows_text: str) -> None:
    """Append one committed batch's written rows to the feed. Never raises: the rows are committed already.

    A failure keeps the batch in this process and sends it first with the next batch; the stream's clients get
    those versions late, not never (and a reconnect with `since` reads them from the database anyway).
    """
    if not rows_text:
        return
    with _lock:
        _unpublished.append(rows_text)
        if len(_unpublished) > UNPUBLISHED_MAX:
            dropped = _unpublished.pop(0)
            logger.error("stream feed: %d bytes of written candles dropped after %d failed publications; stream "
                         "clients get them on reconnect with since", len(dropped), UNPUBLISHED_MAX)
        pending = list(_unpublished)
    client = _redis()
    for index, payload in enumerate(pending):
        try:
            client.eval(_PUBLISH_LUA, 2, feed_key(), feed_seq_key(), settings.STREAM_FEED_MAXLEN,
                        repr(time.time()), payload)
        except redis.RedisError as exc:
            logger.warning("stream feed: %d batches of written candles wait to be published: %s",
                           len(pending) - index, exc)
            return
        with _lock:
            if _unpublished and _unpublished[0] is payload:
                _unpublished.pop(0)
