"""Re-verify stored candles against OKX REST, and rewrite the ones that differ.

`candles_verify` walks a range of one series (an instrument row of one price kind — trade, mark or index — and a
bar) in units of VERIFY_UNIT_CANDLES: it fetches the
unit's closed candles through the REST client (drawing on the REST budget every worker shares in Redis),
compares them digit for digit with the stored rows, and writes the missing and differing ones through
`candles_upsert` as confirmed REST rows. The database's version rule decides, as for every other write:
a REST row replaces the stored one when it is newer, which a fresh fetch is, unless the stored version is
newer still. Candles stored that REST does not list are counted, never deleted.

The work is bounded: with `budget_s`, the walk stops after the unit that crossed it and says where to go on
(`next_start_ms`), so a Celery task can continue in a new message instead of holding a worker for hours.
Running a unit twice is harmless: the second run finds it matching.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from candles.bars import BarSpec, datetime_to_ms, ms_to_datetime
from candles.models import Candle, Instrument, PriceKind, Timeframe
from candles.series import open_containing
from candles.storage import CandleRow, candles_upsert
from collectors.live.buffer import receipt_version
from collectors.okx.candle_rows import CandleUpdate
from collectors.okx.protocol import TRADE_ONLY_BARS
from collectors.okx.rest_endpoints import WEBSOCKET_ONLY_BARS
from collectors.repair.reach import REST_RETENTION
from collectors.shared.connections import pipeline_keys
from collectors.shared.rest import okx_rest
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

# Candles per unit: 5 pages of 300, about half a second of the history-candles budget when it is free.
VERIFY_UNIT_CANDLES = 1_500
# Open times of differences kept in a report, for the operator to look at.
SAMPLE_DIFFERENCES = 10
# Verification reports kept in Redis for the admin dashboard, newest first.
REPORTS_KEPT = 50
_NUMBER_FIELDS = ("open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote")


class NotVerifiable(ValueError):
    """A range REST cannot say anything about (a WebSocket-only bar, or nothing closed in it yet)."""


@dataclass(slots=True)
class VerifyReport:
    inst_id: str
    bar: str
    start_ms: int  # first open time of the range verified by this run
    end_ms: int  # last open time verified by this run (inclusive)
    checked: int = 0  # closed candles REST returned in the range
    matching: int = 0  # stored, confirmed and equal digit for digit
    missing: int = 0  # REST has them, the database does not
    different: int = 0  # stored, but other numbers or not confirmed
    extra: int = 0  # stored open times REST does not list (kept: never deleted here)
    written: int = 0  # rows the upsert inserted or replaced
    kept: int = 0  # differing rows the version rule kept as stored (a newer version is there)
    rejected: int = 0  # REST rows the database refused as invalid
    samples: list[str] = field(default_factory=list)  # a few differences, for the operator
    next_start_ms: int | None = None  # where to continue when the time budget ran out; None: done
    at: float = field(default_factory=time.time)
    price: str = PriceKind.TRADE  # which of the instrument's series: trade, mark or index

    @property
    def start(self) -> datetime:
        return ms_to_datetime(self.start_ms)

    @property
    def end(self) -> datetime:
        return ms_to_datetime(self.end_ms)

    @property
    def done(self) -> bool:
        return self.next_start_ms is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        span = f"{ms_to_datetime(self.start_ms).isoformat()} to {ms_to_datetime(self.end_ms).isoformat()}"
        more = "" if self.done else f"; continues from {ms_to_datetime(self.next_start_ms).isoformat()}"
        kind = "" if self.price == PriceKind.TRADE else f" {self.price}"
        return (f"{self.inst_id}{kind} {self.bar} {span}: {self.checked} checked, {self.matching} matching, "
                f"{self.missing} missing, {self.different} different, {self.extra} extra; {self.written} "
                f"written, {self.kept} kept by the version rule, {self.rejected} rejected{more}")


def verifiable_range(
    instrument: Instrument, timeframe: Timeframe, start_ms: int, end_ms: int, now_ms: int
) -> tuple[int, int]:
    """[start, end] narrowed to closed candles REST can serve: from the listing (and within the bar's
    REST retention) to the newest closed candle. Raises NotVerifiable when nothing is left."""
    if timeframe.code in WEBSOCKET_ONLY_BARS or not (timeframe.rest_candles or timeframe.rest_history):
        raise NotVerifiable(f"OKX REST does not serve {timeframe.code} candles")
    if instrument.price != PriceKind.TRADE and timeframe.code in TRADE_ONLY_BARS:
        raise NotVerifiable(f"OKX has no {timeframe.code} {instrument.price} candles (they start at 1m)")
    spec = timeframe.spec
    first = spec.ceil(start_ms)
    if instrument.listed_at is not None:
        first = max(first, open_containing(spec, instrument.listed_at))
    retention = REST_RETENTION.get(timeframe.code)
    if retention is not None:
        first = max(first, spec.ceil(now_ms - int(retention.total_seconds() * 1000)))
    newest_closed = spec.floor(spec.floor(now_ms) - 1)
    last = min(spec.floor(end_ms), newest_closed)
    if first > last:
        raise NotVerifiable(f"no closed {timeframe.code} candle REST serves between "
                            f"{ms_to_datetime(start_ms).isoformat()} and {ms_to_datetime(end_ms).isoformat()}")
    return first, last


def _unit_end(spec: BarSpec, start_ms: int, last_ms: int) -> int:
    return min(last_ms, spec.advance(start_ms, VERIFY_UNIT_CANDLES - 1))


async def _fetch(rest_url: str, keys: Keys, inst_id: str, bar: str, start_ms: int, end_ms: int,
                 stats: dict[str, int], price: str = PriceKind.TRADE) -> list[CandleUpdate]:
    """The range's `price` candles from REST, through that kind's endpoints (and so its own budget); the client's
    request tallies are copied into `stats`, also on failure (the access point adds them to the counters)."""
    async with okx_rest(keys, rest_url=rest_url) as client:
        try:
            return await client.candle_range(inst_id, bar, start_ms, end_ms, price=price)
        finally:
            stats.update(client.stats)


def _same(stored: Sequence[Any], update: CandleUpdate) -> bool:
    """Equal digit for digit (scale included: 43000 and 43000.0 are different texts) and confirmed."""
    *numbers, confirmed = stored
    theirs = (update.open, update.high, update.low, update.close, update.vol, update.vol_ccy, update.vol_ccy_quote)
    return confirmed and all(
        (a is None and b is None) or (a is not None and b is not None and a.as_tuple() == b.as_tuple())
        for a, b in zip(numbers, theirs, strict=True)
    )


def _verify_unit(report: VerifyReport, instrument: Instrument, timeframe: Timeframe, start_ms: int, end_ms: int,
                 rest_url: str, keys: Keys) -> None:
    stats: dict[str, int] = {}
    updates = asyncio.run(_fetch(rest_url, keys, instrument.inst_id, timeframe.code, start_ms, end_ms, stats,
                                 instrument.price))
    closed = {u.open_time_ms: u for u in updates if u.confirmed and start_ms <= u.open_time_ms <= end_ms}
    stored = {
        datetime_to_ms(row[0]): row[1:]
        for row in Candle.objects.filter(
            instrument_id=instrument.pk, timeframe_id=timeframe.pk,
            open_time__gte=ms_to_datetime(start_ms), open_time__lte=ms_to_datetime(end_ms),
        ).values_list("open_time", *_NUMBER_FIELDS, "confirmed")
    }
    version = receipt_version()
    rewrite: list[CandleRow] = []
    for open_ms in sorted(closed):
        update = closed[open_ms]
        mine = stored.get(open_ms)
        if mine is not None and _same(mine, update):
            report.matching += 1
            continue
        if mine is None:
            report.missing += 1
            what = "missing"
        else:
            report.different += 1
            what = "unconfirmed" if not mine[-1] else "different"
        if len(report.samples) < SAMPLE_DIFFERENCES:
            report.samples.append(f"{ms_to_datetime(open_ms).isoformat()} {what}")
        rewrite.append(CandleRow.of(update, source="rest", version=version))
    report.checked += len(closed)
    report.extra += sum(1 for open_ms in stored if open_ms not in closed)
    if rewrite:
        result = candles_upsert(rows=rewrite)
        report.written += result.written
        report.kept += result.unchanged
        report.rejected += len(result.rejected)


def candles_verify(
    *,
    inst_id: str,
    bar: str,
    start: datetime,
    end: datetime,
    rest_url: str | None = None,
    keys: Keys | None = None,
    budget_s: float | None = None,
    now: datetime | None = None,
    price: str = PriceKind.TRADE,
) -> VerifyReport:
    """Compare stored candles of [start, end] with OKX REST, rewrite the differences, and report the counts.

    `price` names the series of `inst_id` (trade, mark or index): its candles are fetched from that kind's
    endpoints and compared with that row's (mark-price and index candles have no volumes on either side).

    The range is narrowed to closed candles REST serves (`verifiable_range`). With `budget_s`, stops after the
    unit that used it up; `report.next_start_ms` says where to go on. Raises NotVerifiable, REST errors
    (nothing of the failing unit is written) and database errors.
    """
    keys = keys or pipeline_keys()
    rest_url = rest_url or settings.OKX_REST_URL
    instrument = Instrument.objects.get(inst_id=inst_id, price=price)
    timeframe = Timeframe.objects.get(code=bar)
    now_ms = datetime_to_ms(now or timezone.now())
    first, last = verifiable_range(instrument, timeframe, datetime_to_ms(start), datetime_to_ms(end), now_ms)
    spec = timeframe.spec
    deadline = None if budget_s is None else time.monotonic() + budget_s
    report = VerifyReport(inst_id, bar, first, first, price=instrument.price)
    unit_start = first
    while unit_start <= last:
        unit_end = _unit_end(spec, unit_start, last)
        _verify_unit(report, instrument, timeframe, unit_start, unit_end, rest_url, keys)
        report.end_ms = unit_end
        unit_start = spec.following(unit_end)
        if unit_start <= last and deadline is not None and time.monotonic() >= deadline:
            report.next_start_ms = unit_start
            break
    logger.info("verified %s", report)
    return report


def _reports_key(keys: Keys) -> str:
    return keys.verify_reports


def verify_report_save(redis: Any, keys: Keys, report: VerifyReport) -> None:
    """Keep the report for the admin dashboard (the newest REPORTS_KEPT)."""
    pipe = redis.pipeline(transaction=True)
    pipe.lpush(_reports_key(keys), orjson.dumps(report.as_dict()))
    pipe.ltrim(_reports_key(keys), 0, REPORTS_KEPT - 1)
    pipe.execute()


def verify_reports(redis: Any, keys: Keys, limit: int = 10) -> list[VerifyReport]:
    """The newest saved reports; entries that do not parse are skipped."""
    reports = []
    for raw in redis.lrange(_reports_key(keys), 0, limit - 1):
        try:
            reports.append(VerifyReport(**orjson.loads(raw)))
        except (orjson.JSONDecodeError, TypeError):
            logger.warning("skipped a garbled verification report: %r", raw[:200])
    return reports
