"""A private PostgreSQL and a private Redis that a test may stop and start: never the machine's own.

    with private_postgres() as pg:      # initdb + pg_ctl of PostgreSQL 15, run as user postgres
        pg.url; pg.stop(); pg.start()
    with private_redis() as r:          # redis-server on its own port, no persistence unless asked
        r.url; r.stop(); r.start()

Each takes a port on 127.0.0.1 that no other test process can be given (`tests.support.ports`, so parallel
test workers never collide), lives in a temporary directory, and stops itself when the block ends, killing
only the process it started. A handle can also be rebuilt in a subprocess (`PrivatePostgres(...)`
with the same directory and port) to stop and start the same server from there; only the context manager
owns its cleanup.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port, release_port

__all__ = ["PrivatePostgres", "PrivateRedis", "free_port", "private_postgres", "private_redis"]

PG_BIN = Path(os.environ.get("PRIVATE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
_START_TIMEOUT_S = 30.0


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    """Whether `pid` is a running process; a zombie (exited, not yet reaped by its parent) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    # The state follows the command name, which is in parentheses and may itself hold spaces.
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kill_own(pid: int | None) -> None:
    """Last resort at cleanup: SIGKILL the one server process we started, by its pid."""
    if pid is None or not _pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        _wait(lambda: not _pid_alive(pid), 5.0, f"pid {pid} to exit")


# --- PostgreSQL ------------------------------------------------------------------------------------


def _as_postgres() -> list[str]:
    # initdb and postgres refuse to run as root; when we are not root we are whoever may run them.
    return ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []


class PrivatePostgres:
    """A PostgreSQL cluster in `root` (data in root/data), listening on 127.0.0.1:`port`."""

    def __init__(self, root: Path | str, port: int, *, durable: bool = False,
                 settings: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.port = port
        self.durable = durable
        self.settings = dict(settings or {})
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (first line of postmaster.pid)."""
        return _read_pid(self.data / "postmaster.pid")

    def initdb(self) -> None:
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync", "--no-instructions"])
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "max_connections = 50\n"
            )
            if self.durable:
                # As a deployment runs: initdb's defaults (fsync, synchronous commit, full-page writes,
                # autovacuum all on), the machine's own shared_buffers. For benchmarks.
                conf.write("shared_buffers = 128MB\n")
            else:
                # Fast and disposable: nothing here must survive a crash of the machine.
                conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n")
            conf.writelines(f"{name} = {value}\n" for name, value in self.settings.items())

    def start(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t",
                   str(int(_START_TIMEOUT_S)), "start"])
        _wait(lambda: _port_open(self.port), _START_TIMEOUT_S, f"PostgreSQL on port {self.port}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server ("fast": disconnect clients and shut down cleanly; "immediate": like a crash)."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and _pid_alive(pid)

    def _run(self, command: list[str]) -> None:
        completed = subprocess.run([*_as_postgres(), *command], capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}): "
                               f"{completed.stdout}{completed.stderr}\n{log}")


@contextlib.contextmanager
def private_postgres(*, durable: bool = False, settings: dict[str, str] | None = None) -> Iterator[PrivatePostgres]:
    """A fresh PostgreSQL 15 cluster of our own, started; stopped and deleted when the block ends.

    `settings` are written to its postgresql.conf last (they win over the defaults above)."""
    root = Path(tempfile.mkdtemp(prefix="okx-private-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    server = PrivatePostgres(root, free_port(), durable=durable, settings=settings)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        _stop_postgres(server)
        shutil.rmtree(root, ignore_errors=True)
        release_port(server.port)


def _stop_postgres(server: PrivatePostgres) -> None:
    pid = server.pid
    if pid is None or not _pid_alive(pid):
        return
    try:
        server.stop("immediate")
    except RuntimeError:
        # Only when pg_ctl failed: after a clean stop the pid may already belong to someone else.
        _kill_own(pid)


# --- Redis -----------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server listening on 127.0.0.1:`port`, with its files in `root`."""

    def __init__(self, root: Path | str, port: int, *, appendonly: bool = False) -> None:
        self.root = Path(root)
        self.port = port
        self.appendonly = appendonly
        self.pidfile = self.root / "redis.pid"
        self.log = self.root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return _read_pid(self.pidfile)

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        command = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
            "--daemonize", "yes", "--pidfile", str(self.pidfile), "--dir", str(self.root),
            "--logfile", str(self.log),
        ]
        subprocess.run(command, check=True, capture_output=True)
        # Ready means answering PING: a server loading its append-only file accepts links but refuses commands.
        _wait(lambda: self.pid is not None and self._answers(), _START_TIMEOUT_S, f"Redis on port {self.port}")

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (an append-only file, when enabled, still holds every write), then wait for the exit."""
        pid = self.pid
        if pid is None or not _pid_alive(pid):
            return
        if not self._shutdown():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait(lambda: not _pid_alive(pid), 10.0, f"redis-server pid {pid} to exit")
        # A stale pid file would let the next start() believe the server is up before it is.
        self.pidfile.unlink(missing_ok=True)

    def _client(self):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: a retrying client waits seconds on a server that is going or not there yet.
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=1,
                           retry=Retry(NoBackoff(), 0))

    def _answers(self) -> bool:
        import redis

        client = self._client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _shutdown(self) -> bool:
        import redis

        client = self._client()
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the link closing is the success case; the caller waits for the exit either way
        except redis.RedisError:
            return False
        finally:
            client.close()
        return True

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and _pid_alive(pid)


@contextlib.contextmanager
def private_redis(*, appendonly: bool = False) -> Iterator[PrivateRedis]:
    """A redis-server of our own, started; stopped and deleted when the block ends.

    By default it keeps nothing across a restart; `appendonly=True` keeps every write (like a production
    Redis with AOF), for tests where data must survive the outage.
    """
    root = Path(tempfile.mkdtemp(prefix="okx-private-redis-"))
    server = PrivateRedis(root, free_port(), appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        pid = server.pid
        try:
            server.stop()
        except Exception:
            # Only when the clean stop failed: after it the pid may already belong to someone else.
            _kill_own(pid)
        shutil.rmtree(root, ignore_errors=True)
        release_port(server.port)
