"""How the simulator judges connection pacing after the fact: the busiest second of a list of arrival times."""

from __future__ import annotations


def busiest_second(times: list[float]) -> int:
    """The most events within any 1 s: each one and those of the second before it, the window the simulator
    counts live (`handshakes_max_per_second`) and OKX's limit applies."""
    times = sorted(times)
    most, first = 0, 0
    for last, now in enumerate(times):
        while times[first] <= now - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most
