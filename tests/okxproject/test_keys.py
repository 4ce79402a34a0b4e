"""Every Redis key okx-candles uses is named in okxproject/keys.py: no other module builds one from the
prefix, so a reader finds them all in one place and two copies on one Redis can never collide."""

from __future__ import annotations

import re
from pathlib import Path

from okxproject.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
# A key built from the prefix: an f-string or a concatenation starting with it.
BUILT_FROM_PREFIX = re.compile(
    r"""\{(?:\w+\.)?(?:prefix|REDIS_KEY_PREFIX)\}"""  # f"{keys.prefix}…", f"{settings.REDIS_KEY_PREFIX}…"
    r"""|(?:\.prefix|REDIS_KEY_PREFIX)\s*\+\s*["']"""  # keys.prefix + "…"
)


def test_no_module_but_keys_builds_a_redis_key_from_the_prefix():
    offenders = []
    for folder in ("candles", "collectors", "okxproject"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "okxproject/keys.py" or relative.startswith("collectors/simulator/"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if BUILT_FROM_PREFIX.search(line):
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_the_keys_of_two_prefixes_never_meet():
    def names(keys: Keys) -> set[str]:
        return {keys.live, keys.counters, keys.cache, keys.rate_limit("x"), keys.collectors_counted("reconnects"),
                keys.verify_reports, keys.stream_feed, keys.stream_feed_seq, keys.stream_listening}

    assert names(Keys(prefix="a:")).isdisjoint(names(Keys(prefix="b:")))
    assert all(name.startswith("a:") for name in names(Keys(prefix="a:")))
