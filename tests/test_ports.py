"""tests.support.ports: parallel test processes never get the same port for their private servers."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ports

ROOT = Path(__file__).resolve().parent.parent


def test_a_port_is_outside_the_ephemeral_range_and_nothing_listens_there():
    port = ports.free_port()
    try:
        low, high = ports._ephemeral_range()
        assert not low <= port <= high
        assert port in ports.candidate_ports()
        with socket.create_server(("127.0.0.1", port)):  # binds: nothing else does
            pass
    finally:
        ports.release_port(port)


def claim_all() -> set[int]:
    """Every port this process can claim, until free_port says there is none left."""
    claimed: set[int] = set()
    while True:
        try:
            claimed.add(ports.free_port())
        except RuntimeError:
            return claimed


def test_a_port_another_process_holds_is_never_handed_out_until_it_lets_go(monkeypatch):
    # Both processes choose from the same 300 ports: the other one claims 200, then waits while this one
    # claims every port it can.
    first = ports.candidate_ports().start + random.randrange(len(ports.candidate_ports()) - 300)
    shared = range(first, first + 300)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom tests.support import ports\n"
         f"ports.candidate_ports = lambda: range({shared.start}, {shared.stop})\n"
         "print(*[ports.free_port() for _ in range(200)], flush=True)\nsys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    monkeypatch.setattr(ports, "candidate_ports", lambda: shared)
    mine: set[int] = set()
    try:
        theirs = {int(p) for p in holder.stdout.readline().split()}
        assert len(theirs) == 200
        mine = claim_all()
        assert mine, "every port of the range is taken by others: run it again"
        assert not mine & theirs
        holder.communicate("", timeout=10)
        # The holder is gone: its ports can be claimed again (this process still holds its own).
        freed = claim_all()
        mine |= freed
        # Its ports are among them (other test workers may have let go of some ports meanwhile too).
        assert len(freed & theirs) >= 190
    finally:
        if holder.poll() is None:
            holder.kill()
        for port in mine:
            ports.release_port(port)


def test_a_port_where_a_server_listens_is_skipped(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        busy = listener.getsockname()[1]
        monkeypatch.setattr(ports, "candidate_ports", lambda: range(busy, busy + 1))
        with pytest.raises(RuntimeError, match=f"no free port on 127.0.0.1 in {busy}..{busy}"):
            ports.free_port()
