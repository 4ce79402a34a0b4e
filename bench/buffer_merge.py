"""The buffer's merge rule in Redis (PUT_NEWEST_LUA): the cost of ordering open candles by their data.

    .venv/bin/python bench/buffer_merge.py [--entries 20000] [--rounds 5] [--baseline REV]

Writes `--entries` open candles into an empty hash of the machine's Redis (a key of its own, deleted after),
then replaces all of them `--rounds` times with versions further on (more volume), and prints the best round
per entry. With `--baseline REV` the same is done with the script of that git revision (e.g. the clock-ordered
rule before the hot standby, 227283e) and both are printed side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402

from collectors.live.buffer import PUT_NEWEST_LUA, pack_entries  # noqa: E402


def script_at(revision: str) -> str:
    text = subprocess.run(["git", "show", f"{revision}:collectors/pipeline/buffer.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    start = text.index('PUT_NEWEST_LUA = """') + len('PUT_NEWEST_LUA = """')
    return text[start:text.index('"""', start)]


def entries(count: int, version: int, vol: str) -> str:
    return pack_entries((f"I{i}-USDT|1s|1705431600000",
                         f'{version}|0|["100.5","110.25","90.125","105","{vol}","157.5","157.5"]')
                        for i in range(count))


def best_replace_us(client: redis.Redis, script: str, count: int, rounds: int) -> float:
    put = client.register_script(script)
    key = f"bench:buffer-merge:{uuid.uuid4().hex}"
    try:
        put(keys=[key], args=[entries(count, 1_000, "1.5")])
        best = float("inf")
        for n in range(rounds):
            payload = entries(count, 2_000 + n, f"{2 + n}.5")  # more volume each round
            started = time.perf_counter()
            written = put(keys=[key], args=[payload])
            best = min(best, time.perf_counter() - started)
            assert written == count, f"only {written} of {count} replaced"
        return best / count * 1e6
    finally:
        client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default=None, help="a git revision whose PUT_NEWEST_LUA to measure beside")
    args = parser.parse_args()
    client = redis.Redis.from_url(settings.REDIS_URL)
    figures = {"this tree": best_replace_us(client, PUT_NEWEST_LUA, args.entries, args.rounds)}
    if args.baseline:
        figures[args.baseline] = best_replace_us(client, script_at(args.baseline), args.entries, args.rounds)
    for name, us in figures.items():
        print(f"{name}: {us:.2f} us per replaced entry ({args.entries:,} entries per call, best of {args.rounds})")


if __name__ == "__main__":
    main()
