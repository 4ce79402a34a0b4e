"""Probes of the services the system needs: PostgreSQL, Redis and the Celery broker, each with a short timeout.

The probes run in parallel and the caller waits at most `PROBE_TIMEOUT_S` for all of them, so a health check
answers in about a second and a half even when a server hangs instead of refusing: a probe still running at
the deadline counts as failed ("no answer within ..."), and finishes in the background bounded by its own
socket timeouts. A probe never raises.

PostgreSQL is probed on a connection of its own (`SELECT 1`), not Django's: only a new connection can be
given a connect timeout here, and it proves that the server accepts connections, which every worker needs.
/health makes a new one on every probe; /status, polled by dashboards, keeps one between its probes for up
to REUSED_CONNECTION_MAX_AGE_S (see `probe_connections`), so a server that stops accepting connections shows
there within that time, and one that stops answering at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import psycopg
import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from redis.backoff import NoBackoff
from redis.retry import Retry

from collectors.api.probe_connections import connection_key, idle_connections

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.5
# psycopg raises shorter values to 2 s; the caller's deadline above is what bounds the answer.
DB_CONNECT_TIMEOUT_S = 2
REDIS_TIMEOUT_S = 1.0
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# How long /status's probe keeps using one PostgreSQL connection before it makes a new one.
REUSED_CONNECTION_MAX_AGE_S = 60.0

# Shared by every request of the process; a hung probe holds one thread for its own timeout at most.
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-probe")


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    up: bool
    latency_ms: float | None  # None when the probe did not finish
    error: str = ""
    checked: bool = True  # False when the service could not be probed (a broker that is not Redis)


@lru_cache(maxsize=8)
def _redis_client(url: str) -> redis.Redis:
    # No retries: a health check must report a failure at once, not hide it behind backoff.
    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                                retry=Retry(NoBackoff(), 0), health_check_interval=0)


def status_redis() -> redis.Redis:
    """A client of settings.REDIS_URL with short timeouts, for status pages and metrics that must answer."""
    return _redis_client(settings.REDIS_URL)


def _timed(name: str, check: Callable[[], None]) -> Probe:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # every failure of a probe is its result, reported to the caller
        return Probe(name, False, round((time.perf_counter() - started) * 1000, 2), _describe(exc))
    return Probe(name, True, round((time.perf_counter() - started) * 1000, 2))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _database_params(alias: str) -> dict:
    params = connections[alias].get_connection_params()
    params["connect_timeout"] = DB_CONNECT_TIMEOUT_S
    params["application_name"] = f"{params.get('application_name') or 'okx-candles'}-probe"
    return params


def database_check(params: dict, *, reuse_s: float = 0.0) -> Callable[[], None]:
    """`SELECT 1` on a connection of the probe's own: a new one each time, or, with `reuse_s`, one kept between
    probes until it is that many seconds old. A kept connection that fails (a restarted server, an idle
    timeout) is replaced at once: only a new connection's failure fails the probe."""
    key = connection_key(params)

    def check() -> None:
        kept = idle_connections.take(key) if reuse_s > 0 else None
        if kept is not None:
            conn, made_at = kept
            if time.monotonic() - made_at < reuse_s:
                try:
                    conn.execute("SELECT 1").fetchone()
                except psycopg.Error:
                    pass
                else:
                    idle_connections.give(key, conn, made_at)
                    return
            conn.close()
        made_at = time.monotonic()
        conn = psycopg.connect(**params, autocommit=True)
        try:
            conn.execute("SELECT 1").fetchone()
        except BaseException:
            conn.close()
            raise
        if reuse_s > 0:
            idle_connections.give(key, conn, made_at)
        else:
            conn.close()

    return check


def redis_check(url: str) -> Callable[[], None]:
    def check() -> None:
        client = _redis_client(url)
        try:
            answered = client.ping()
        except redis.ConnectionError:
            # A pooled connection Redis has closed (a restart, a stop) fails once, "reset by peer", whatever Redis
            # is doing now. The question is whether it answers now: one PING on a new connection says that (and
            # the reason it gives, "Connection refused", is the one an operator can act on).
            answered = client.ping()
        if not answered:
            raise redis.RedisError("PING was not answered with PONG")

    return check


def broker_url_probeable(url: str) -> bool:
    return urlsplit(url).scheme in REDIS_SCHEMES


def probes_start(checks: dict[str, Callable[[], None]],
                 timeout_s: float = PROBE_TIMEOUT_S) -> Callable[[], dict[str, Probe]]:
    """Start the checks in parallel and return at once; calling the result waits for them, until `timeout_s`
    after the start, so a caller can do other work meanwhile. Each check gives a Probe, failed when it raised
    or did not finish in time."""
    deadline = time.monotonic() + timeout_s
    futures = {name: _executor.submit(_timed, name, check) for name, check in checks.items()}

    def collect() -> dict[str, Probe]:
        wait_for(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        probes: dict[str, Probe] = {}
        for name, future in futures.items():
            if future.done():
                probes[name] = future.result()
            else:
                probes[name] = Probe(name, False, None, f"no answer within {timeout_s:g} s")
            if not probes[name].up:
                logger.warning("health probe %s failed: %s", name, probes[name].error)
        return probes

    return collect


def probes_run(checks: dict[str, Callable[[], None]], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Probe]:
    """Run the checks in parallel; each gives a Probe, failed when it raised or did not finish in time."""
    return probes_start(checks, timeout_s)()


def services_probe_start(
    names: Iterable[str] = ("database", "redis", "broker"), *, database_reuse_s: float = 0.0,
) -> Callable[[], dict[str, Probe]]:
    """`services_probe`, started: the probes run while the caller works, calling the result waits for them.
    `database_reuse_s`: see `database_check`."""
    wanted = set(names)
    checks: dict[str, Callable[[], None]] = {}
    skipped: dict[str, Probe] = {}
    if "database" in wanted:
        checks["database"] = database_check(_database_params(DEFAULT_DB_ALIAS), reuse_s=database_reuse_s)
    if "redis" in wanted:
        checks["redis"] = redis_check(settings.REDIS_URL)
    if "broker" in wanted:
        broker_url = settings.CELERY_BROKER_URL
        if broker_url_probeable(broker_url):
            checks["broker"] = redis_check(broker_url)
        else:
            scheme = urlsplit(broker_url).scheme or "?"
            skipped["broker"] = Probe("broker", True, None, f"not probed: a {scheme}:// broker, not Redis",
                                      checked=False)
    collect = probes_start(checks)
    return lambda: {**collect(), **skipped}


def services_probe(names: Iterable[str] = ("database", "redis", "broker")) -> dict[str, Probe]:
    """Probes of the project's PostgreSQL (default database), Redis (REDIS_URL) and broker (CELERY_BROKER_URL).

    A broker that is not Redis is not probed here: its probe is reported up with `checked` False.
    """
    return services_probe_start(names)()
