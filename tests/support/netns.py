"""Test hosts on this machine: Linux network namespaces joined to it by veth pairs, whose links a test can cut.

    with namespaced_hosts(["a", "b"]) as net:    # as root; why_no_namespaces() says why not otherwise
        net.run("a", [python, "manage.py", ...])  # a process on host a (its own session, stopped by pid)
        net.cut("a"); net.restore("a")            # the link of host a goes down, then up
        port = net.forward(5432)                  # the machine's 127.0.0.1:5432 at net.service_ip:port

Each host is a namespace with one veth link to the machine: the machine's end is 10.213.N.1/30, the host's
10.213.N.2/30, and the host's default route goes through it. The services the hosts use listen on (or are
forwarded to) one service address, 10.213.0.1/32 on the machine's loopback, so cutting one host's link leaves
every other host's way to them alone. Everything made is removed when the block ends: the namespaces (with
their links), the service address and the forwarders; the processes started on the hosts are stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SERVICE_IP = "10.213.0.1"


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=10)


def why_no_namespaces() -> str | None:
    """None when this process can make namespaces and veth pairs; else the reason, for a skip."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add, veth pairs)"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    probe = f"okxprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    try:
        veth = _ip("link", "add", f"{probe}h", "type", "veth", "peer", "name", f"{probe}n", check=False)
        if veth.returncode != 0:
            return f"veth pairs cannot be made: {veth.stderr.strip()}"
        _ip("link", "del", f"{probe}h", check=False)
    finally:
        _ip("netns", "del", probe, check=False)
    if _ip("-4", "addr", "show", "to", "10.213.0.0/16", check=False).stdout.strip():
        return "10.213.0.0/16 is already in use on this machine"
    return None


class _Forwarder:
    """A TCP forwarder on its own event loop: SERVICE_IP:port → 127.0.0.1:target, for the hosts' sake."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, SERVICE_IP, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        def stop() -> None:
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)


@dataclass
class Hosts:
    hosts: dict[str, str]  # name → namespace
    service_ip: str = SERVICE_IP
    procs: list[subprocess.Popen] = field(default_factory=list)
    forwarders: list[_Forwarder] = field(default_factory=list)

    def link(self, name: str) -> str:
        return f"{self.hosts[name]}h"

    def run(self, name: str, command: Sequence[str], **popen) -> subprocess.Popen:
        """Start `command` on host `name` (ip netns exec execs it: its pid is the command's)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.hosts[name], *command], start_new_session=True, **popen)
        self.procs.append(proc)
        return proc

    def cut(self, name: str) -> None:
        _ip("link", "set", self.link(name), "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.link(name), "up")

    def forward(self, target: int) -> int:
        forwarder = _Forwarder(target)
        self.forwarders.append(forwarder)
        return forwarder.port

    def reaches(self, name: str, port: int) -> bool:
        """Whether host `name` can open a TCP connection to the service address's `port` now."""
        probe = ("import socket,sys; s=socket.socket(); s.settimeout(1); "
                 f"sys.exit(s.connect_ex(('{self.service_ip}', {port})))")
        done = subprocess.run(["ip", "netns", "exec", self.hosts[name], "python3", "-c", probe],
                              capture_output=True, timeout=10, check=False)
        return done.returncode == 0


@contextlib.contextmanager
def namespaced_hosts(names: Sequence[str]) -> Iterator[Hosts]:
    tag = os.getpid() % 100_000
    net = Hosts({name: f"okx{name}{tag}" for name in names})
    made: list[str] = []
    added_service_ip = False
    try:
        _ip("addr", "add", f"{SERVICE_IP}/32", "dev", "lo")
        added_service_ip = True
        for n, ns in enumerate(net.hosts.values(), start=1):
            _ip("netns", "add", ns)
            made.append(ns)
            host_end, ns_end = f"{ns}h", f"{ns}n"
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("addr", "add", f"10.213.{n}.1/30", "dev", host_end)
            _ip("link", "set", host_end, "up")
            _ip("addr", "add", f"10.213.{n}.2/30", "dev", ns_end, netns=ns)
            _ip("link", "set", ns_end, "up", netns=ns)
            _ip("link", "set", "lo", "up", netns=ns)
            _ip("route", "add", "default", "via", f"10.213.{n}.1", netns=ns)
        yield net
    finally:
        for proc in net.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        for forwarder in net.forwarders:
            forwarder.close()
        for ns in made:
            _ip("netns", "del", ns, check=False)  # its veth pair goes with it
        if added_service_ip:
            _ip("addr", "del", f"{SERVICE_IP}/32", "dev", "lo", check=False)
