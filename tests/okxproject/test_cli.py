"""The management commands' shared plumbing: time arguments, series lookup, the progress display."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError

from okxproject.cli import Progress, duration, parse_moment, redacted_url, series_lookup


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-16", datetime(2024, 1, 16, tzinfo=UTC)),
    ("2024-01-16T19:00", datetime(2024, 1, 16, 19, tzinfo=UTC)),
    ("2024-01-16T19:00:00Z", datetime(2024, 1, 16, 19, tzinfo=UTC)),
    ("2024-01-17T03:00:00+08:00", datetime(2024, 1, 16, 19, tzinfo=UTC)),
    ("1705431600000", datetime(2024, 1, 16, 19, tzinfo=UTC)),
    (" 1705431600123 ", datetime(2024, 1, 16, 19, 0, 0, 123_000, tzinfo=UTC)),
])
def test_moments_are_iso_8601_in_utc_unless_zoned_or_epoch_milliseconds(text, expected):
    moment = parse_moment(text)
    assert moment == expected
    assert moment.tzinfo is UTC


@pytest.mark.parametrize(("text", "message"), [
    ("1705431600", "too small for epoch milliseconds (before 1973): if it is epoch seconds, give 1705431600000"),
    ("20240116", "a date needs dashes"),
    ("16/01/2024", "'16/01/2024' is neither an ISO 8601 date or time"),
    ("", "'' is neither"),
    ("9" * 30, "is beyond any date"),
])
def test_bad_moments_say_what_is_expected(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_moment(text)


def test_durations_read_like_a_clock():
    assert [duration(s) for s in (0.04, 9.96, 12.4, 65, 3_600 * 2 + 7 * 60, 86_400 * 3 + 3_600 * 4)] == [
        "0.0s", "10s", "12s", "1m05s", "2h07m", "3d04h",
    ]


def test_passwords_are_left_out_of_urls_in_messages():
    assert redacted_url("redis://:secret@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert redacted_url("redis://app:secret@redis/1") == "redis://app:***@redis/1"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_progress_off_a_terminal_writes_a_plain_line_every_interval():
    clock, stream = Clock(), StringIO()
    progress = Progress(total=1000, unit="candles", stream=stream, label="BTC-USDT 1m", tty=False,
                        interval_s=10, clock=clock)

    clock.now += 4
    progress.advance(200)  # too soon for a line
    clock.now += 6
    progress.advance(300)
    clock.now += 5
    progress.advance(500)
    progress.finish()
    progress.finish()  # once only

    assert stream.getvalue().splitlines() == [
        "BTC-USDT 1m: 500 of 1,000 candles (50%), 50 candles/s, ETA 10s",
        "BTC-USDT 1m: 1,000 of 1,000 candles (100%), 67 candles/s, took 15s",
    ]


def test_progress_on_a_terminal_redraws_one_line_in_place():
    clock, stream = Clock(), StringIO()
    progress = Progress(total=30_000, unit="rows", stream=stream, tty=True, clock=clock)

    clock.now += 1
    progress.advance(12_000)
    clock.now += 0.05
    progress.advance(10)  # within the redraw interval: not drawn
    clock.now += 1
    progress.advance(17_990)
    progress.finish()

    frames = stream.getvalue().split("\r")
    assert frames == [
        "",
        "12,000 of 30,000 rows (40%), 12,000 rows/s, ETA 1.5s",
        "30,000 of 30,000 rows (100%), 14,634 rows/s" + " " * 9,  # covers the longer line before
        "30,000 of 30,000 rows (100%), 14,634 rows/s, took 2.0s\n",
    ]


def test_quiet_progress_shows_nothing_but_still_counts():
    clock, stream = Clock(), StringIO()
    progress = Progress(total=10, unit="rows", stream=stream, quiet=True, tty=True, clock=clock)
    clock.now += 100
    progress.advance(10)
    progress.finish()
    assert stream.getvalue() == ""
    assert progress.done == 10


def test_series_lookup_finds_exact_names_only(instrument, tf):
    btc = instrument("BTC-USDT")
    assert series_lookup("BTC-USDT", "1M") == (btc, tf("1M"))
    assert series_lookup("BTC-USDT", "1m") == (btc, tf("1m"))
    with pytest.raises(CommandError, match="did you mean BTC-USDT"):
        series_lookup("Btc-Usdt", "1m")
    tf("3m").__class__.objects.filter(code="3m").update(is_active=False)
    with pytest.raises(CommandError, match="timeframe '3m' is switched off"):
        series_lookup("BTC-USDT", "3m")
    assert series_lookup("BTC-USDT", "3m", active_bar=False)[1].code == "3m"
