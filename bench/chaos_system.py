"""The system under chaos: its servers and processes, started, killed, restarted and stopped by pid.

    system = ChaosSystem(SystemConfig(run_dir=..., instruments=200, bars=("1s", "1m", "5m"), seed=7))
    system.start()                      # PostgreSQL, Redis, simulator, migrate, workers, subscriptions
    system.kill("flush"); system.start_flush()
    system.redis.stop(); system.redis.start()
    system.close()

Everything lives in `run_dir` and listens on 127.0.0.1 ports of its own: a private PostgreSQL cluster and a
private Redis (tests.support.private_services), the OKX simulator and the Celery workers, each in a process
group of its own so that a kill reaches its children (the prefork pool, the embedded beat) and nothing else.
The settings reach the processes through the environment only, as they would in production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.private_services import PG_USER, PrivatePostgres, PrivateRedis, free_port  # noqa: E402

DB_NAME = "okx_chaos"
KEY_PREFIX = "chaos:"
STOP_TIMEOUT_S = 20.0
# Settings that make the system react in seconds, so that a few minutes hold many faults: shards move after a
# 5 s lease, collectors reconcile every second, subscriptions go stale after 10 s of silence.
SYSTEM_SETTINGS = {
    "FLUSH_INTERVAL_S": "1",
    "COLLECTOR_LEASE_TTL_S": "5",
    "COLLECTOR_RECONCILE_S": "1",
    "COLLECTOR_SHARDS": "8",
    "BACKFILL_RECENT_HOURS": "0.1",
    "HEALTH_STALE_AFTER_S": "10",
}


@dataclass(frozen=True)
class SystemConfig:
    run_dir: Path
    instruments: int
    bars: tuple[str, ...]
    seed: int
    log_level: str = "INFO"
    # COLLECTOR_REPLICAS: with 2, two collectors workers hold every shard (hot standby).
    replicas: int = 1

    @property
    def collectors(self) -> list[str]:
        """The collectors workers the system runs: `collectors`, then `collectors-2`, ... one per replica."""
        return ["collectors", *(f"collectors-{n}" for n in range(2, self.replicas + 1))]


class ProcessFailed(RuntimeError):
    pass


class ChaosSystem:
    """The whole okx-candles system against the simulator, every part of it ours to break."""

    def __init__(self, config: SystemConfig) -> None:
        self.config = config
        self.run_dir = config.run_dir
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # PostgreSQL runs as user postgres, which must be able to reach its directory inside ours.
        self.run_dir.chmod(0o711)
        pg_root = self.run_dir / "postgres"
        pg_root.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_USER)
            os.chown(pg_root, user.pw_uid, user.pw_gid)
        redis_root = self.run_dir / "redis"
        redis_root.mkdir()
        # Commit times: the verdict's lag is close to commit (the candle row keeps no write time of its own).
        self.pg = PrivatePostgres(pg_root, free_port(), settings={"track_commit_timestamp": "on"})
        self.redis = PrivateRedis(redis_root, free_port())
        self.sim_port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.unexpected_exits: list[tuple[str, int]] = []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "okxproject.settings",
            "DATABASE_URL": self.pg.url_for(DB_NAME),
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.redis.url,
            "REDIS_KEY_PREFIX": KEY_PREFIX,
            "OKX_WS_URL": f"ws://127.0.0.1:{self.sim_port}/ws/v5/business",
            "OKX_REST_URL": self.sim_url,
            "LOG_LEVEL": config.log_level,
            "PYTHONUNBUFFERED": "1",
            **SYSTEM_SETTINGS,
            "COLLECTOR_REPLICAS": str(config.replicas),
        }
        self.env.pop("CELERY_RESULT_BACKEND", None)

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def db_url(self) -> str:
        return self.pg.url_for(DB_NAME)

    # --- bring-up ---------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Servers, simulator, schema, instruments, beat schedule, workers, subscriptions; returns the instruments."""
        self.pg.initdb()
        self.pg.start()
        with psycopg.connect(self.pg.url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DB_NAME}")
        self.redis.start()
        self.start_simulator()
        self.manage("migrate", "--verbosity", "0")
        self.manage("sync_instruments", "--type", "SPOT")
        self.manage("setup_periodic_tasks")
        self.start_flush()
        self.start_backfill_worker()
        for name in self.config.collectors:
            self.start_collector(name)
        instruments = self.instruments()
        # After the collector is up, as an operator would subscribe in a running system.
        self.manage("subscribe", *instruments, *[arg for bar in self.config.bars for arg in ("-t", bar)])
        return instruments

    def start_simulator(self) -> None:
        self._spawn("simulator", [
            sys.executable, "-m", "collectors.simulator", "--host", "127.0.0.1", "--port", str(self.sim_port),
            "--seed", str(self.config.seed), "--instruments", str(self.config.instruments),
            "--bars", ",".join(self.config.bars), "--push-interval", "1", "--history-days", "1",
        ])
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.sim_url}/sim/stats", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise ProcessFailed(f"the simulator did not answer; see {self.logs / 'simulator.log'}") from None
                time.sleep(0.1)

    def manage(self, *args: str) -> None:
        """One `manage.py` command against the private database; its output goes to logs/manage.log."""
        with (self.logs / "manage.log").open("a") as log:
            log.write(f"\n$ manage.py {' '.join(args[:6])}{' ...' if len(args) > 6 else ''}\n")
            log.flush()
            completed = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, timeout=300, check=False)
        if completed.returncode != 0:
            raise ProcessFailed(f"manage.py {args[0]} failed ({completed.returncode}); see {self.logs / 'manage.log'}")

    def instruments(self) -> list[str]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT inst_id FROM candles_instrument WHERE state = 'live' AND delisted_at IS NULL "
                "AND inst_type = 'SPOT' ORDER BY id LIMIT %s", [self.config.instruments],
            ).fetchall()
        return [inst_id for (inst_id,) in rows]

    # --- the workers, as `make run` starts them -----------------------------------------------------

    def _celery(self, name: str, *args: str) -> None:
        self._spawn(name, [sys.executable, "-m", "celery", "-A", "okxproject", "worker",
                           "--loglevel", self.config.log_level, *args])

    def start_collector(self, name: str) -> None:
        # The same worker name after a restart, as a supervisor restarting the same service would give.
        self._celery(name, "--collector", "-Q", "collectors", "-n", f"{name}@%h", "--pool", "solo")

    def start_flush(self) -> None:
        self._celery("flush", "-Q", "flush", "-n", "flush@%h", "--pool", "solo")

    def start_backfill_worker(self) -> None:
        # -B embeds beat; its schedule is the one setup_periodic_tasks wrote to the database.
        self._celery("worker", "-Q", "backfill,default,webhooks", "-n", "worker@%h", "--concurrency", "2", "-B",
                     "--pidfile=")

    def restart(self, name: str) -> None:
        """Start a process of this name again the way it was first started."""
        if name == "simulator":
            self.start_simulator()
        elif name == "flush":
            self.start_flush()
        elif name == "worker":
            self.start_backfill_worker()
        else:
            self.start_collector(name)

    # --- processes --------------------------------------------------------------------------------

    def _spawn(self, name: str, command: Sequence[str]) -> subprocess.Popen:
        if name in self.procs and self.procs[name].poll() is None:
            raise ProcessFailed(f"{name} is already running (pid {self.procs[name].pid})")
        log = (self.logs / f"{name}.log").open("a")
        log.write(f"\n===== {time.strftime('%H:%M:%S')} start {name}\n")
        log.flush()
        # A session of its own: the process leads its group, so killpg(pid) reaches its children only.
        proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()  # the child holds its own descriptor
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal `name` and wait for it to exit, then clear what is left of its process group.

        SIGKILL goes to the whole group at once (a machine or container dying); other signals to the leader
        only, which shuts its children down itself (Celery's warm shutdown). Linux does not hand out a pid that
        is still some group's id, so the last killpg reaches only leftovers of ours, never a stranger.
        """
        proc = self.procs.pop(name)
        if sig == signal.SIGKILL:
            self._signal_group(proc, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()
        self._signal_group(proc, signal.SIGKILL)

    def stop(self, name: str) -> None:
        """SIGTERM (a warm shutdown for Celery), SIGKILL after STOP_TIMEOUT_S."""
        if name in self.procs:
            self.kill(name, signal.SIGTERM)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def supervise(self) -> list[str]:
        """Restart any process that exited without being told to (what systemd or compose would do)."""
        restarted = []
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            self.unexpected_exits.append((name, code))
            self._signal_group(proc, signal.SIGKILL)
            del self.procs[name]
            self.restart(name)
            restarted.append(f"{name} (exit code {code})")
        return restarted

    # --- teardown ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process we started (collectors first, the simulator last), then Redis and PostgreSQL."""
        order = sorted(self.procs, key=lambda name: (name == "simulator", name in ("flush", "worker")))
        for name in order:
            with contextlib.suppress(Exception):
                self.kill(name, signal.SIGTERM)
        pid = self.redis.pid
        try:
            self.redis.stop()
        except Exception:
            _kill_pid(pid)
        pid = self.pg.pid
        if pid is not None and self.pg.running():
            try:
                self.pg.stop("immediate")
            except RuntimeError:
                _kill_pid(pid)


def _kill_pid(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
