"""The referee of a chaos run: every closed candle of the window, the simulator's ground truth against PostgreSQL.

A candle is *expected* when it opened at or after the window's start and closed by its end. It is *present*
when the table holds a row for it, and *exact* when that row is confirmed and every number reads back as the
very text of the ground truth (open, high, low, close, vol, volCcy, volCcyQuote); a present row that is not
exact is *wrong*. *Duplicates* counts keys held by more than one row in the whole table: the composite
primary key makes that impossible, and the count proves it.

Lag is measured for candles whose stored row came from the WebSocket (source `ws`): the commit time of the
transaction that wrote the confirmed version (`track_commit_timestamp`, on in the run's own server) minus the
candle's close. Rows REST filled in
are not live data and have no lag. `calm` lag leaves out candles that closed during a fault, BEFORE_MARGIN_S
before it (still on their way to a flush when it struck) or RECOVERY_MARGIN_S after it.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from bench.chaos_faults import BEFORE_MARGIN_S, RECOVERY_MARGIN_S, AppliedFault
from collectors.simulator.bars import BARS

Key = tuple[str, str, int]  # (inst_id, bar, open_ms)
Values = tuple[str | None, ...]  # open, high, low, close, vol, volCcy, volCcyQuote as text

_STORED = """
SELECT i.inst_id, t.code, (extract(epoch FROM c.open_time) * 1000)::bigint,
       c.open::text, c.high::text, c.low::text, c.close::text, c.vol::text, c.vol_ccy::text, c.vol_ccy_quote::text,
       c.confirmed, CASE c.source WHEN 'r' THEN 'rest' ELSE 'ws' END,
       extract(epoch FROM pg_xact_commit_timestamp(c.xmin))::float8
FROM candles_candle c
JOIN candles_instrument i ON i.id = c.instrument_id
JOIN candles_timeframe t ON t.id = c.timeframe_id
WHERE t.code = ANY(%s) AND c.open_time >= to_timestamp(%s / 1000.0) AND c.open_time <= to_timestamp(%s / 1000.0)
"""
_DUPLICATES = """
SELECT count(*) FROM (
    SELECT 1 FROM candles_candle GROUP BY instrument_id, timeframe_id, open_time HAVING count(*) > 1
) d
"""


@dataclass(frozen=True)
class Window:
    start_ms: int  # first open time
    end_ms: int  # last close time


def close_ms(bar: str, open_ms: int) -> int:
    return BARS[bar].next_open(open_ms)


def fetch_truth(sim_url: str, channels: Iterable[tuple[str, str]], window: Window) -> dict[Key, Values]:
    """The final version of every candle of every channel that opened and closed within the window."""

    def one(channel: tuple[str, str]) -> list[tuple[Key, Values]]:
        inst_id, bar = channel
        query = urllib.parse.urlencode({"instId": inst_id, "bar": bar, "start": window.start_ms,
                                        "end": window.end_ms})
        with urllib.request.urlopen(f"{sim_url}/sim/truth?{query}", timeout=30) as response:
            rows = json.load(response)["data"]
        return [((inst_id, bar, int(row[0])), tuple(row[1:8])) for row in rows
                if int(row[0]) >= window.start_ms and close_ms(bar, int(row[0])) <= window.end_ms]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return {key: values for part in pool.map(one, sorted(channels)) for key, values in part}


@dataclass
class Verdict:
    expected: int = 0
    present: int = 0
    exact: int = 0
    duplicates: int = 0
    missing_keys: list[Key] = field(default_factory=list)
    wrong: list[tuple[Key, str]] = field(default_factory=list)  # key, what differs
    lags: list[tuple[int, float]] = field(default_factory=list)  # (close_ms, seconds) of live candles
    written: list[tuple[float, Key, str]] = field(default_factory=list)  # (committed at, key, source) of exact rows

    @property
    def missing(self) -> int:
        return len(self.missing_keys)

    @property
    def healed(self) -> bool:
        return self.exact == self.expected and self.duplicates == 0

    def worst_lag_s(self) -> float:
        return max((lag for _, lag in self.lags), default=float("nan"))

    def calm_lag_s(self, faults: list[AppliedFault]) -> tuple[float, int]:
        """Worst lag of candles closing away from every fault, and how many such candles there were."""
        spans = [((f.started - BEFORE_MARGIN_S) * 1000, (f.ended + RECOVERY_MARGIN_S) * 1000) for f in faults]
        calm = [lag for closed, lag in self.lags if not any(a <= closed <= b for a, b in spans)]
        return max(calm, default=float("nan")), len(calm)

    def latest_writes(self, count: int) -> list[tuple[float, Key, str]]:
        """The exact rows written last: after a run, the repairs that took longest."""
        return sorted(self.written, reverse=True)[:count]

    def worst_time_to_exact_s(self) -> float:
        """The longest a candle took from its close to its exact row, whoever wrote it (REST repairs too)."""
        return max((at - close_ms(key[1], key[2]) / 1000 for at, key, _ in self.written), default=float("nan"))

    def lag_percentile(self, fraction: float) -> float:
        lags = sorted(lag for _, lag in self.lags)
        return lags[min(len(lags) - 1, int(len(lags) * fraction))] if lags else float("nan")


def judge(db_url: str, truth: dict[Key, Values], window: Window, bars: Iterable[str]) -> Verdict:
    """Compare the stored candles of the window with the ground truth."""
    with psycopg.connect(db_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(_STORED, [list(bars), window.start_ms, window.end_ms]).fetchall()
        duplicates = conn.execute(_DUPLICATES).fetchone()[0]
    stored = {(inst_id, bar, open_ms): rest for inst_id, bar, open_ms, *rest in rows}
    verdict = Verdict(expected=len(truth), duplicates=duplicates)
    for key, want in truth.items():
        row = stored.get(key)
        if row is None:
            verdict.missing_keys.append(key)
            continue
        verdict.present += 1
        *have, confirmed, source, committed_at = row
        have = tuple(have)
        if have != want or not confirmed:
            verdict.wrong.append((key, _difference(have, want, confirmed, source)))
            continue
        verdict.exact += 1
        verdict.written.append((committed_at, key, source))
        if source == "ws":
            closed = close_ms(key[1], key[2])
            verdict.lags.append((closed, committed_at - closed / 1000))
    verdict.missing_keys.sort()
    verdict.wrong.sort()
    return verdict


def _difference(have: Values, want: Values, confirmed: bool, source: str) -> str:
    names = ("open", "high", "low", "close", "vol", "volCcy", "volCcyQuote")
    parts = [f"{name} {h!r} != {w!r}" for name, h, w in zip(names, have, want, strict=True) if h != w]
    if not confirmed:
        parts.append("not confirmed")
    return f"{', '.join(parts)} (source {source})"


def heal(db_url: str, truth: dict[Key, Values], window: Window, bars: Iterable[str], *, since: float,
         timeout_s: float, poll_s: float = 2.0) -> tuple[Verdict, float]:
    """Judge until every expected candle is present and exact, or `timeout_s` after `since` (epoch seconds).

    Returns the last verdict and the seconds from `since` to the moment the window became whole: the commit of
    the last row it needed (PostgreSQL's commit timestamps), 0 when that was before `since`; infinity when it
    never did. Not the time of the check that saw it: the first check may come long after (the run counts a
    collector kill's REST requests to the end of its slot, and fetches the ground truth, before it judges).
    """
    bars = list(bars)
    while True:
        try:
            verdict = judge(db_url, truth, window, bars)
        except psycopg.OperationalError:
            verdict = None  # PostgreSQL still restarting: not healed yet
        if verdict is not None and verdict.healed:
            last_write = max((at for at, _, _ in verdict.written), default=since)
            return verdict, max(0.0, last_write - since)
        if time.time() - since > timeout_s:
            return verdict or judge(db_url, truth, window, bars), float("inf")
        time.sleep(poll_s)
