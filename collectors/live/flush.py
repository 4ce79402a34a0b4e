"""The flush: move the Redis live buffer into PostgreSQL, losing nothing.

One run, under a Redis lock so that two runs never overlap:

1. take the buffer (`buffer_take`: a batch left by a failed run comes first);
2. decode it; an entry that cannot be decoded is dead-lettered with its reason, never written;
3. write the rows through `candles_upsert`, in chunks of `chunk_rows`, each chunk its own transaction;
4. only when every chunk is committed: dead-letter the rows the database refused, drop the taken batch
   (`buffer_commit`) and count, all in one Redis transaction; then tell `on_committed` which confirmed
   candles landed.

Any database or Redis error propagates and leaves the taken batch in Redis for the next run. Rewriting the
chunks that did commit is harmless: the database refuses an older or equal version of a candle. The one
database error that is not retried forever is a row the database cannot hold at all (SQLSTATE classes 22
and 23): the chunk is split until that row stands alone, and it is dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
import psycopg
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from redis import Redis, RedisError

from candles.storage import CandleRow, UpsertResult, candle_key, candles_upsert
from collectors.live.buffer import buffer_commit, buffer_depth, buffer_take, dead_letter_record, decode_entry
from collectors.shared.locks import LockLost, RedisLock
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

# The lock outlives any one chunk by far (20,000 rows take well under 2 s), and is renewed after each chunk, so a
# long run after an outage keeps it; a run that died (a killed flush worker) holds flushing up for at most
# this long. The chaos run measured 60 s here as the worst lag of the whole system.
LOCK_TTL_MS = 15_000
# Errors that belong to one row (data exceptions, integrity violations), not to the database or the link:
# retrying them can never succeed, so the row is found and dead-lettered instead of blocking the buffer.
_ROW_ERRORS = (DataError, IntegrityError, psycopg.DataError, psycopg.IntegrityError)
# More rows than this failing one by one means something is wrong beyond the rows (a schema change, a bad
# deploy): the run fails and keeps the batch rather than dead-letter the whole buffer.
MAX_POISON_ROWS = 100
# Dead letters pushed per script call, to keep each Lua call short.
_DEAD_LETTER_BATCH = 1_000

# KEYS[1] = dead-letter list, KEYS[2] = counters; ARGV[1] = the list's maximum length, ARGV[2..] = records.
# Trimmed records are counted, so that a full list never loses entries silently.
_DEAD_LETTER_LUA = """
local max_len = tonumber(ARGV[1])
local length = 0
for i = 2, #ARGV do
  length = redis.call("LPUSH", KEYS[1], ARGV[i])
end
redis.call("HINCRBY", KEYS[2], "dead_letters", #ARGV - 1)
if length > max_len then
  redis.call("LTRIM", KEYS[1], 0, max_len - 1)
  redis.call("HINCRBY", KEYS[2], "dead_letters_trimmed", length - max_len)
end
return length
"""


def _batched(items: Sequence, size: int) -> list[Sequence]:
    # itertools.batched arrives in Python 3.12; slices keep CandleRow sequences cheap to halve.
    return [items[start:start + size] for start in range(0, len(items), size)]


# Raised when the run's lock expired or was taken over: it stops before dropping a batch another run may own.
FlushLockLost = LockLost


@dataclass(slots=True)
class FlushResult:
    skipped: bool = False  # another run held the lock, or (defer_to_claim) a requested run claimed the moment
    taken: int = 0  # buffer entries taken
    written: int = 0  # inserted + updated
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0  # older than, or equal to, what the database holds
    rejected: int = 0  # dead-lettered: undecodable, refused by the database
    duration_s: float = 0.0
    confirmed_rows: list[CandleRow] = field(default_factory=list)


@dataclass(slots=True)
class _Tally:
    """What the chunks of one run did, added up."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[CandleRow, str]] = field(default_factory=list)
    poisoned: int = 0

    def add(self, result: UpsertResult) -> None:
        self.inserted += result.inserted
        self.updated += result.updated
        self.unchanged += result.unchanged
        self.refused.extend((item.row, item.reason) for item in result.rejected)


def buffer_flush(
    *,
    redis: Redis,
    keys: Keys,
    on_committed: Callable[[list[CandleRow]], object] | None = None,
    chunk_rows: int = 20_000,
    claim_s: float = 0.0,
    defer_to_claim: bool = False,
) -> FlushResult:
    """Write the buffered candles to PostgreSQL; see the module docstring. Safe to run twice or at once.

    A flush the collector asked for (closed candles waiting) `claim_s` seconds of the schedule: a run with
    `defer_to_claim` (the scheduled one) that starts within them is skipped, since it would write the same
    buffer a few hundred milliseconds fuller. Scheduled runs alone never skip each other.

    Must run outside a transaction: the batch is dropped from Redis only after its chunks are committed.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if claim_s > 0:
        redis.set(keys.flush_claim, "1", px=max(1, round(claim_s * 1000)))
    elif defer_to_claim and redis.exists(keys.flush_claim):
        return FlushResult(skipped=True)
    started = time.monotonic()
    lock = RedisLock(redis, keys.flush_lock, LOCK_TTL_MS)
    if not lock.acquire():
        return FlushResult(skipped=True)
    try:
        result = _flush_locked(redis, keys, lock, chunk_rows, started)
    except Exception:
        # A dead database connection needs no cleanup here: the failed chunk's outermost atomic block
        # closes it when its rollback fails, and the next run connects afresh.
        _count_error(redis, keys)
        raise
    finally:
        lock.release()
    result.duration_s = time.monotonic() - started
    # After the lock is released, so that a slow callback never holds up the next run.
    _notify(on_committed, result.confirmed_rows)
    return result


def _flush_locked(redis: Redis, keys: Keys, lock: RedisLock, chunk_rows: int, started: float) -> FlushResult:
    taken = buffer_take(redis, keys)
    if not taken:
        return FlushResult()
    rows, dead = _decode(taken)
    # Key order: the same chunks on every retry, and one row-lock order shared with other writers.
    rows.sort(key=candle_key)
    tally = _Tally()
    for chunk in _batched(rows, chunk_rows):
        _write(chunk, tally)
        lock.renew()  # a long run after an outage keeps its lock
    # Ours for a full TTL from here: no other run can take a new batch before this one is dropped.
    lock.renew()
    refused_ids = {id(row) for row, _ in tally.refused}
    dead.extend(
        dead_letter_record(reason, raw=orjson.dumps(row._asdict(), default=str), channel=f"{row.inst_id}|{row.bar}")
        for row, reason in tally.refused
    )
    result = FlushResult(
        taken=len(taken), written=tally.inserted + tally.updated, inserted=tally.inserted, updated=tally.updated,
        unchanged=tally.unchanged, rejected=len(dead),
        confirmed_rows=[row for row in rows if row.confirmed and id(row) not in refused_ids],
    )
    _commit(redis, keys, result, dead, duration_ms=round((time.monotonic() - started) * 1000))
    logger.debug("flushed %d buffer entries: %d written, %d unchanged, %d dead-lettered",
                 result.taken, result.written, result.unchanged, result.rejected)
    return result


def _decode(taken: dict[bytes, bytes]) -> tuple[list[CandleRow], list[bytes]]:
    """The rows of a taken batch, and a dead-letter record for each entry that is not a candle."""
    rows: list[CandleRow] = []
    dead: list[bytes] = []
    for field_, value in taken.items():
        try:
            rows.append(decode_entry(field_, value))
        except (ValueError, TypeError) as exc:
            name = field_.decode("utf-8", "replace")
            channel = "|".join(name.split("|")[:2]) if name.count("|") >= 2 else None
            dead.append(dead_letter_record(f"undecodable buffer entry {name!r}: {exc}", raw=value, channel=channel))
    return rows, dead


def _write(chunk: Sequence[CandleRow], tally: _Tally) -> None:
    """Write one chunk in its own transaction; a row the database cannot hold is isolated by halving."""
    try:
        # Durable: inside an outer transaction "committed" would be a lie, and the batch would be dropped
        # from Redis before its rows were safe.
        with transaction.atomic(durable=True):
            result = candles_upsert(rows=chunk)
    except _ROW_ERRORS as exc:
        if len(chunk) > 1:
            half = len(chunk) // 2
            _write(chunk[:half], tally)
            _write(chunk[half:], tally)
            return
        tally.poisoned += 1
        if tally.poisoned > MAX_POISON_ROWS:
            raise
        tally.refused.append((chunk[0], f"database refused the row: {type(exc).__name__}: {exc}"))
        return
    tally.add(result)


def _commit(redis: Redis, keys: Keys, result: FlushResult, dead: list[bytes], *, duration_ms: int) -> None:
    """Dead letters, dropping the taken batch and the counters, in one Redis transaction."""
    pipe = redis.pipeline(transaction=True)
    push_dead_letters = redis.register_script(_DEAD_LETTER_LUA)
    for records in _batched(dead, _DEAD_LETTER_BATCH):
        push_dead_letters(keys=[keys.dead_letters, keys.counters], args=[settings.DEAD_LETTER_MAX, *records],
                          client=pipe)
    buffer_commit(pipe, keys)
    pipe.hincrby(keys.counters, "candles_flushed", result.written)
    pipe.hincrby(keys.counters, "flush_runs", 1)
    pipe.hincrby(keys.counters, "flush_duration_ms", duration_ms)
    pipe.hset(keys.last_flush, mapping={
        "at": time.time(), "rows": result.taken, "written": result.written, "rejected": result.rejected,
        "duration_ms": duration_ms,
    })
    pipe.execute()


def _count_error(redis: Redis, keys: Keys) -> None:
    try:
        redis.hincrby(keys.counters, "flush_errors", 1)
    except RedisError as exc:
        logger.warning("flush error not counted: %s", exc)


def _notify(on_committed: Callable[[list[CandleRow]], object] | None, rows: list[CandleRow]) -> None:
    if on_committed is None or not rows:
        return
    try:
        on_committed(rows)
    except Exception:
        # The rows are committed and the batch dropped: a failing listener must not undo or repeat that.
        logger.exception("on_committed failed for %d confirmed candles", len(rows))


def buffer_alarm(*, redis: Redis, keys: Keys) -> tuple[int, bool]:
    """Entries waiting to be flushed (live + taken), and whether that exceeds BUFFER_ALARM_ENTRIES."""
    depth = buffer_depth(redis, keys)
    alarm = depth > settings.BUFFER_ALARM_ENTRIES
    if alarm:
        logger.warning("buffer holds %d entries, above the alarm level %d: flushes are failing or too slow",
                       depth, settings.BUFFER_ALARM_ENTRIES)
    return depth, alarm
