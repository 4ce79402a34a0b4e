"""Ports on 127.0.0.1 that no other test process can be given at the same time.

    port = free_port()      # nothing listens there, and no other process using this module holds it

A port from `bind(("127.0.0.1", 0))` is free only until that socket closes. A server a test starts in another
process (redis-server, PostgreSQL, the simulator of a chaos run) binds it a moment later, and in between a
parallel test worker (pytest-xdist) or another checkout's test run may be handed the same port by the kernel,
or claim it for a server of its own. So ports come from below the kernel's ephemeral range, which `bind(0)`
never hands out, and each is claimed with an exclusive lock on a file that this process holds until it
releases the port or exits (a crash releases it too). A port where something listens is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "okx-test-ports"
_LOWEST = 10_000
_DEFAULT_EPHEMERAL = (32768, 60999)

# port -> the descriptor whose lock claims it, for as long as this process may use the port.
_held: dict[int, int] = {}


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


def candidate_ports() -> range:
    """The ports this module hands out: outside the ephemeral range, above the well-known and common ones."""
    low, high = _ephemeral_range()
    if low - _LOWEST >= 4_096:
        return range(_LOWEST, low)
    return range(high + 1, 65_536)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind: a connection of a previous user in TIME_WAIT does not stop them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _claim(port: int) -> int | None:
    """The descriptor holding the port's lock, or None when another process holds it."""
    LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    fd = os.open(LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, claimed for this process until `release_port` or its exit."""
    ports = candidate_ports()
    # A random start: processes claiming at the same moment rarely contend for the same lock.
    start = random.randrange(len(ports))
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        if port in _held:
            continue
        fd = _claim(port)
        if fd is None:
            continue
        if not _bindable(port):
            os.close(fd)
            continue
        _held[port] = fd
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {ports.start}..{ports.stop - 1}")


def release_port(port: int) -> None:
    """Give a claimed port back (once its server has stopped); unknown ports are ignored."""
    fd = _held.pop(port, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def held_ports() -> frozenset[int]:
    """The ports this process holds right now."""
    return frozenset(_held)
