"""Tests that run alone while the rest of the suite runs in parallel workers (pytest-xdist).

    room = Room(Path("/tmp/okx-test-solo-<run id>"))
    with room.shared():      # any test: runs beside the other worker's tests
        ...
    with room.exclusive():   # a test marked `solo`: no other test of the run executes meanwhile
        ...

A test that holds a wall-clock budget against real work (so many REST repairs within 1.2 s) measures the CPU
it gets, and on two cores the other worker takes half of it. Each worker holds the room shared for the whole
of every test (setup, call, teardown) and exclusively for a solo test. A solo test that waits takes the
turnstile first, so the other worker cannot keep the room shared from one test to the next meanwhile.
The locks are `flock`s on two files that every worker of one run opens: a crashed worker lets go of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class Room:
    """A readers-writer lock shared by the processes that open the same `prefix`."""

    def __init__(self, prefix: Path) -> None:
        self.paths = (prefix.with_name(prefix.name + ".turnstile"), prefix.with_name(prefix.name + ".room"))
        self._turnstile = os.open(self.paths[0], os.O_CREAT | os.O_RDWR, 0o666)
        self._room = os.open(self.paths[1], os.O_CREAT | os.O_RDWR, 0o666)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        # Passing the turnstile waits for a solo test that is waiting for the room or in it.
        fcntl.flock(self._turnstile, fcntl.LOCK_SH)
        fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        fcntl.flock(self._room, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._room, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._room, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._room, fcntl.LOCK_UN)

    def close(self, *, unlink: bool = False) -> None:
        """Close the files; `unlink` removes them too (a worker that is done: the others keep theirs open)."""
        for fd in (self._turnstile, self._room):
            with contextlib.suppress(OSError):
                os.close(fd)
        if unlink:
            for path in self.paths:
                path.unlink(missing_ok=True)
