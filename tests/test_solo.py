"""tests.support.solo: a `solo` test runs while no other test of the run does, and is not starved."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.solo import Room


@pytest.fixture
def rooms(tmp_path: Path):
    """`rooms(n)`: n handles on one room, as n workers hold them (flock tells their open files apart)."""
    made: list[Room] = []

    def make(count: int) -> list[Room]:
        made.extend(Room(tmp_path / "solo") for _ in range(count))
        return made[-count:]

    yield make
    for room in made:
        room.close()


def in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_shared_holders_run_together_and_an_exclusive_one_waits_for_them_all(rooms):
    a, b, solo = rooms(3)
    events: list[str] = []

    def run_solo() -> None:
        with solo.exclusive():
            events.append("solo in")

    with a.shared(), b.shared():
        waiting = in_thread(run_solo)
        time.sleep(0.3)
        assert events == []  # still two tests in the room
        events.append("others out")
    waiting.join(5)
    assert events == ["others out", "solo in"]


def test_a_waiting_solo_test_goes_before_tests_that_start_after_it(rooms):
    worker, solo, next_test = rooms(3)
    events: list[str] = []

    def run(room: Room, name: str, exclusive: bool) -> None:
        with room.exclusive() if exclusive else room.shared():
            events.append(f"{name} in")
            time.sleep(0.1)
            events.append(f"{name} out")

    with worker.shared():
        waiting_solo = in_thread(lambda: run(solo, "solo", True))
        time.sleep(0.2)  # the solo test waits for the room
        later = in_thread(lambda: run(next_test, "next", False))
        time.sleep(0.2)
        assert events == []
    waiting_solo.join(5)
    later.join(5)
    assert events == ["solo in", "solo out", "next in", "next out"]

