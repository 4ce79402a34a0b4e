"""A strict reader of the Prometheus text format (0.0.4), for tests: anything off the format raises.

    families = parse(text)
    families["okx_candles_gaps"].type == "gauge"
    families["okx_candles_gaps"].value(state="open") == 2
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
HELP = re.compile(rf"# HELP ({NAME}) (.*)")
TYPE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|summary|histogram|untyped)")
SAMPLE = re.compile(rf"({NAME})(?:\{{(.*)\}})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
VALUE = re.compile(r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|NaN|[-+]Inf")
SUFFIXES = {"counter": ("",), "gauge": ("",), "untyped": ("",), "summary": ("", "_sum", "_count"),
            "histogram": ("_bucket", "_sum", "_count")}


class FormatError(AssertionError):
    pass


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: dict[tuple[str, frozenset], float] = field(default_factory=dict)

    def value(self, suffix: str = "", **labels: str) -> float:
        return self.samples[(self.name + suffix, frozenset(labels.items()))]

    def by_label(self, label: str) -> dict[str, float]:
        return {dict(key[1])[label]: value for key, value in self.samples.items()}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], text)


def _labels(text: str, line: str) -> frozenset:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = LABEL.match(text, position)
        if not match:
            raise FormatError(f"bad label set in {line!r}")
        name, value = match.group(1), _unescape(match.group(2))
        if name in labels:
            raise FormatError(f"label {name} twice in {line!r}")
        labels[name] = value
        position = match.end()
        if position < len(text):
            if text[position] != ",":
                raise FormatError(f"labels not separated by a comma in {line!r}")
            position += 1
    return frozenset(labels.items())


def parse(text: str) -> dict[str, Family]:
    if not text.endswith("\n"):
        raise FormatError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    for line in text[:-1].split("\n"):
        if not line:
            raise FormatError("empty line")
        if match := HELP.fullmatch(line):
            name = match.group(1)
            if name in helps or name in families:
                raise FormatError(f"HELP of {name} twice, or after its TYPE")
            helps[name] = _unescape(match.group(2))
            continue
        if match := TYPE.fullmatch(line):
            name = match.group(1)
            if name in families:
                raise FormatError(f"TYPE of {name} twice")
            if name not in helps:
                raise FormatError(f"TYPE of {name} without HELP before it")
            current = families[name] = Family(name, match.group(2), helps[name])
            continue
        if line.startswith("#"):
            raise FormatError(f"unexpected comment {line!r}")
        match = SAMPLE.fullmatch(line)
        if not match:
            raise FormatError(f"bad sample line {line!r}")
        name, labels, value = match.group(1), match.group(2), match.group(3)
        if current is None or name not in {current.name + s for s in SUFFIXES[current.type]}:
            raise FormatError(f"sample {name} outside its family")
        if not VALUE.fullmatch(value):
            raise FormatError(f"bad value in {line!r}")
        key = (name, _labels(labels or "", line))
        if key in current.samples:
            raise FormatError(f"series {key} twice")
        number = float(value)
        current.samples[key] = number
        if current.type == "counter" and not (number >= 0 or math.isnan(number)):
            raise FormatError(f"negative counter in {line!r}")
    return families
