"""The fault schedule of a chaos run, and the code that applies each fault to the running system.

The schedule is deterministic from the seed: the fault kinds in an order shuffled by the seed, one per slot of
`every_s` seconds, round-robin, so a run with at least as many slots as kinds applies every kind at least once.
Each fault starts at the beginning of its slot and lasts a fraction of it (outages are capped), so faults never
overlap and the system gets the rest of the slot to recover before the next one.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.chaos_system import KEY_PREFIX, ChaosSystem

# name -> what it does (printed with --list-faults and in docs/chaos.md).
FAULT_KINDS: dict[str, str] = {
    "ws_drop": "the simulator aborts every WebSocket (no close frame)",
    "notice_64008": "the simulator sends notice 64008 and closes every WebSocket (1012) a second later",
    "confirm_omit": "half the confirm pushes are left out for a while (REST must supply those candles)",
    "rest_429": "every REST request answers HTTP 429 / 50011 for a while (a rate-limit window)",
    "rest_slow": "every REST request is answered 3 s late for a while",
    "malformed": "5 malformed frames on every WebSocket, between the pushes",
    "kill_collector": "SIGKILL a collectors worker (with replicas, each in turn), restart it after a pause",
    "kill_flush": "SIGKILL the flush worker mid-flush (while it holds the flush lock), restart it after a pause",
    "redis_down": "stop Redis (SHUTDOWN NOSAVE: what it held is gone), start it again",
    "postgres_down": "stop PostgreSQL (alternately fast and immediate, i.e. crash), start it again",
    "second_collector": "start a second collectors worker (shards move to it), stop it (they move back)",
}

# How long each kind lasts: a fraction of the slot, capped (seconds). Kinds not listed are instantaneous.
_DURATION: dict[str, tuple[float, float]] = {
    "confirm_omit": (0.5, 15.0),
    "rest_429": (0.5, 10.0),
    "rest_slow": (0.5, 15.0),
    "kill_collector": (0.2, 5.0),
    "kill_flush": (0.2, 5.0),
    "redis_down": (0.5, 15.0),
    "postgres_down": (0.75, 20.0),
    "second_collector": (0.75, 20.0),
}
# A fault's effect reaches candles that closed shortly before it (still on their way to a flush) and outlasts
# it by a reconnect or a restart: the lag of candles closing within these margins counts as "during faults".
BEFORE_MARGIN_S = 2.0
RECOVERY_MARGIN_S = 10.0
# How long kill_flush waits for a flush to be under way before it kills the worker anyway.
MID_FLUSH_WAIT_S = 5.0


@dataclass(frozen=True)
class PlannedFault:
    at_s: float  # from the start of the fault period
    kind: str
    duration_s: float


@dataclass
class AppliedFault:
    kind: str
    started: float  # epoch seconds
    ended: float
    note: str = ""


def fault_schedule(*, seed: int, period_s: float, every_s: float) -> list[PlannedFault]:
    """Faults for a period of `period_s` seconds, one every `every_s`; every kind at least once."""
    slots = int(period_s // every_s)
    if slots < len(FAULT_KINDS):
        raise ValueError(f"{period_s:.0f} s with a fault every {every_s:g} s is {slots} faults; all "
                         f"{len(FAULT_KINDS)} kinds need at least {len(FAULT_KINDS) * every_s:.0f} s")
    order = list(FAULT_KINDS)
    random.Random(seed).shuffle(order)
    plan = []
    for slot in range(slots):
        kind = order[slot % len(order)]
        fraction, cap = _DURATION.get(kind, (0.0, 0.0))
        plan.append(PlannedFault(slot * every_s, kind, round(min(cap, fraction * every_s), 1)))
    return plan


def default_every_s(period_s: float) -> float:
    """Slots as long as possible up to 30 s, and never shorter than 10 s, with every kind at least once."""
    return max(10.0, min(30.0, period_s / len(FAULT_KINDS)))


class Simulator:
    """The simulator's control endpoint."""

    def __init__(self, url: str) -> None:
        self.url = url

    def control(self, action: str, **params: Any) -> Any:
        body = json.dumps({"action": action, **params}).encode()
        request = urllib.request.Request(f"{self.url}/sim/control", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["result"]

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/sim/stats", timeout=10) as response:
            return json.load(response)


@dataclass
class FaultRunner:
    """Applies planned faults to the system at their time, printing each with a timestamp."""

    system: ChaosSystem
    sim: Simulator
    log: Callable[[str], None] = print
    slot_s: float = 30.0  # the schedule's seconds per fault: a kill's REST count runs to the end of its slot
    applied: list[AppliedFault] = field(default_factory=list)
    _postgres_stops: int = 0
    _collector_kills: int = 0
    # REST requests the simulator served from each collector kill to the start of the next fault: what the
    # kill cost (with a hot standby, nothing but what other faults' repairs left running into that slot).
    kill_rest_requests: list[int] = field(default_factory=list)

    def run(self, plan: list[PlannedFault], start: float) -> list[AppliedFault]:
        self._pending_kill_rest: int | None = None
        for fault in plan:
            delay = start + fault.at_s - time.time()
            if delay > 0:
                time.sleep(delay)
            self._count_kill_rest()
            self._supervise()
            began = time.time()
            self.log(f"{_clock(began)} +{began - start:6.1f}s fault {fault.kind}"
                     f"{f' for {fault.duration_s:g} s' if fault.duration_s else ''}: {FAULT_KINDS[fault.kind]}")
            rest_before = self.sim.stats()["rest_requests"] if fault.kind == "kill_collector" else None
            note = getattr(self, f"_{fault.kind}")(fault.duration_s) or ""
            ended = time.time()
            if rest_before is not None:
                self._pending_kill_rest = rest_before
            self.applied.append(AppliedFault(fault.kind, began, ended, note))
            self.log(f"{_clock(ended)} +{ended - start:6.1f}s   {fault.kind} over after {ended - began:.1f} s"
                     f"{f': {note}' if note else ''}")
        if self._pending_kill_rest is not None:
            time.sleep(max(0.0, self.slot_s - (time.time() - self.applied[-1].started)))
        self._count_kill_rest()
        self._supervise()
        return self.applied

    def _count_kill_rest(self) -> None:
        if self._pending_kill_rest is not None:
            self.kill_rest_requests.append(self.sim.stats()["rest_requests"] - self._pending_kill_rest)
            self._pending_kill_rest = None

    def _supervise(self) -> None:
        for restarted in self.system.supervise():
            self.log(f"{_clock(time.time())} SUPERVISOR: {restarted} exited unexpectedly; restarted")

    # --- the faults -------------------------------------------------------------------------------

    def _ws_drop(self, _: float) -> str:
        return f"{self.sim.control('drop_connections')} connections dropped"

    def _notice_64008(self, _: float) -> str:
        sent = self.sim.control("send_notice", close_after=1.0)
        time.sleep(1.0)
        return f"notice sent on {sent} connections"

    def _confirm_omit(self, duration: float) -> str:
        before = self.sim.stats()["confirms_omitted"]
        self.sim.control("set_confirm_omit_rate", rate=0.5)
        try:
            time.sleep(duration)
        finally:
            self.sim.control("set_confirm_omit_rate", rate=0.0)
        return f"{self.sim.stats()['confirms_omitted'] - before} confirm pushes left out"

    # The simulator counts these faults in requests; a window of time is what OKX's limits look like, so the
    # count is set beyond reach and taken back when the window closes.
    def _rest_429(self, duration: float) -> str:
        before = self.sim.stats()["rest_429s"]
        self.sim.control("rest_429", count=1_000_000)
        try:
            time.sleep(duration)
        finally:
            self.sim.control("rest_429", count=0)
        return f"{self.sim.stats()['rest_429s'] - before} requests refused"

    def _rest_slow(self, duration: float) -> str:
        before = self.sim.stats()["rest_requests"]
        self.sim.control("rest_delay", seconds=3.0, count=1_000_000)
        try:
            time.sleep(duration)
        finally:
            self.sim.control("rest_delay", seconds=0.0, count=0)
        return f"{self.sim.stats()['rest_requests'] - before} requests slowed"

    def _malformed(self, _: float) -> str:
        self.sim.control("send_malformed", count=5)
        return ""

    def _kill_collector(self, duration: float) -> str:
        names = self.system.config.collectors
        name = names[self._collector_kills % len(names)]
        self._collector_kills += 1
        return f"{name}: " + self._kill_and_restart(name, duration)

    def _kill_flush(self, duration: float) -> str:
        # Mid-flush is the case that matters: the lock and the taken batch stay behind in Redis.
        mid_flush = self._wait_for_flush_lock(MID_FLUSH_WAIT_S)
        note = self._kill_and_restart("flush", duration)
        when = "mid-flush" if mid_flush else f"no flush under way within {MID_FLUSH_WAIT_S:g} s"
        return f"{note}; {when}"

    def _kill_and_restart(self, name: str, duration: float) -> str:
        pid = self.system.procs[name].pid
        self.system.kill(name, signal.SIGKILL)
        time.sleep(duration)
        self.system.restart(name)
        return f"pid {pid} killed, restarted as pid {self.system.procs[name].pid}"

    def _wait_for_flush_lock(self, timeout_s: float) -> bool:
        with self._redis() as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if client.exists(f"{KEY_PREFIX}lock:flush"):
                    return True
                time.sleep(0.002)
        return False

    def _redis_down(self, duration: float) -> str:
        self.system.redis.stop()
        try:
            time.sleep(duration)
        finally:
            self.system.redis.start()
        return ""

    def _postgres_down(self, duration: float) -> str:
        mode = ("fast", "immediate")[self._postgres_stops % 2]
        self._postgres_stops += 1
        self.system.pg.stop(mode)
        try:
            time.sleep(duration)
        finally:
            self.system.pg.start()
        return f"stopped in mode {mode}"

    def _second_collector(self, duration: float) -> str:
        self.system.start_collector("collectors-b")
        deadline = time.time() + duration
        took = set()
        while time.time() < deadline:
            took |= {shard for shard, owners in self._lease_owners().items()
                     if any(owner.startswith("collectors-b@") for owner in owners)}
            time.sleep(0.5)
        self.system.stop("collectors-b")
        return f"collectors-b held shards {sorted(took) or 'none'}"

    def _lease_owners(self) -> dict[int, set[str]]:
        """Per shard, the collectors holding one of its slots (COLLECTOR_REPLICAS of them)."""
        replicas = self.system.config.replicas
        with self._redis() as client:
            try:
                owners = {}
                for shard in range(int(self.system.env["COLLECTOR_SHARDS"])):
                    slots = [f"{KEY_PREFIX}lease:shard:{shard}", *(f"{KEY_PREFIX}lease:shard:{shard}:{n}"
                                                                  for n in range(1, replicas))]
                    held = {owner.decode() for owner in client.mget(slots) if owner}
                    if held:
                        owners[shard] = held
                return owners
            except redis.RedisError:
                return {}

    @contextlib.contextmanager
    def _redis(self) -> Iterator[redis.Redis]:
        client = redis.Redis.from_url(self.system.redis.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            yield client
        finally:
            client.close()


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int(epoch % 1 * 10)}"
