"""The write path publishes what it committed to the stream's feed: only while someone listens, only after commit,
each row as stored."""

from __future__ import annotations

import pytest
import redis as redis_lib
from django.conf import settings as django_settings
from django.db import transaction

from candles.storage import candles_upsert
from candles.stream import feed
from tests.candles.stream.conftest import row, write
from tests.support import MINUTE_MS, T0_MS

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def redis():
    client = redis_lib.Redis.from_url(django_settings.REDIS_URL)
    yield client
    client.close()


def entries(redis) -> list[dict]:
    return [{k.decode(): v for k, v in fields.items()} for _, fields in redis.xrange(feed.feed_key())]


def listen(redis) -> None:
    redis.set(feed.listening_key(), "1", px=10_000)
    feed.listening_forget()


def test_nothing_is_published_while_nobody_listens(btc, redis, stream_prefix):
    write(row("BTC-USDT", "1m", T0_MS))
    assert entries(redis) == []


def test_a_committed_batch_is_one_entry_with_each_written_row_as_stored(btc, redis, stream_prefix):
    listen(redis)
    write(row("BTC-USDT", "1m", T0_MS, close="105.50", version=7), row("BTC-USDT", "1m", T0_MS + MINUTE_MS))
    write(row("BTC-USDT", "1m", T0_MS, close="104", version=6))  # older: not written, not published
    (entry,) = entries(redis)
    assert entry["seq"] == b"1"
    rows = sorted(feed.decode_rows(entry["rows"]), key=lambda r: r[2])
    assert entry["rows"].split(b"\n")[0].startswith(f"{btc.pk}:{rows[0][1]}\t".encode())
    assert rows[0] == [btc.pk, rows[0][1], T0_MS, "2024-01-16T19:00:00Z", "100", "110", "90", "105.50", "1.5",
                       "157.5", None, True, 7]
    assert [r[2] for r in rows] == [T0_MS, T0_MS + MINUTE_MS]


def test_a_large_batch_through_the_staging_table_is_published_too(btc, redis, stream_prefix):
    listen(redis)
    write(*(row("BTC-USDT", "1m", T0_MS + k * MINUTE_MS) for k in range(800)))
    (entry,) = entries(redis)
    assert len(feed.decode_rows(entry["rows"])) == 800


def test_a_rolled_back_batch_is_never_published(btc, redis, stream_prefix):
    listen(redis)

    def write_then_fail() -> None:
        with transaction.atomic():
            candles_upsert(rows=[row("BTC-USDT", "1m", T0_MS)])
            raise RuntimeError("the caller fails after the write")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert entries(redis) == []


def test_a_failed_publication_is_sent_with_the_next_one(btc, redis, stream_prefix, settings):
    listen(redis)
    real_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        write(row("BTC-USDT", "1m", T0_MS))
    finally:
        settings.REDIS_URL = real_url
    assert entries(redis) == []
    write(row("BTC-USDT", "1m", T0_MS + MINUTE_MS))
    assert [feed.decode_rows(e["rows"])[0][2] for e in entries(redis)] == [T0_MS, T0_MS + MINUTE_MS]
