"""Storage maintenance, one run: partitions made ahead, partitions past their bar's retention retired, one closed
partition compacted, gap records behind the horizon expired and old ones pruned.

The beat task `maintain_storage` and `manage.py maintain_storage` both call `storage_maintain`. A run holds a
PostgreSQL session advisory lock: two runs never overlap, and the lock lasts exactly as long as the run's
connection, however long a close-out takes (a Redis lock would need a TTL longer than the longest run, and a
dead worker would then hold the next runs up for all of it). A run that finds the lock taken is skipped.

Each step runs even when an earlier one failed (a partition that cannot be premade must not stop retention),
and every step can run twice. Partitions dropped are counted in Redis (`partitions_dropped:{bar}` in
`Keys.counters`) for `okx_candles_partitions_dropped_total`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from redis import RedisError

from candles.gaps import ExpiryResult, gaps_expire, gaps_prune
from candles.partitions import partition_close_out, partitions_premake
from candles.retention import Progress, RetentionResult, retention_enforce
from collectors.shared.connections import pipeline_keys, redis_client

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x6F6B785F73746F72  # "okx_stor"
DROPPED_FIELD_PREFIX = "partitions_dropped:"


@dataclass(slots=True)
class MaintenanceResult:
    skipped: bool = False
    premade: list[str] = field(default_factory=list)
    closed_out: str | None = None
    retention: RetentionResult | None = None
    gaps: ExpiryResult | None = None
    gaps_pruned: int = 0
    errors: list[str] = field(default_factory=list)  # the steps that failed, with their error

    def __str__(self) -> str:
        if self.skipped:
            return "skipped: another maintenance run holds the lock"
        parts = [f"{len(self.premade)} partitions made", f"closed out {self.closed_out or 'none'}",
                 f"retention: {self.retention if self.retention is not None else 'not run'}"]
        if self.gaps is not None:
            parts.append(f"gaps: {self.gaps.expired} expired, {self.gaps.trimmed} trimmed")
        parts.append(f"{self.gaps_pruned} old gap records pruned")
        if self.errors:
            parts.append(f"{len(self.errors)} step(s) failed: " + "; ".join(self.errors))
        return "; ".join(parts)


def _try_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _unlock() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    except DatabaseError as exc:
        # The connection broke: the server ended its session, and the lock with it.
        logger.warning("storage maintenance: lock not released (%s); it went with the connection", exc)
        connection.close()


def storage_maintain(*, now: datetime | None = None, progress: Progress | None = None) -> MaintenanceResult:
    """One maintenance run (see the module's docstring); skipped at once while another one runs.

    Must run in autocommit: close-out and retention use statements that cannot run in a transaction block."""
    if connection.in_atomic_block:
        raise RuntimeError("storage maintenance needs autocommit (REINDEX and DETACH run CONCURRENTLY)")
    now = now or timezone.now()
    say = progress or (lambda line: None)
    if not _try_lock():
        logger.info("storage maintenance: another run is under way; skipped")
        say("another maintenance run is under way; skipped")
        return MaintenanceResult(skipped=True)
    result = MaintenanceResult()
    # Retention before close-out: a partition past its horizon is dropped, not compacted first.
    steps = (("premake", _premake), ("retention", _retention), ("close-out", _close_out),
             ("gap expiry", _expire), ("gap pruning", _prune))
    try:
        for name, step in steps:
            try:
                step(result, now, say)
            except Exception as exc:
                logger.exception("storage maintenance: %s failed", name)
                result.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                say(f"{name} failed: {type(exc).__name__}: {exc}")
                if not connection.is_usable():
                    # The lock went with the connection: another run may start now, so this one stops here.
                    result.errors.append("the database connection was lost; the remaining steps wait for the "
                                         "next run")
                    break
    finally:
        _unlock()
    if result.retention is not None:
        _count_drops(result.retention)
    level = logging.WARNING if result.errors else logging.INFO
    logger.log(level, "storage maintenance: %s", result)
    return result


def _premake(result: MaintenanceResult, now: datetime, say: Progress) -> None:
    say("premake: partitions ahead of now for every bar")
    result.premade = partitions_premake(now=now)
    say(f"  {len(result.premade)} made" + (f": {', '.join(result.premade)}" if result.premade else ""))


def _close_out(result: MaintenanceResult, now: datetime, say: Progress) -> None:
    say("close-out: at most one closed partition (REINDEX CONCURRENTLY, VACUUM FREEZE)")
    result.closed_out = partition_close_out(now=now)
    say(f"  {result.closed_out or 'none due'}")


def _retention(result: MaintenanceResult, now: datetime, say: Progress) -> None:
    say("retention: partitions wholly behind their bar's horizon")
    result.retention = retention_enforce(now=now, progress=say)
    say(f"  {result.retention}")


def _expire(result: MaintenanceResult, now: datetime, say: Progress) -> None:
    say("gaps: expire the unfinished ones behind the horizon")
    result.gaps = gaps_expire(now=now)
    say(f"  {result.gaps.expired} expired, {result.gaps.trimmed} trimmed to start at the horizon")


def _prune(result: MaintenanceResult, now: datetime, say: Progress) -> None:
    before = now - timedelta(days=settings.GAP_KEEP_DAYS)
    say(f"gaps: delete finished records older than {settings.GAP_KEEP_DAYS} days")
    result.gaps_pruned = gaps_prune(older_than=before)
    say(f"  {result.gaps_pruned} deleted")


def _count_drops(retention: RetentionResult) -> None:
    dropped = {bar: counts.dropped for bar, counts in retention.bars.items() if counts.dropped}
    if not dropped:
        return
    keys = pipeline_keys()
    try:
        with redis_client().pipeline(transaction=False) as pipe:
            for bar, n in dropped.items():
                pipe.hincrby(keys.counters, DROPPED_FIELD_PREFIX + bar, n)
            pipe.execute()
    except RedisError as exc:
        # The partitions are gone either way; only the counter misses them.
        logger.warning("storage maintenance: partitions dropped (%s) not counted in Redis: %s", dropped, exc)


def dropped_counts(counters: dict[str, int]) -> dict[str, int]:
    """Partitions dropped per bar, from the fields of `Keys.counters`."""
    return {name[len(DROPPED_FIELD_PREFIX):]: int(value) for name, value in counters.items()
            if name.startswith(DROPPED_FIELD_PREFIX)}
