"""bench/chaos.py --minutes 2 --replicas 2: the whole system through every kind of fault, then every candle exact.

The run starts its own PostgreSQL, Redis, simulator and workers (see docs/chaos.md), two collectors on every shard
(the hot standby), and takes about three minutes on two cores. Deselect it with `-m "not chaos"`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos_faults import FAULT_KINDS

ROOT = Path(__file__).resolve().parent.parent
INSTRUMENTS = 30
VERDICT = re.compile(
    r"expected (?P<expected>\d+) present (?P<present>\d+) exact (?P<exact>\d+) missing (?P<missing>\d+) "
    r"wrong (?P<wrong>\d+) duplicates (?P<duplicates>\d+) heal_s (?P<heal_s>\S+) worst_lag_s (?P<worst_lag_s>\S+)"
)

pytestmark = pytest.mark.chaos


def run_chaos(*args: str, timeout_s: float) -> tuple[int, str, str]:
    """Run bench/chaos.py; past the timeout it gets SIGTERM, so it still stops every server it started."""
    proc = subprocess.Popen([sys.executable, "bench/chaos.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        stderr += f"\nchaos run stopped after {timeout_s:.0f} s"
    return proc.returncode, stdout, stderr


def test_two_minutes_of_every_fault_leave_no_candle_missing_or_wrong_and_the_system_heals_within_a_minute():
    returncode, stdout, stderr = run_chaos("--minutes", "2", "--instruments", str(INSTRUMENTS), "--seed", "7",
                                           "--heal-timeout", "75", "--replicas", "2", timeout_s=330)
    tail = "\n".join((stdout + stderr).splitlines()[-60:])
    verdict = VERDICT.fullmatch(stdout.strip().splitlines()[-1] if stdout.strip() else "")
    assert verdict, tail
    figures = {name: float(value) for name, value in verdict.groupdict().items()}

    # Every 1s candle of a window of about 110 s, for every instrument, at the least.
    assert figures["expected"] >= INSTRUMENTS * 100, tail
    assert (figures["missing"], figures["wrong"], figures["duplicates"]) == (0, 0, 0), tail
    assert figures["present"] == figures["exact"] == figures["expected"], tail
    assert figures["heal_s"] <= 60, tail
    assert returncode == 0, tail
    applied = re.search(r"^faults applied: (.*)$", stdout, re.MULTILINE)
    assert applied, tail
    assert all(f"{kind} x" in applied.group(1) and f"{kind} x0" not in applied.group(1) for kind in FAULT_KINDS)
    # The hot standby: killing a collector opened no hole for REST to repair.
    kills = re.search(r"^collector kills: (\d+), gaps (\d+) candles (\d+)", stdout, re.MULTILINE)
    assert kills, tail
    assert int(kills.group(1)) >= 1, tail
    assert (int(kills.group(2)), int(kills.group(3))) == (0, 0), tail
