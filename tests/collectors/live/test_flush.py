"""`buffer_flush`: the live buffer lands in PostgreSQL exactly, once, newest version first; failures keep it.

Real PostgreSQL and real Redis. Tests are transactional (the flush commits each chunk for real and only
then drops the batch from Redis), and each uses its own Redis key prefix.
"""

from __future__ import annotations

import logging
import time

import orjson
import pytest
from django.db import DatabaseError

from candles.bars import ms_to_datetime
from candles.models import Candle, Instrument
from candles.storage import CandleRow, candles_upsert
from collectors.live.flush import FlushLockLost, FlushResult, buffer_alarm, buffer_flush
from collectors.okx.candle_rows import CandleUpdate
from collectors.shared.connections import redis_client
from tests.support import (
    MINUTE_MS,
    T0_MS,
    InThread,
    LiveBuffer,
    as_stored,
    candle_update,
    isolated_keys,
    row_locked,
    stored_candles,
    terminate_backend,
    waiting_backend,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def minute(i: int) -> int:
    return T0_MS + i * MINUTE_MS


@pytest.fixture
def redis():
    return redis_client()


@pytest.fixture
def keys(redis):
    with isolated_keys(redis) as keys:
        yield keys


@pytest.fixture
def buffer(redis, keys) -> LiveBuffer:
    return LiveBuffer(redis, keys)


@pytest.fixture
def btc(db) -> Instrument:
    return Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT")


@pytest.fixture
def eth(db) -> Instrument:
    return Instrument.objects.create(inst_id="ETH-USDT-SWAP", inst_type="SWAP")


def flush(buffer: LiveBuffer, **kwargs) -> FlushResult:
    return buffer_flush(redis=buffer.redis, keys=buffer.keys, **kwargs)


def stored() -> dict[tuple[str, str, int], tuple]:
    return stored_candles()


def expected(update: CandleUpdate, version: int) -> tuple:
    return as_stored(update, version)[1]


def key(update: CandleUpdate) -> tuple[str, str, int]:
    return as_stored(update, 0)[0]


def dead_letters(buffer: LiveBuffer) -> list[dict]:
    return [orjson.loads(item) for item in buffer.redis.lrange(buffer.keys.dead_letters, 0, -1)]


class FlushThread(InThread):
    def __init__(self, buffer: LiveBuffer, **kwargs) -> None:
        super().__init__(buffer_flush, redis=buffer.redis, keys=buffer.keys, **kwargs)


def store_through_the_write_path(update: CandleUpdate, version: int) -> None:
    result = candles_upsert(rows=[CandleRow.of(update, source="ws", version=version)])
    assert result.written == 1


# --- landing exactly ------------------------------------------------------------------------------


def test_buffered_candles_land_in_postgresql_exactly(btc, eth, buffer):
    updates = [
        candle_update(minute(0), open="43000.10", high="43100.123456789012345678", low="0.00000001",
                      close="43050", vol="0.00000000", vol_ccy="1234567890123.45", vol_ccy_quote="1E-8"),
        candle_update(minute(1), confirmed=False, vol_ccy_quote=None),
        candle_update(minute(0), inst_id="ETH-USDT-SWAP", bar="1H", open="2500.5", high="2600", low="2400.25",
                      close="2550.50", vol="12.340", vol_ccy="30000", vol_ccy_quote="30000.000"),
    ]
    buffer.put_many((update, 1_000 + i) for i, update in enumerate(updates))

    result = flush(buffer)

    assert (result.skipped, result.taken, result.written, result.inserted, result.updated) == (False, 3, 3, 3, 0)
    assert (result.unchanged, result.rejected) == (0, 0)
    assert stored() == {key(u): expected(u, 1_000 + i) for i, u in enumerate(updates)}
    assert buffer.live() == {}
    assert buffer.taken() == {}
    assert buffer.counters() == {"candles_flushed": 3, "flush_runs": 1}
    last = buffer.redis.hgetall(buffer.keys.last_flush)
    assert buffer.timings() == {"flush_duration_ms": int(last[b"duration_ms"])}
    assert {name: last[name.encode()] for name in ("rows", "written", "rejected")} == {
        "rows": b"3", "written": b"3", "rejected": b"0"
    }
    assert float(last[b"at"]) == pytest.approx(time.time(), abs=30)
    assert int(last[b"duration_ms"]) >= 0
    assert not buffer.redis.exists(buffer.keys.flush_lock)


def test_rows_are_written_in_chunks_and_all_land(btc, buffer):
    updates = [candle_update(minute(i), close=f"10{i % 10}") for i in range(25)]
    buffer.put_many((update, 500) for update in updates)

    result = flush(buffer, chunk_rows=4)

    assert (result.taken, result.inserted) == (25, 25)
    assert stored() == {key(u): expected(u, 500) for u in updates}


def test_the_buffer_keeps_the_newest_version_of_each_candle(btc, buffer):
    # "Newest" by the data: two collectors of one shard stamp versions with two clocks.
    newer = candle_update(minute(0), close="107", vol="1.5", confirmed=False)
    older = candle_update(minute(0), close="101", vol="1.2", confirmed=False)
    final = candle_update(minute(1), close="108")
    late_open = candle_update(minute(1), close="109", confirmed=False)
    open_then_confirmed = candle_update(minute(2), close="104", confirmed=False), candle_update(minute(2), close="103")

    assert buffer.put(newer, version=200) == 1
    assert buffer.put(older, version=300) == 0  # less volume: an older state, whatever its receipt time
    assert buffer.put(newer, version=400) == 0  # the same state again writes nothing
    assert buffer.put(final, version=300) == 1
    assert buffer.put(late_open, version=400) == 0  # unconfirmed never replaces confirmed
    assert buffer.put(open_then_confirmed[0], version=500) == 1
    assert buffer.put(open_then_confirmed[1], version=450) == 1  # the confirm closes it, whatever its version
    flush(buffer)

    assert stored() == {key(newer): expected(newer, 200), key(final): expected(final, 300),
                        key(open_then_confirmed[1]): expected(open_then_confirmed[1], 450)}


def test_entries_written_in_one_call_keep_their_fields_and_values_whatever_their_characters(redis, keys, buffer):
    # One packed argument per call: lengths are UTF-8 bytes, so an instId outside ASCII (or holding the
    # separators) must not shift the entries that follow it.
    from collectors.live.buffer import encode_entry

    odd = [candle_update(minute(i), inst_id=name) for i, name in
           enumerate(["BTC-USDT", "ÉTH-ŰSDT", "A:1|x-USDT", "币-USDT", "12:34-USDT"])]
    many = [candle_update(minute(i), inst_id=f"I{i}-USDT") for i in range(3_000)]
    assert buffer.put_many([(update, 7) for update in odd + many]) == len(odd) + len(many)

    stored_entries = redis.hgetall(keys.live)
    assert {f.decode(): v.decode() for f, v in stored_entries.items()} == dict(
        encode_entry(update, 7) for update in odd + many)


def test_the_database_keeps_a_confirmed_candle_against_a_later_unconfirmed_push(btc, buffer):
    final = candle_update(minute(0), close="108")
    buffer.put(final, version=300)
    flush(buffer)
    buffer.put(candle_update(minute(0), close="109", confirmed=False), version=400)

    result = flush(buffer)

    assert (result.taken, result.written, result.unchanged) == (1, 0, 1)
    assert stored() == {key(final): expected(final, 300)}


# --- failures keep the batch ------------------------------------------------------------------------


def test_a_flush_killed_between_take_and_commit_keeps_the_batch_and_the_newest_version_wins(btc, buffer):
    # Six candles in three chunks of two; the fourth is already stored, and a concurrent writer holds its row
    # lock, so the run commits its first chunk and waits in the second, where its connection is killed.
    store_through_the_write_path(candle_update(minute(3), close="90", confirmed=False), version=1)
    first = {i: candle_update(minute(i), close=f"10{i}", confirmed=i % 2 == 0) for i in range(6)}
    buffer.put_many((update, 10) for update in first.values())

    with row_locked(minute(3)):
        run = FlushThread(buffer, chunk_rows=2)
        run.start()
        terminate_backend(waiting_backend())
    run.finish()

    assert isinstance(run.error, DatabaseError), run.error
    assert len(buffer.taken()) == 6
    assert buffer.live() == {}
    assert stored() == {key(first[0]): expected(first[0], 10), key(first[1]): expected(first[1], 10),
                        key(first[3]): expected(candle_update(minute(3), close="90", confirmed=False), 1)}
    assert buffer.counters() == {"flush_errors": 1}
    assert not buffer.redis.exists(buffer.keys.flush_lock)

    # Newer data arrives before the next run: newer versions, an older one, a new candle.
    second = {
        1: (candle_update(minute(1), close="109.5", confirmed=False), 20),
        2: (candle_update(minute(2), close="91"), 5),  # older than the taken v10: must lose
        4: (candle_update(minute(4), close="95.5"), 30),
        6: (candle_update(minute(6), close="106.5", confirmed=False), 20),
    }
    buffer.put_many(second.values())

    retry = flush(buffer, chunk_rows=2)
    after = flush(buffer, chunk_rows=2)

    assert (retry.taken, retry.inserted, retry.updated, retry.unchanged) == (6, 3, 1, 2)
    assert (after.taken, after.inserted, after.updated, after.unchanged) == (4, 1, 2, 1)
    newest = {i: (update, 10) for i, update in first.items()}
    newest.update({i: entry for i, entry in second.items() if entry[1] > 10})
    assert stored() == {key(update): expected(update, version) for update, version in newest.values()}
    assert buffer.live() == {}
    assert buffer.taken() == {}
    # Counted when a run commits: the chunk that landed during the killed run is "unchanged" in the retry.
    assert buffer.counters() == {"flush_errors": 1, "flush_runs": 2, "candles_flushed": 4 + 3}


def test_a_flush_inside_a_transaction_refuses_and_keeps_the_batch(btc, buffer):
    from django.db import transaction

    buffer.put(candle_update(minute(0)), version=10)

    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        flush(buffer)

    assert len(buffer.taken()) == 1
    assert stored() == {}
    assert flush(buffer).written == 1


# --- one run at a time ------------------------------------------------------------------------------


def test_a_second_flush_is_skipped_while_the_first_holds_the_lock(btc, buffer):
    store_through_the_write_path(candle_update(minute(0), confirmed=False), version=1)
    updates = [candle_update(minute(i), close=f"10{i}.5") for i in range(3)]
    buffer.put_many((update, 10) for update in updates)

    with row_locked(minute(0)):
        first = FlushThread(buffer)
        first.start()
        waiting_backend()
        buffer.put(candle_update(minute(5)), version=10)
        second = FlushThread(buffer)
        second.start()
        second.finish()
    first.finish()

    assert second.error is None
    assert second.result == FlushResult(skipped=True)
    assert first.error is None
    assert (first.result.taken, first.result.written) == (3, 3)
    assert len(buffer.live()) == 1  # arrived during the first run: left for the next
    assert flush(buffer).written == 1
    assert len(stored()) == 4


def test_a_scheduled_flush_gives_way_to_a_requested_one_for_its_claim_and_never_to_another_scheduled(btc, buffer):
    buffer.put(candle_update(minute(0)), version=10)
    assert flush(buffer, claim_s=0.5).written == 1  # requested by a collector: claims the next half second

    buffer.put(candle_update(minute(1)), version=10)
    assert flush(buffer, defer_to_claim=True) == FlushResult(skipped=True)
    assert len(buffer.live()) == 1  # left for the next run, nothing taken
    assert flush(buffer, claim_s=0.5).written == 1  # another request is never deferred

    time.sleep(0.6)
    buffer.put(candle_update(minute(2)), version=10)
    assert flush(buffer, defer_to_claim=True).written == 1  # the claim has lapsed
    buffer.put(candle_update(minute(3)), version=10)
    assert flush(buffer, defer_to_claim=True).written == 1  # scheduled runs alone never skip each other
    assert len(stored()) == 4


def test_the_flush_task_claims_when_requested_and_defers_when_scheduled(btc, buffer, settings):
    from collectors import tasks

    settings.REDIS_KEY_PREFIX = buffer.keys.prefix
    settings.FLUSH_INTERVAL_S = 1.0
    buffer.put(candle_update(minute(0)), version=10)
    requested_at = time.time() - 0.25
    assert tasks.flush_buffer.apply(kwargs={"requested": True, "requested_at": requested_at}).get() == 1
    assert 0 < buffer.redis.pttl(buffer.keys.flush_claim) <= 900
    assert buffer.counters()["flush_requests"] == 1
    assert buffer.timings()["flush_request_wait_ms"] >= 250  # how long the request waited for a worker

    buffer.put(candle_update(minute(1)), version=10)
    assert tasks.flush_buffer.apply().get() == 0  # the beat's run gives way
    assert len(buffer.live()) == 1


def test_a_lock_held_by_another_run_is_left_alone(btc, buffer):
    buffer.redis.set(buffer.keys.flush_lock, "another-run", px=60_000)
    buffer.put(candle_update(minute(0)), version=10)

    assert flush(buffer) == FlushResult(skipped=True)
    assert buffer.redis.get(buffer.keys.flush_lock) == b"another-run"
    assert len(buffer.live()) == 1
    assert stored() == {}


def test_a_run_that_lost_its_lock_stops_before_dropping_the_batch(btc, buffer):
    store_through_the_write_path(candle_update(minute(0), confirmed=False), version=1)
    buffer.put_many((candle_update(minute(i)), 10) for i in range(2))

    with row_locked(minute(0)):
        run = FlushThread(buffer)
        run.start()
        waiting_backend()
        # The lock expired (a run stuck longer than its TTL) and another run took it.
        buffer.redis.set(buffer.keys.flush_lock, "another-run", px=60_000)
    run.finish()

    assert isinstance(run.error, FlushLockLost)
    assert len(buffer.taken()) == 2  # the other run owns the batch now
    assert buffer.redis.get(buffer.keys.flush_lock) == b"another-run"
    assert buffer.counters() == {"flush_errors": 1}


# --- dead letters -----------------------------------------------------------------------------------


def test_rows_the_database_rejects_go_to_the_dead_letter_list_with_their_reason(btc, buffer):
    good = candle_update(minute(0))
    buffer.put(good, version=10)
    buffer.put(candle_update(minute(1), high="80"), version=11)
    buffer.put(candle_update(minute(0), inst_id="NOPE-USDT"), version=12)
    buffer.put(candle_update(minute(2) + 1), version=13)

    result = flush(buffer)

    assert (result.taken, result.written, result.rejected) == (4, 1, 3)
    assert stored() == {key(good): expected(good, 10)}
    letters = sorted(dead_letters(buffer), key=lambda letter: letter["raw"])
    assert [(letter["channel"], letter["reason"]) for letter in letters] == [
        ("BTC-USDT|1m", "high is below open, close or low"),
        ("BTC-USDT|1m", "open time is not on a 1m boundary"),
        ("NOPE-USDT|1m", "unknown instrument 'NOPE-USDT'"),
    ]
    assert orjson.loads(letters[0]["raw"]) == {
        "inst_id": "BTC-USDT", "bar": "1m", "open_time_ms": minute(1), "open": "100", "high": "80", "low": "90",
        "close": "105", "vol": "1.5", "vol_ccy": "157.5", "vol_ccy_quote": "157.5", "confirmed": True,
        "source": "ws", "version": 11, "price": "trade",
    }
    assert all(letter["at"] == pytest.approx(time.time(), abs=30) for letter in letters)
    assert buffer.counters() == {"dead_letters": 3, "candles_flushed": 1, "flush_runs": 1}
    assert buffer.taken() == {}

    flush(buffer)  # the batch was dropped: its dead letters are not written twice
    assert len(dead_letters(buffer)) == 3


def test_undecodable_entries_are_dead_lettered_with_the_stored_value_and_not_written(btc, buffer):
    good = candle_update(minute(0))
    buffer.put(good, version=10)
    buffer.put_raw(f"BTC-USDT|1m|{minute(1)}", "not a buffer entry")
    buffer.put_raw("BTC-USDT|1m|soon", '10|1|["1","1","1","1","1","1",null]')
    buffer.put_raw("no-separators", '10|1|["1","1","1","1","1","1",null]')
    buffer.put_raw(f"BTC-USDT|1m|{minute(2)}", "10|1|[1, 2")

    result = flush(buffer)

    assert (result.taken, result.written, result.rejected) == (5, 1, 4)
    assert stored() == {key(good): expected(good, 10)}
    letters = {letter["raw"]: letter for letter in dead_letters(buffer)}
    assert set(letters) == {"not a buffer entry", '10|1|["1","1","1","1","1","1",null]', "10|1|[1, 2"}
    reasons = sorted(letter["reason"] for letter in dead_letters(buffer))
    assert all(reason.startswith("undecodable buffer entry ") for reason in reasons)
    assert any(f"'BTC-USDT|1m|{minute(1)}'" in reason for reason in reasons)
    assert any("'no-separators'" in reason for reason in reasons)
    assert letters["10|1|[1, 2"]["channel"] == "BTC-USDT|1m"
    assert buffer.counters()["dead_letters"] == 4


def test_the_dead_letter_list_is_trimmed_to_its_maximum_and_the_trimmed_entries_are_counted(
    btc, buffer, settings
):
    settings.DEAD_LETTER_MAX = 100
    buffer.redis.lpush(buffer.keys.dead_letters, *[b"older"] * 99)
    buffer.put_many((candle_update(minute(i), high="1"), 10) for i in range(3))

    assert flush(buffer).rejected == 3

    assert buffer.redis.llen(buffer.keys.dead_letters) == 100
    assert buffer.redis.lrange(buffer.keys.dead_letters, 98, -1) == [b"older", b"older"]  # the oldest went
    assert buffer.counters() == {"dead_letters": 3, "dead_letters_trimmed": 2, "flush_runs": 1,
                                 "candles_flushed": 0}


def test_a_row_the_database_cannot_hold_is_isolated_and_dead_lettered_while_the_rest_land(btc, buffer):
    beyond_timestamps = 4_611_686_018_427_360_000  # a bigint on a minute boundary, far past year 294276
    updates = [candle_update(minute(i)) for i in range(7)]
    buffer.put_many((update, 10) for update in updates)
    buffer.put(candle_update(beyond_timestamps), version=10)

    result = flush(buffer, chunk_rows=4)

    assert (result.taken, result.written, result.rejected) == (8, 7, 1)
    assert stored() == {key(u): expected(u, 10) for u in updates}
    [letter] = dead_letters(buffer)
    assert letter["reason"].startswith("database refused the row: DataError")
    assert orjson.loads(letter["raw"])["open_time_ms"] == beyond_timestamps
    assert buffer.taken() == {}


# --- after commit ---------------------------------------------------------------------------------


def test_on_committed_gets_exactly_the_confirmed_rows_that_were_committed(btc, buffer):
    confirmed = [candle_update(minute(i)) for i in range(3)]
    buffer.put_many((update, 10 + i) for i, update in enumerate(confirmed))
    buffer.put(candle_update(minute(3), confirmed=False), version=20)
    buffer.put(candle_update(minute(4), high="1"), version=21)  # confirmed but rejected
    calls = []

    result = flush(buffer, on_committed=lambda rows: calls.append((rows, len(buffer.taken()), len(stored()))))

    assert len(calls) == 1
    rows, taken_when_called, stored_when_called = calls[0]
    assert (taken_when_called, stored_when_called) == (0, 4)  # after commit, batch already dropped
    assert rows == result.confirmed_rows
    assert sorted((row.open_time_ms, row.version, row.confirmed) for row in rows) == [
        (minute(i), 10 + i, True) for i in range(3)
    ]
    assert all(row.close == "105" and row.source == "ws" for row in rows)


def test_a_failing_on_committed_is_logged_and_does_not_undo_the_flush(btc, buffer, caplog):
    buffer.put(candle_update(minute(0)), version=10)

    def broken(rows):
        raise ConnectionError("webhook queue down")

    with caplog.at_level(logging.ERROR, logger="collectors.live.flush"):
        result = flush(buffer, on_committed=broken)

    assert result.written == 1
    assert len(result.confirmed_rows) == 1
    assert buffer.taken() == {}
    assert len(stored()) == 1
    assert "on_committed failed for 1 confirmed candles" in caplog.text
    assert "webhook queue down" in caplog.text


def test_an_empty_buffer_is_a_cheap_no_op(btc, buffer, django_assert_num_queries):
    calls = []
    with django_assert_num_queries(0):
        result = flush(buffer, on_committed=calls.append)

    assert result == FlushResult(duration_s=result.duration_s)
    assert result.duration_s < 1
    assert calls == []
    assert list(buffer.redis.scan_iter(match=f"{buffer.keys.prefix}*")) == []  # nothing written, lock released


# --- alarm ----------------------------------------------------------------------------------------


def test_buffer_alarm_counts_live_and_taken_entries_and_warns_above_the_limit(btc, buffer, settings, caplog):
    settings.BUFFER_ALARM_ENTRIES = 2
    assert buffer_alarm(redis=buffer.redis, keys=buffer.keys) == (0, False)
    buffer.put_many((candle_update(minute(i)), 10) for i in range(2))
    assert buffer_alarm(redis=buffer.redis, keys=buffer.keys) == (2, False)

    buffer.redis.rename(buffer.keys.live, buffer.keys.taken)  # as a failed flush leaves it
    buffer.put(candle_update(minute(5)), version=10)
    with caplog.at_level(logging.WARNING, logger="collectors.live.flush"):
        assert buffer_alarm(redis=buffer.redis, keys=buffer.keys) == (3, True)
    assert "buffer holds 3 entries, above the alarm level 2" in caplog.text


# --- price kinds ---------------------------------------------------------------------------------------


def test_mark_and_trade_versions_of_one_candle_are_separate_buffer_entries_and_rows(eth, buffer):
    from decimal import Decimal

    from collectors.live.buffer import decode_entry, encode_entry, encode_text_entry
    from collectors.okx.candle_rows import CandleText, CandleUpdate

    Instrument.objects.create(inst_id="ETH-USDT-SWAP", inst_type="SWAP", price="mark")
    trade = candle_update(minute(0), inst_id="ETH-USDT-SWAP", close="105")
    mark = CandleUpdate("ETH-USDT-SWAP", "1m", minute(0), Decimal("100"), Decimal("110"), Decimal("90"),
                        Decimal("104.9"), None, None, None, True, price="mark")
    field, value = encode_entry(mark, 7)
    assert field == f"ETH-USDT-SWAP|mark:1m|{minute(0)}"
    assert encode_entry(trade, 7)[0] == f"ETH-USDT-SWAP|1m|{minute(0)}"  # trade fields are as they always were
    text = CandleText("ETH-USDT-SWAP", "1m", minute(0), "100", "110", "90", "104.9", None, None, None, True,
                      price="mark")
    assert encode_text_entry(text, 7) == (field, value)  # the hot path writes the same entry
    assert decode_entry(field, value) == CandleRow("ETH-USDT-SWAP", "1m", minute(0), "100", "110", "90", "104.9",
                                                   None, None, None, True, "ws", 7, "mark")

    buffer.put_many([(trade, 10), (mark, 10)])
    result = flush(buffer)
    assert (result.taken, result.written, result.rejected) == (2, 2, 0)
    rows = dict(Candle.objects.filter(open_time=ms_to_datetime(minute(0))).values_list("instrument__price", "close"))
    assert {price: str(close) for price, close in rows.items()} == {"trade": "105", "mark": "104.9"}


def test_a_flushed_mark_candle_makes_the_webhook_job_of_the_mark_subscription(eth, buffer, settings):
    from decimal import Decimal

    from candles.models import Subscription, Timeframe
    from collectors.delivery.webhooks import webhook_jobs_for
    from collectors.okx.candle_rows import CandleUpdate

    settings.WEBHOOK_SECRET = "s"
    mark_row = Instrument.objects.create(inst_id="ETH-USDT-SWAP", inst_type="SWAP", price="mark")
    one_minute = Timeframe.objects.get(code="1m")
    Subscription.objects.create(instrument=eth, timeframe=one_minute, webhook_url="https://a.test/trade")
    mark_sub = Subscription.objects.create(instrument=mark_row, timeframe=one_minute,
                                           webhook_url="https://a.test/mark")
    buffer.put(CandleUpdate("ETH-USDT-SWAP", "1m", minute(0), Decimal("100"), Decimal("110"), Decimal("90"),
                            Decimal("104.9"), None, None, None, True, price="mark"), version=10)
    jobs = []

    flush(buffer, on_committed=lambda rows: jobs.extend(webhook_jobs_for(rows)))

    [job] = jobs
    assert (job.subscription_id, job.url) == (mark_sub.pk, "https://a.test/mark")
    body = orjson.loads(job.body)
    assert (body["symbol"], body["price"], body["close"], body["volume"]) == ("ETH-USDT-SWAP", "mark", "104.9", None)
