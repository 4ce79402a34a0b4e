"""The status figures PostgreSQL gives in one round trip: what they count, and how the batch behaves."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection

from candles.models import Subscription, SubscriptionStatus, Timeframe
from collectors.api.status_queries import GAPS_COUNTED_EXACTLY, Statement, gaps_of, statements_run
from collectors.api.system import subscription_summary

TIMEOUT = Statement("SELECT current_setting('statement_timeout')", (), lambda rows: rows[0][0])
FAILING = Statement("SELECT 1 / 0", (), lambda rows: rows)


def test_the_counts_and_examples_cover_the_active_subscriptions_only(db, instrument):
    bars = {tf.code: tf for tf in Timeframe.objects.all()}
    layout = {  # symbol: [(bar, status, active)]
        "ETH-USDT": [("1m", "stale", True), ("1H", "error", True), ("1D", "stale", False)],
        "BTC-USDT": [("1m", "live", True), ("5m", "error", True), ("1H", "pending", True), ("1D", "live", False)],
    }
    for symbol, rows in layout.items():
        inst = instrument(symbol)
        for bar, status, active in rows:
            Subscription.objects.create(instrument=inst, timeframe=bars[bar], status=status, is_active=active)

    summary = subscription_summary()

    assert summary.by_status == {"live": 1, "stale": 1, "error": 2, "pending": 1}
    assert (summary.active, summary.paused) == (5, 2)
    # By symbol, then bar order, whatever the status; the paused stale one is not among them.
    assert summary.troubled == ["BTC-USDT 5m error", "ETH-USDT 1m stale", "ETH-USDT 1H error"]


def test_no_subscriptions_count_as_none(db):
    summary = subscription_summary()

    assert (summary.by_status, summary.paused, summary.troubled) == ({}, 0, [])
    assert SubscriptionStatus.LIVE not in summary.by_status


def test_a_large_gap_table_estimates_the_filled_gaps_from_the_others():
    unfinished = [("open", 1, 3, 30), ("filling", 2, 2, 5)]

    gaps = gaps_of(unfinished, (GAPS_COUNTED_EXACTLY * 2, 95, 400, None))

    assert (gaps.open, gaps.filling, gaps.unfillable, gaps.expired, gaps.missing_candles) == (3, 2, 95, 400, 35)
    assert gaps.filled == GAPS_COUNTED_EXACTLY * 2 - 3 - 2 - 95 - 400  # expired gaps are not filled ones
    assert gaps.unfinished_by_priority["confirm"] == {"gaps": 3, "missing_candles": 30}
    assert gaps_of([], (10, 0, 0, 7)).filled == 7  # counted exactly while the table is small


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_outside_a_transaction_the_timeout_holds_for_the_batch_only_and_a_failure_leaves_no_trace():
    assert statements_run(TIMEOUT) == ["2s"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] != "2s"

    with pytest.raises(DatabaseError, match="division by zero"):
        statements_run(TIMEOUT, FAILING)

    assert not connection.in_atomic_block
    assert statements_run(TIMEOUT, TIMEOUT) == ["2s", "2s"]


def test_inside_a_transaction_a_failure_leaves_the_transaction_usable(db):
    with pytest.raises(DatabaseError, match="division by zero"):
        statements_run(FAILING)

    assert Subscription.objects.count() == 0
