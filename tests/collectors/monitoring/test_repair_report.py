"""repair_report_read: the repair scheduler's report at Keys.repair_backlog, read as its contract says."""

from __future__ import annotations

import logging

import orjson
import pytest

from collectors.monitoring.repair_report import repair_report_read

REPORT = {
    "updated_at": 1_700_000_000.5,
    "backlog": {"confirm": {"candles": 12, "units": 12}, "outage": {"candles": 3000, "units": 30},
                "history": {"candles": 50000, "units": 500}, "old": {"candles": 0, "units": 0}},
    "drained_per_s": {"confirm": 2.0, "outage": 15.5, "history": 120.0, "old": 0.0},
    "eta_s": None,
    "requests": {"candles": 40, "history": 300, "mark-price-candles": 2, "history-mark-price-candles": 7,
                 "index-candles": 1, "history-index-candles": 4},
    "budget_per_s": {"candles": 20.0, "history": 10.0, "mark-price-candles": 10.0, "history-mark-price-candles": 10.0,
                     "index-candles": 10.0, "history-index-candles": 5.0},
    "queued": {"candles": 3, "history": 112, "mark-price-candles": 2, "history-mark-price-candles": 23,
               "index-candles": 1, "history-index-candles": 4},
    "left": {"candles": 0, "history": 12, "mark-price-candles": 0, "history-mark-price-candles": 3,
             "index-candles": 0, "history-index-candles": 0},
}


def test_a_report_is_read_as_written(redis, keys):
    r = redis
    r.set(keys.repair_backlog, orjson.dumps(REPORT))

    assert repair_report_read(redis=r, keys=keys) == REPORT


def test_missing_priorities_read_as_zero(redis, keys):
    r = redis
    r.set(keys.repair_backlog, orjson.dumps({"updated_at": 1.0, "backlog": {"outage": {"candles": 5, "units": 1}}}))

    report = repair_report_read(redis=r, keys=keys)

    assert report["backlog"]["confirm"] == {"candles": 0, "units": 0}
    assert report["backlog"]["outage"] == {"candles": 5, "units": 1}
    assert report["eta_s"] is None


def test_a_report_naming_the_trade_endpoints_only_reads_the_others_as_zero(redis, keys):
    """A report written before mark-price and index repair: every endpoint still has its row."""
    r = redis
    r.set(keys.repair_backlog, orjson.dumps({"updated_at": 1.0, "requests": {"candles": 4, "history": 9},
                                             "budget_per_s": {"candles": 20.0, "history": 10.0}}))

    report = repair_report_read(redis=r, keys=keys)

    assert report["requests"] == {"candles": 4, "history": 9, "mark-price-candles": 0,
                                  "history-mark-price-candles": 0, "index-candles": 0, "history-index-candles": 0}
    assert report["left"]["history-index-candles"] == 0


def test_no_report_is_none_without_a_warning(redis, keys, caplog):
    r = redis
    with caplog.at_level(logging.WARNING):
        assert repair_report_read(redis=r, keys=keys) is None
    assert not caplog.records


@pytest.mark.parametrize("raw", [
    b"{", b"[]", b'{"updated_at": "now"}', b'{"updated_at": 1, "backlog": []}', b'{"updated_at": 1, "eta_s": true}',
    b'{"updated_at": 1, "drained_per_s": {"old": NaN}}'])
def test_a_garbled_report_is_none_with_a_warning(redis, keys, caplog, raw):
    r = redis
    r.set(keys.repair_backlog, raw)

    with caplog.at_level(logging.WARNING, logger="collectors.monitoring.repair_report"):
        assert repair_report_read(redis=r, keys=keys) is None
    assert "repair report" in caplog.text
