"""Fetch the history of one series from OKX REST, with progress, resumable after Ctrl-C.

    manage.py backfill BTC-USDT 1m --from 2024-01-01 [--to 2024-02-01T12:00:00Z] [--quiet]
    manage.py backfill BTC-USDT-SWAP 1m --price mark --from 2024-01-01   (mark-price candles; index: BTC-USD)

The work is recorded before anything is fetched: `gaps_detect` stores the missing runs of the range as
Gap rows (units of one REST page each), then `gap_fill` fills them one by one through the
REST budget every worker shares in Redis, writing through `candles_upsert`. A mark-price or index series
(`--price`) is fetched from its own endpoints, on their own budgets. An interrupted run leaves
whole units written and the others open, so the same command run again detects nothing new where
candles are stored and fills what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection
from django.utils import timezone
from redis.exceptions import RedisError

from candles.bars import datetime_to_ms, ms_to_datetime
from candles.gaps import gap_release
from candles.models import Candle, Gap, GapState, Instrument, PriceKind, Subscription, Timeframe
from candles.series import open_containing
from collectors.repair.detect import DETECT_SETTLE, gaps_detect
from collectors.repair.fill import GapFillResult, gap_fill
from collectors.repair.reach import not_served_reason, rest_serves
from collectors.shared.connections import redis_client
from okxproject.cli import (
    TIME_HELP,
    Progress,
    add_price_argument,
    add_series_arguments,
    is_tty,
    iso,
    moment_option,
    raw_stream,
    redacted_url,
    series_lookup,
)

# Exit status of a run stopped by Ctrl-C, as shells report a process ended by SIGINT.
INTERRUPTED = 130
PAUSED_NOTE = "created by manage.py backfill: history only, not collected live until resumed"
# Loggers that narrate every request and unit: the progress line says it better at verbosity 1.
_CHATTY_LOGGERS = ("httpx", "collectors.repair", "collectors.okx")


class Command(BaseCommand):
    help = (
        "Fetch the candles of one instrument and bar from OKX REST (settings.OKX_REST_URL) into the database, "
        "within the REST rate budget shared by every worker. Shows candles done, rate and ETA. Ctrl-C stops "
        "after the current unit of work; running the same command again continues where it stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_series_arguments(parser)
        parser.add_argument("--from", dest="start", required=True, metavar="TIME",
                            help=f"first open time: {TIME_HELP}")
        parser.add_argument("--to", dest="end", metavar="TIME",
                            help=f"last open time (default: now; never later than the last closed candle): {TIME_HELP}")
        add_price_argument(parser, note="for an index, SYMBOL is the index id")
        parser.add_argument("--quiet", action="store_true", help="no progress display (the final report stays)")

    def handle(self, *args, symbol: str, timeframe: str, start: str, end: str | None, quiet: bool,
               verbosity: int, price: str = PriceKind.TRADE, **options) -> None:
        instrument, bar = series_lookup(symbol, timeframe, price=price)
        if not rest_serves(bar, price):
            raise CommandError(f"{not_served_reason(bar, price)}: there is nothing to backfill them from")
        now = timezone.now()
        first = moment_option("--from", start)
        last = moment_option("--to", end) if end is not None else now
        if first > now:
            raise CommandError(f"--from {iso(first)} is in the future (now: {iso(now)})")
        if first > last:
            raise CommandError(f"--from {iso(first)} is after --to {iso(last)}")
        _check_redis()

        plan = Plan.of(instrument, bar, first, min(last, now), now)
        if plan.expected == 0:
            self.stdout.write(f"no {bar.code} candle of {_series_name(instrument)} opens between {iso(first)} and "
                              f"{iso(last)} and has closed; nothing to do")
            return
        self.stdout.write(f"{_series_name(instrument)} {bar.code} from {iso(ms_to_datetime(plan.first_ms))} "
                          f"to {iso(ms_to_datetime(plan.last_ms))}: {plan.expected:,} candles")

        resume = shlex.join(["manage.py", "backfill", symbol, timeframe, "--from", start,
                             *(["--to", end] if end is not None else []),
                             *(["--price", price] if price != PriceKind.TRADE else [])])
        with _logger_levels(_CHATTY_LOGGERS, _log_level(verbosity)):
            run = self._run(plan, quiet=quiet)
        self._report(plan, run)
        if run.interrupted:
            raise CommandError(f"interrupted with {run.pending:,} candles not fetched yet; the work is recorded. "
                               f"Run the same command again to continue:\n  {resume}", returncode=INTERRUPTED)
        if run.failure is not None:
            raise CommandError(f"stopped: {run.failure}. What was fetched is stored; run the same command again "
                               f"to continue:\n  {resume}")
        if run.still_missing:  # after a complete pass: REST lacked them, or another worker holds them
            raise CommandError(f"{run.still_missing:,} candles are still missing (REST had no data for them yet, "
                               f"or another worker is filling them); their gaps stay open. Run the same command "
                               f"again later to retry:\n  {resume}")

    def _run(self, plan: Plan, *, quiet: bool) -> Run:
        run = Run(started=time.monotonic())
        subscription, created = _subscription_for(plan.instrument, plan.timeframe)
        if created:
            self.stdout.write(f"no subscription of {_series_name(plan.instrument)} {plan.timeframe.code}: the work is "
                              f"recorded on a new paused one (resume it to collect live)")
        run.present_before = plan.present()
        # Recorded before fetching: from here on, an interruption loses no knowledge of what is missing.
        try:
            gaps_detect(subscription_id=subscription.pk, start=ms_to_datetime(plan.first_ms),
                        end=ms_to_datetime(plan.last_ms), now=plan.now)
        except KeyboardInterrupt:  # detection is one transaction: nothing of it was kept
            raise CommandError("interrupted while finding what is missing; nothing was fetched",
                               returncode=INTERRUPTED) from None
        work = list(subscription.gaps.filter(
            state__in=[GapState.OPEN, GapState.FILLING],
            start__lte=ms_to_datetime(plan.last_ms), end__gte=ms_to_datetime(plan.first_ms),
        ).order_by("start"))
        run.pending = sum(gap.missing for gap in work)
        stderr = raw_stream(self.stderr)
        progress = Progress(total=run.pending, unit="candles", stream=stderr, quiet=quiet or not work,
                            label=f"{_series_name(plan.instrument)} {plan.timeframe.code}")
        with _StopRequests(_notice_fd(stderr), tty=is_tty(stderr)) as stop:
            for gap in work:
                if stop.requested:
                    run.interrupted = True
                    break
                try:
                    run.add(gap, gap_fill(gap_id=gap.pk))
                    progress.advance(gap.missing)
                except KeyboardInterrupt:  # a second Ctrl-C: stop now, and give the unit back at once
                    _release(gap)
                    run.interrupted = True
                    break
                except Exception as exc:  # gap_fill has put the gap back to open
                    run.failure = str(exc) or type(exc).__name__
                    break
        progress.finish()
        run.present_after = plan.present()
        run.unfillable = plan.unfillable(subscription)
        run.elapsed = time.monotonic() - run.started
        run.still_missing = max(0, plan.fetchable - run.present_after - sum(run.unfillable.values()))
        return run

    def _report(self, plan: Plan, run: Run) -> None:
        rows = [("already present", run.present_before, ""), ("fetched", run.fetched, ""),
                ("written", run.written, "")]
        for reason, count in sorted(plan.outside.items()) + sorted(run.unfillable.items()):
            rows.append(("unfillable", count, reason))
        if not (plan.outside or run.unfillable):
            rows.append(("unfillable", 0, ""))
        if run.elsewhere:
            rows.append(("left to others", run.elsewhere, "another worker is filling these"))
        rows.append(("still missing", run.still_missing, ""))
        width = max(len(f"{count:,}") for _, count, _ in rows)
        for name, count, note in rows:
            self.stdout.write(f"  {name:<15} {count:>{width},}" + (f"  {note}" if note else ""))
        per_s = run.fetched / run.elapsed if run.elapsed > 0 else 0.0
        rate = f" ({per_s:,.0f} candles fetched/s)" if per_s >= 1 else ""
        self.stdout.write(f"  took {run.elapsed:.1f}s{rate}")


# --- the range and its accounting -----------------------------------------------------------------



@dataclass
class Plan:
    """The open times a run covers: closed candles from --from to --to, the instrument's lifetime marked."""

    instrument: Instrument
    timeframe: Timeframe
    now: datetime
    first_ms: int  # first open time asked for
    last_ms: int  # last open time asked for that had closed (DETECT_SETTLE before now)
    life_first_ms: int  # the part to fetch: between listing (or the retention horizon) and expiry or delisting
    life_last_ms: int
    outside: dict[str, int] = field(default_factory=dict)  # reason -> candles outside that lifetime

    @classmethod
    def of(cls, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime, now: datetime) -> Plan:
        # The same bounds gaps_detect applies, so that this accounting and the recorded gaps agree.
        spec = timeframe.spec
        first_ms = spec.ceil(datetime_to_ms(start))
        settled = spec.floor(datetime_to_ms(now - DETECT_SETTLE))
        last_ms = min(spec.floor(datetime_to_ms(end)), spec.floor(settled - 1))
        life_first, life_last = first_ms, last_ms
        outside: dict[str, int] = {}
        if instrument.listed_at is not None:
            listing = open_containing(spec, instrument.listed_at)
            if listing > first_ms:
                life_first = listing
                before = spec.count(first_ms, min(last_ms, spec.floor(listing - 1)))
                listed = instrument.listed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
                if before:
                    outside[f"before {instrument.inst_id} was listed ({listed}); OKX has no candles there"] = before
        horizon = timeframe.horizon(now)
        if horizon is not None:
            inside = spec.ceil(datetime_to_ms(horizon))
            if inside > life_first:
                behind = spec.count(life_first, min(last_ms, spec.previous(inside)))
                life_first = inside
                if behind:
                    outside[f"behind the {timeframe.code} retention horizon ({iso(horizon)}); not kept"] = behind
        ends = [(m, what) for m, what in ((instrument.expires_at, "expired"), (instrument.delisted_at, "was delisted"))
                if m is not None]
        if ends:
            moment, what = min(ends, key=lambda pair: pair[0])
            end_open = spec.floor(datetime_to_ms(moment))
            if end_open < last_ms:
                life_last = end_open
                after = spec.count(max(first_ms, spec.following(end_open)), last_ms)
                if after:
                    outside[f"after {instrument.inst_id} {what} ({iso(moment)}); OKX has no candles there"] = after
        return cls(instrument, timeframe, now, first_ms, last_ms, life_first, life_last, outside)

    @property
    def expected(self) -> int:
        return self.timeframe.spec.count(self.first_ms, self.last_ms)

    @property
    def fetchable(self) -> int:
        return self.timeframe.spec.count(self.life_first_ms, self.life_last_ms)

    def present(self) -> int:
        """Confirmed candles stored in the part to fetch (an unconfirmed row of a closed candle still needs REST;
        rows behind the retention horizon waiting for their partition's drop do not count)."""
        return Candle.objects.filter(
            instrument_id=self.instrument.pk, timeframe_id=self.timeframe.pk, confirmed=True,
            open_time__gte=ms_to_datetime(self.life_first_ms), open_time__lte=ms_to_datetime(self.life_last_ms),
        ).count()

    def unfillable(self, subscription: Subscription) -> dict[str, int]:
        """Candles of the range in gaps recorded unfillable, by reason (counted inside the range only)."""
        spec = self.timeframe.spec
        by_reason: Counter[str] = Counter()
        for start, end, reason in subscription.gaps.filter(
            state=GapState.UNFILLABLE,
            start__lte=ms_to_datetime(self.last_ms), end__gte=ms_to_datetime(self.first_ms),
        ).values_list("start", "end", "reason"):
            count = spec.count(max(self.first_ms, datetime_to_ms(start)), min(self.last_ms, datetime_to_ms(end)))
            by_reason[reason or "no reason recorded"] += count
        return dict(by_reason)


@dataclass
class Run:
    started: float
    present_before: int = 0
    present_after: int = 0
    pending: int = 0  # candles in the units still to fill
    fetched: int = 0
    written: int = 0
    elsewhere: int = 0  # candles of units another worker held
    unfillable: dict[str, int] = field(default_factory=dict)
    still_missing: int = 0
    interrupted: bool = False
    failure: str | None = None
    elapsed: float = 0.0

    def add(self, gap: Gap, result: GapFillResult) -> None:
        self.pending -= gap.missing
        self.fetched += result.fetched
        self.written += result.written
        if result.skipped:
            self.elsewhere += gap.missing


# --- pieces ---------------------------------------------------------------------------------------


def _check_redis() -> None:
    try:
        redis_client().ping()
    except RedisError as exc:
        raise CommandError(f"Redis at {redacted_url(settings.REDIS_URL)} is unreachable ({exc}); the REST rate "
                           f"budget every worker shares lives there. Start Redis or set REDIS_URL.") from None


def _series_name(instrument: Instrument) -> str:
    """The instrument id, and its series' kind when that is not trades (`BTC-USDT-SWAP mark`)."""
    return instrument.inst_id if instrument.price == PriceKind.TRADE else f"{instrument.inst_id} {instrument.price}"


def _subscription_for(instrument: Instrument, timeframe: Timeframe) -> tuple[Subscription, bool]:
    """The series' subscription (active or paused), or a new paused one: gaps belong to a subscription."""
    return Subscription.objects.get_or_create(
        instrument=instrument, timeframe=timeframe, defaults={"is_active": False, "status_message": PAUSED_NOTE},
    )


def _release(gap: Gap) -> None:
    """Give back a unit this run claimed (state filling, its next attempt) so the next run can take it now
    instead of after FILLING_STALE_AFTER. Harmless when the unit was finished or is another worker's."""
    reason = "interrupted (manage.py backfill)"
    try:
        gap_release(gap.pk, gap.attempts + 1, reason)
    except DatabaseError:
        # The interrupt may have cut a query short and left the connection unusable; a new one will do.
        connection.close()
        gap_release(gap.pk, gap.attempts + 1, reason)


class _StopRequests:
    """While filling: the first SIGINT (Ctrl-C) or SIGTERM asks to stop after the current unit, a second one
    stops at once (KeyboardInterrupt). Signals reach only the main thread; elsewhere this does nothing."""

    NOTICE = b"stopping after the current unit of work; Ctrl-C again to stop at once\n"

    def __init__(self, notice_fd: int | None, *, tty: bool) -> None:
        self.requested = False
        self._fd = notice_fd
        # On a terminal the progress line is open: the notice starts a line of its own.
        self._notice = b"\n" + self.NOTICE if tty else self.NOTICE
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._fd is not None:
            # os.write, not the stream: a handler that interrupts a buffered write must not write to it again.
            with contextlib.suppress(OSError):
                os.write(self._fd, self._notice)


def _notice_fd(stream: object) -> int | None:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.StringIO and friends have no descriptor
        return None


def _log_level(verbosity: int) -> int:
    return {0: logging.ERROR, 1: logging.WARNING}.get(verbosity, logging.INFO)


@contextlib.contextmanager
def _logger_levels(names: tuple[str, ...], level: int) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous, strict=True):
            logger.setLevel(old)

