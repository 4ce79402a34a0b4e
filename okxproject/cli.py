"""Plumbing shared by the management commands: time arguments, series lookup, and the progress display.

The progress display is one line rewritten in place (`\\r`) on a terminal, and a plain line every few
seconds anywhere else, so that a log collected from a pipe or a file stays readable.
"""

from __future__ import annotations

import argparse
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from django.core.management.base import CommandError

from candles.bars import ms_to_datetime
from candles.models import Instrument, PriceKind, Timeframe

# Epoch milliseconds below this (1973-03-03) are almost surely epoch seconds typed by mistake.
_MIN_PLAUSIBLE_MS = 100_000_000_000
_DIGITS = re.compile(r"\d+")
TIME_HELP = "ISO 8601 date or time, UTC unless it names a zone (2024-01-16, 2024-01-16T19:00:00Z), or epoch ms"


class TextStream(Protocol):
    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


# --- arguments -----------------------------------------------------------------------------------


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time (naive means UTC) or epoch milliseconds, as an aware UTC datetime.

    Raises ValueError with a message fit for the user.
    """
    text = text.strip()
    if _DIGITS.fullmatch(text):
        ms = int(text)
        if ms < _MIN_PLAUSIBLE_MS:
            raise ValueError(f"{text} is too small for epoch milliseconds (before 1973): if it is epoch seconds, "
                             f"give {text}000; a date needs dashes (2024-01-16)")
        try:
            return ms_to_datetime(ms)
        except OverflowError:
            raise ValueError(f"{text} is beyond any date") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 date or time (2024-01-16, 2024-01-16T19:00:00Z) "
                         f"nor epoch milliseconds") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def moment_option(option: str, text: str) -> datetime:
    """`parse_moment` with the option's name in the CommandError."""
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None


def add_series_arguments(parser: argparse.ArgumentParser) -> None:
    """The two positionals that name a series, `SYMBOL TIMEFRAME`, as every command spells them; `series_lookup`
    turns them into rows."""
    parser.add_argument("symbol", metavar="SYMBOL", help="instrument id as OKX spells it, e.g. BTC-USDT")
    parser.add_argument("timeframe", metavar="TIMEFRAME", help="OKX bar, case-sensitive: 1m is a minute, 1M a month")


def add_price_argument(parser: argparse.ArgumentParser, *, note: str = "") -> None:
    """`--price`, which of an instrument's series a command means (docs/price-kinds.md), with the command's own
    `note` after the common help."""
    help_text = ("which series: trade candles (default), the mark price of a SWAP, FUTURES or OPTION instrument, or "
                 "an index such as BTC-USD")
    parser.add_argument("--price", choices=PriceKind.values, default=PriceKind.TRADE,
                        help=f"{help_text}; {note}" if note else help_text)


def series_lookup(symbol: str, bar: str, *, active_bar: bool = True,
                  price: str = PriceKind.TRADE) -> tuple[Instrument, Timeframe]:
    """The instrument row and timeframe named on the command line, or a CommandError that says what to do.

    Both names are exact: instrument ids as OKX spells them, bars case-sensitive (`1m` is not `1M`). `price` picks
    which of the id's series (trade, mark or index; docs/price-kinds.md).
    """
    instrument = Instrument.objects.filter(inst_id=symbol, price=price).first()
    if instrument is None and price != PriceKind.TRADE:
        kinds = sorted(Instrument.objects.filter(inst_id=symbol).values_list("price", flat=True))
        if kinds:
            raise CommandError(f"{symbol!r} has no {price} series (it has: {', '.join(kinds)}); mark prices are "
                               f"of SWAP, FUTURES and OPTION instruments, index series of index ids such as BTC-USD")
    if instrument is None:
        similar = list(Instrument.objects.filter(inst_id__iexact=symbol).values_list("inst_id", flat=True)[:3])
        hint = f"; did you mean {' or '.join(similar)}?" if similar else "."
        if not Instrument.objects.exists():
            hint += " No instruments are stored yet: run `manage.py sync_instruments` first."
        else:
            hint += " If OKX listed it recently, run `manage.py sync_instruments`."
        raise CommandError(f"unknown instrument {symbol!r}{hint}")
    timeframe = Timeframe.objects.filter(code=bar).first()
    if timeframe is None or (active_bar and not timeframe.is_active):
        codes = Timeframe.objects.filter(is_active=True).values_list("code", flat=True)
        why = "is switched off" if timeframe is not None else "is not an OKX bar"
        raise CommandError(f"timeframe {bar!r} {why}; bars are case-sensitive (1m is a minute, 1M a month). "
                           f"Active bars: {', '.join(codes)}")
    return instrument, timeframe


def redacted_url(url: str) -> str:
    """The URL without its password, fit for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def raw_stream(stream: Any) -> TextStream:
    """The stream under Django's OutputWrapper, which would end every write with a newline and colour
    stderr red: a progress line must write `\\r` without a newline."""
    return getattr(stream, "_out", stream)


def is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


# --- numbers for people ------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """`0.4s`, `12s`, `3m05s`, `2h07m`, `3d04h`."""
    if seconds < 9.95:  # what rounds to 10.0 is shown as 10s
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def iso(moment: datetime) -> str:
    """UTC, to the second, with a Z: `2024-01-16T19:00:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- progress ----------------------------------------------------------------------------------------


class Progress:
    """Work done against a known total, with rate and ETA, written to `stream` (stderr in the commands).

    On a terminal the line is redrawn in place at most every `redraw_s`; elsewhere a complete line is
    written every `interval_s`. `finish()` writes the final state once, ending the line. `quiet` shows
    nothing. The clock is injectable so tests can drive time.
    """

    def __init__(
        self,
        *,
        total: int,
        unit: str,
        stream: TextStream,
        label: str = "",
        quiet: bool = False,
        tty: bool | None = None,
        interval_s: float = 10.0,
        redraw_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(0, total)
        self.unit = unit
        self.label = label
        self.done = 0
        self._stream = stream
        self._quiet = quiet
        self._tty = is_tty(stream) if tty is None else tty
        self._every = redraw_s if self._tty else interval_s
        self._clock = clock
        self._started = clock()
        self._shown_at = self._started
        self._width = 0
        self._finished = False

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    @property
    def rate(self) -> float:
        """Units per second since the start (0 before any time has passed)."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock()
        if now - self._shown_at >= self._every:
            self._shown_at = now
            self._show()

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._show()
        if self._tty and not self._quiet:
            self._stream.write("\n")
            self._stream.flush()

    def line(self) -> str:
        """`BTC-USDT 1m: 3,000 of 7,200 candles (41%), 1,850 candles/s, ETA 2.3s`."""
        shown = min(self.done, self.total) if self.total else self.done
        percent = f" ({shown * 100 // self.total}%)" if self.total else ""
        rate = self.rate
        parts = [f"{shown:,} of {self.total:,} {self.unit}{percent}", f"{rate:,.0f} {self.unit}/s"]
        if self._finished:
            parts.append(f"took {duration(self.elapsed)}")
        elif rate > 0 and self.total > shown:
            parts.append(f"ETA {duration((self.total - shown) / rate)}")
        prefix = f"{self.label}: " if self.label else ""
        return prefix + ", ".join(parts)

    def _show(self) -> None:
        if self._quiet:
            return
        text = self.line()
        if self._tty:
            # Pad over the previous, possibly longer, line instead of relying on terminal escapes.
            padded = text.ljust(self._width)
            self._width = len(text)
            self._stream.write("\r" + padded)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


def positive_seconds(text: str) -> float:
    """argparse type of an interval option (`--watch 2`, `--every 10`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the interval must be a positive number of seconds")
    return value


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM (a service manager's stop, `make run` stopping its processes) ends a command's loop as
    Ctrl-C does. Signals reach only the main thread, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
