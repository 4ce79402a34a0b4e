"""Dead letters: listing them newest first, and re-ingesting the ones that have become valid (real Redis and
PostgreSQL; records are made by the pipeline's own `dead_letter_record`)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import orjson
import pytest

from collectors.live.buffer import dead_letter_record, decode_entry
from collectors.live.deadletters import (
    DeadLetter,
    dead_letters_count,
    dead_letters_newest,
    dead_letters_reingest,
    record_id,
)
from collectors.live.flush import buffer_flush
from okxproject.keys import Keys
from tests.support import T0_MS, LiveBuffer, candle_update, exact, isolated_keys, stored_candles

pytestmark = pytest.mark.django_db

NOW_MS = T0_MS + 10 * 60_000


def frame(*rows: list[str], inst_id: str = "BTC-USDT", bar: str = "1m") -> str:
    """An OKX candle push as the business WebSocket sends it."""
    return orjson.dumps({"arg": {"channel": f"candle{bar}", "instId": inst_id}, "data": list(rows)}).decode()


def row(open_ms: int = T0_MS, o="100", h="110", low="90", c="105", confirm="1") -> list[str]:
    return [str(open_ms), o, h, low, c, "1.5", "157.5", "157.5", confirm]


@pytest.fixture
def keys(redis) -> Iterator[Keys]:
    with isolated_keys(redis) as keys:
        yield keys


def push(redis, keys: Keys, reason: str, raw: str | None, channel: str | None = None, at: float | None = None) -> bytes:
    """A dead letter as the collectors and the flush write it (newest at the head)."""
    record = dead_letter_record(reason, raw, channel)
    if at is not None:
        data = orjson.loads(record)
        data["at"] = at
        record = orjson.dumps(data)
    redis.lpush(keys.dead_letters, record)
    return record


def ids(letters: list[DeadLetter]) -> list[str]:
    return [letter.id for letter in letters]


def test_the_newest_dead_letters_come_first_with_reason_raw_frame_and_channel(redis, keys):
    first = push(redis, keys, "frame is not JSON", "{not json")
    second = push(redis, keys, "unknown bar '7m'", frame(row(), bar="7m"), "BTC-USDT|7m")
    redis.lpush(keys.dead_letters, b"\xffgarbled")

    letters = dead_letters_newest(redis, keys, limit=10)

    assert dead_letters_count(redis, keys) == 3
    assert [letter.reason for letter in letters] == ["garbled dead-letter record", "unknown bar '7m'",
                                                      "frame is not JSON"]
    assert letters[1].raw == frame(row(), bar="7m")
    assert letters[1].channel == "BTC-USDT|7m"
    assert letters[1].at_datetime is not None
    assert ids(letters[1:]) == [record_id(second), record_id(first)]
    assert ids(dead_letters_newest(redis, keys, limit=1, offset=2)) == [record_id(first)]


def test_a_frame_refused_for_a_bar_since_known_goes_to_the_buffer_versioned_at_its_receipt(redis, keys, btc):
    # The collector had no spec for 1m when the frame came (not subscribed then); the bar table has it now.
    received_at = T0_MS / 1000 + 30.25
    record = push(redis, keys, "unknown bar '1m'", frame(row(confirm="0")), "BTC-USDT|1m", at=received_at)

    result = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record)], now_ms=NOW_MS)

    assert (result.reingested, result.candles, result.still_invalid, result.not_found) == (1, 1, [], 0)
    assert dead_letters_count(redis, keys) == 0
    [(name, value)] = LiveBuffer(redis, keys).live().items()
    buffered = decode_entry(name, value)
    assert buffered == (
        "BTC-USDT", "1m", T0_MS, "100", "110", "90", "105", "1.5", "157.5", "157.5", False, "ws", 1_705_431_630_250_000,
        "trade",
    )
    assert int(redis.hget(keys.counters, "dead_letters_reingested")) == 1


def test_a_reingested_candle_reaches_postgresql_through_the_flush(redis, keys, btc):
    record = push(redis, keys, "unknown bar '1m'", frame(row(o="100.50", c="105.0")), "BTC-USDT|1m",
                  at=T0_MS / 1000 + 61)
    dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record)], now_ms=NOW_MS)

    flushed = buffer_flush(redis=redis, keys=keys)

    assert flushed.written == 1
    stored = stored_candles()[("BTC-USDT", "1m", T0_MS)]
    assert (stored[0], stored[3]) == (exact(Decimal("100.50")), exact(Decimal("105.0")))  # digit for digit
    assert stored[-3:] == (True, "ws", (T0_MS + 61_000) * 1000)


def test_a_record_that_is_still_invalid_stays_with_the_reason_and_writes_nothing(redis, keys, btc):
    bad_prices = push(redis, keys, "high is below open, close or low", frame(row(h="80")), "BTC-USDT|1m")
    not_json = push(redis, keys, "frame is not JSON", "{not json")
    no_raw = push(redis, keys, "connection lost", None)
    no_candle = push(redis, keys, "unexpected event", orjson.dumps({"event": "error", "code": "60012",
                                                                    "msg": "Invalid request"}).decode())

    result = dead_letters_reingest(redis=redis, keys=keys, now_ms=NOW_MS,
                                   ids=[record_id(r) for r in (bad_prices, not_json, no_raw, no_candle)])

    assert result.reingested == 0
    assert result.candles == 0
    assert sorted(reason for _, reason in result.still_invalid) == [
        "frame is not JSON", "high is below open, close or low", "the frame holds no candle",
        "the record kept no raw text",
    ]
    assert dead_letters_count(redis, keys) == 4
    assert LiveBuffer(redis, keys).live() == {}


def test_a_candle_of_an_unknown_instrument_stays_until_the_instrument_is_synced(redis, keys, instrument):
    record = push(redis, keys, "unknown bar '1m'", frame(row(), inst_id="NEW-USDT"), "NEW-USDT|1m")

    before = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record)], now_ms=NOW_MS)
    instrument("NEW-USDT")
    after = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record)], now_ms=NOW_MS)

    assert before.still_invalid == [(record_id(record), "unknown instrument 'NEW-USDT'")]
    assert (after.reingested, after.candles) == (1, 1)
    assert list(LiveBuffer(redis, keys).live()) == [f"NEW-USDT|1m|{T0_MS}".encode()]


def test_a_row_the_database_refused_at_flush_goes_back_once_its_instrument_exists(redis, keys, instrument):
    # Written by the real flush: the buffer held a candle of an instrument the database did not know.
    LiveBuffer(redis, keys).put(candle_update(inst_id="LATE-USDT", close="101.25"), version=77)
    assert buffer_flush(redis=redis, keys=keys).rejected == 1
    [letter] = dead_letters_newest(redis, keys)
    assert "unknown instrument" in letter.reason
    instrument("LATE-USDT")

    result = dead_letters_reingest(redis=redis, keys=keys, ids=[letter.id], now_ms=NOW_MS)
    buffer_flush(redis=redis, keys=keys)

    assert (result.reingested, result.candles) == (1, 1)
    stored = stored_candles()[("LATE-USDT", "1m", T0_MS)]
    assert stored[3] == exact(Decimal("101.25"))
    assert stored[-1] == 77  # the version it was received with, not the time of the re-ingest
    assert dead_letters_count(redis, keys) == 0


def test_the_buffer_keeps_a_newer_version_over_a_reingested_older_one(redis, keys, btc):
    buffer = LiveBuffer(redis, keys)
    newer_version = (T0_MS + 50_000) * 1000
    buffer.put(candle_update(close="106", confirmed=False), version=newer_version)
    record = push(redis, keys, "unknown bar '1m'", frame(row(c="105", confirm="0")), "BTC-USDT|1m",
                  at=T0_MS / 1000 + 20)

    result = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record)], now_ms=NOW_MS)

    assert result.reingested == 1
    [(name, value)] = buffer.live().items()
    assert decode_entry(name, value).close == "106"
    assert decode_entry(name, value).version == newer_version


def test_a_mixed_frame_buffers_its_valid_candles_and_stays_for_the_invalid_one(redis, keys, btc):
    record = push(redis, keys, "open time is not on a 1m boundary",
                  frame(row(T0_MS), row(T0_MS + 1_000)), "BTC-USDT|1m")

    result = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record)], now_ms=NOW_MS)

    assert result.candles == 1
    assert result.still_invalid == [(record_id(record), f"open time {T0_MS + 1_000} is not on a 1m boundary")]
    assert dead_letters_count(redis, keys) == 1
    assert list(LiveBuffer(redis, keys).live()) == [f"BTC-USDT|1m|{T0_MS}".encode()]


def test_reingesting_twice_or_an_id_no_longer_listed_changes_nothing(redis, keys, btc):
    record = push(redis, keys, "unknown bar '1m'", frame(row()), "BTC-USDT|1m", at=T0_MS / 1000)
    first = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record)], now_ms=NOW_MS)
    buffered = LiveBuffer(redis, keys).live()

    second = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(record), "0" * 24], now_ms=NOW_MS)

    assert first.reingested == 1
    assert (second.reingested, second.candles, second.not_found) == (0, 0, 2)
    assert LiveBuffer(redis, keys).live() == buffered


def test_records_deep_in_the_list_are_found(redis, keys, btc, monkeypatch):
    from collectors.live import deadletters

    monkeypatch.setattr(deadletters, "SCAN_CHUNK", 3)  # several LRANGE chunks with a short list
    wanted = push(redis, keys, "unknown bar '1m'", frame(row()), "BTC-USDT|1m")
    for n in range(10):
        push(redis, keys, f"frame is not JSON {n}", "{")

    result = dead_letters_reingest(redis=redis, keys=keys, ids=[record_id(wanted)], now_ms=NOW_MS)

    assert result.reingested == 1
    assert dead_letters_count(redis, keys) == 10
