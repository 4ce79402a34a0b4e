"""Make sure PostgreSQL and Redis answer, and that the configured database exists.

    .venv/bin/python scripts/ensure_services.py

Reads DATABASE_URL, REDIS_URL and CELERY_BROKER_URL from the environment (then from `.env`, which never
overrides the environment), with the same defaults as okxproject/settings.py. Django is deliberately not
imported: this runs before migrations, and a settings error should not hide a service that is down.

A local service that is down is started (PostgreSQL only on the machine's own cluster at port 5432, Redis on
any local port); a remote one that is down is an error. Nothing is ever stopped or killed, and running this
twice, or from several checkouts with different ports and databases at once, is fine.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import redis
from dotenv import load_dotenv
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent

# Same defaults as okxproject/settings.py; keep them in step.
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/okx_candles"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# A service on one of these is ours to start. (Redis is started bound to 127.0.0.1, so not ::1.)
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Only this port belongs to the machine's own cluster; another port is somebody else's server.
MACHINE_PG_PORT = 5432
PG_CONFIG_DIR = Path("/etc/postgresql")
PG_WAIT_S = 60.0
REDIS_WAIT_S = 30.0
CONNECT_TIMEOUT_S = 3


class ServiceError(Exception):
    """A service is down and cannot be started from here; the message says what to do."""


@dataclass(frozen=True)
class PgTarget:
    host: str  # a host name, or a socket directory when it starts with "/"
    port: int
    user: str | None
    password: str | None
    dbname: str

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS or self.host.startswith("/")


@dataclass(frozen=True)
class RedisTarget:
    url: str
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS


def say(message: str) -> None:
    # Flushed at once so `make` output interleaves correctly with the commands that follow.
    print(message, flush=True)


# --- Configuration -----------------------------------------------------------------------------------


def load_environment() -> None:
    load_dotenv(ROOT / ".env", override=False)


def parse_database_url(url: str) -> PgTarget:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql", "postgis"}:
        raise ServiceError(f"DATABASE_URL must point at PostgreSQL, got scheme {parts.scheme!r}")
    # dj-database-url accepts a percent-encoded socket directory as the host; so do we.
    host = unquote(parts.hostname or "") or "127.0.0.1"
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ServiceError("DATABASE_URL names no database")
    return PgTarget(
        host=host,
        port=parts.port or 5432,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        dbname=dbname,
    )


def parse_redis_url(url: str) -> RedisTarget | None:
    """None for a broker that is not Redis (amqp://...): not ours to check or start."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        return None
    return RedisTarget(url=url, host=parts.hostname or "127.0.0.1", port=parts.port or 6379)


def redis_targets() -> list[RedisTarget]:
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    broker_url = os.environ.get("CELERY_BROKER_URL", redis_url)
    targets: list[RedisTarget] = []
    for name, url in (("REDIS_URL", redis_url), ("CELERY_BROKER_URL", broker_url)):
        target = parse_redis_url(url)
        if target is None:
            say(f"{name} is not a Redis URL ({urlsplit(url).scheme}://); not checked")
        elif all(t.label != target.label for t in targets):
            targets.append(target)
    return targets


# --- Waiting -------------------------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], str | None], timeout_s: float, failure: str) -> None:
    """Poll `check` (None = up, else the latest error) until it succeeds; after `timeout_s`, fail with
    `failure` and the latest error."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    next_report = started + 5
    while True:
        error = check()
        if error is None:
            return
        now = time.monotonic()
        if now >= deadline:
            raise ServiceError(f"{failure}: {error}")
        if now >= next_report:
            say(f"waiting for {what} ({now - started:.0f} s): {error}")
            next_report = now + 5
        time.sleep(0.5)


def tcp_is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_start_command(what: str, command: list[str]) -> str | None:
    """Run a start command; None on success, else its error output (the caller decides if that matters)."""
    say(f"starting {what}: {shlex.join(command)}")
    # Output goes to a file, not a pipe: a daemon that kept our pipe open would make us wait for EOF forever.
    with tempfile.TemporaryFile(mode="w+") as output:
        try:
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        output.seek(0)
        text = output.read().strip()
    if result.returncode != 0:
        return text or f"exit code {result.returncode}"
    return None


# --- PostgreSQL ----------------------------------------------------------------------------------------


def pg_connect(target: PgTarget, dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        dbname=dbname,
        connect_timeout=CONNECT_TIMEOUT_S,
        autocommit=True,  # CREATE DATABASE cannot run inside a transaction
        application_name="okx-candles-ensure-services",
    )


def pg_error(target: PgTarget) -> str | None:
    # The maintenance database always exists, so this works before ours is created.
    try:
        with pg_connect(target, "postgres"):
            return None
    except psycopg.Error as exc:
        return first_line(exc)


def pg_is_listening(target: PgTarget) -> bool:
    """Whether something accepts connections at all; tells 'down' from 'up but refusing us'."""
    if target.host.startswith("/"):
        return Path(target.host, f".s.PGSQL.{target.port}").exists()
    return tcp_is_listening(target.host, target.port)


def machine_pg_version() -> str:
    versions = sorted(p.name for p in PG_CONFIG_DIR.iterdir()) if PG_CONFIG_DIR.is_dir() else []
    if len(versions) != 1:
        raise ServiceError(
            f"cannot tell which PostgreSQL cluster to start: expected one version in {PG_CONFIG_DIR}, "
            f"found {versions or 'none'}"
        )
    return versions[0]


def start_machine_pg(target: PgTarget) -> None:
    if not target.is_local or target.port != MACHINE_PG_PORT:
        raise ServiceError(
            f"PostgreSQL at {target.label} is not answering, and only the machine's own cluster "
            f"(localhost:{MACHINE_PG_PORT}) is started from here; start it yourself"
        )
    version = machine_pg_version()
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    failure = run_start_command(f"PostgreSQL {version} cluster", command)
    # Another copy of this script may have started it a moment earlier; that is not a failure.
    if failure is not None and not pg_is_listening(target):
        raise ServiceError(f"could not start PostgreSQL: {failure}")


def ensure_postgres(target: PgTarget) -> None:
    if pg_error(target) is None:
        say(f"postgres {target.label} up")
        return
    if pg_is_listening(target):
        # Something answers but refuses us (wrong password, no such role, still starting): give it a
        # moment in case it is starting, but never try to start a second server on a taken port.
        refused = f"postgres {target.label} is listening but refuses our connection (check DATABASE_URL)"
        wait_for(f"postgres {target.label}", lambda: pg_error(target), 10, refused)
    else:
        say(f"postgres {target.label} down")
        start_machine_pg(target)
        late = f"postgres {target.label} did not come up within {PG_WAIT_S:.0f} s"
        wait_for(f"postgres {target.label}", lambda: pg_error(target), PG_WAIT_S, late)
    say(f"postgres {target.label} up")


def ensure_database(target: PgTarget) -> None:
    try:
        create_database_if_missing(target)
    except psycopg.Error as exc:
        raise ServiceError(f"could not check or create database {target.dbname}: {first_line(exc)}") from exc


def create_database_if_missing(target: PgTarget) -> None:
    with pg_connect(target, "postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.dbname,)).fetchone()
        if exists:
            say(f"database {target.dbname} exists")
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            # Created concurrently by another copy of this script between our check and our CREATE
            # (a CREATE racing another CREATE fails on pg_database's unique index instead).
            say(f"database {target.dbname} exists")
            return
    say(f"created database {target.dbname}")


# --- Redis ---------------------------------------------------------------------------------------------


def redis_error(target: RedisTarget) -> str | None:
    client = redis.Redis.from_url(
        target.url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return first_line(exc)
    finally:
        client.close()


def start_local_redis(target: RedisTarget) -> None:
    if not target.is_local:
        raise ServiceError(f"Redis at {target.label} is not answering and is not local; start it yourself")
    # Nothing is saved to disk: it is a local broker and cache, and --save "" keeps the cwd clean.
    command = [
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(target.port),
        "--save", "", "--appendonly", "no",
    ]  # fmt: skip
    failure = run_start_command(f"redis on port {target.port}", command)
    if failure is not None and redis_error(target) is not None:
        raise ServiceError(f"could not start Redis: {failure}")


def ensure_redis(target: RedisTarget) -> None:
    if redis_error(target) is None:
        say(f"redis {target.label} up")
        return
    if tcp_is_listening(target.host, target.port):
        # Something holds the port but does not answer our ping (password, not Redis, still loading):
        # starting another server there would only fail, so wait briefly and report what it says.
        refused = f"redis {target.label} is listening but does not answer our ping (check REDIS_URL)"
        wait_for(f"redis {target.label}", lambda: redis_error(target), 10, refused)
    else:
        say(f"redis {target.label} down")
        start_local_redis(target)
        late = f"redis {target.label} did not come up within {REDIS_WAIT_S:.0f} s"
        wait_for(f"redis {target.label}", lambda: redis_error(target), REDIS_WAIT_S, late)
    say(f"redis {target.label} up")


# --- Entry point ---------------------------------------------------------------------------------------


def main() -> int:
    load_environment()
    try:
        pg = parse_database_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
        ensure_postgres(pg)
        ensure_database(pg)
        for target in redis_targets():
            ensure_redis(target)
    except ServiceError as exc:
        print(f"ensure_services: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
