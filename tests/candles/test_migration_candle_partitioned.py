"""Migration 0011 turns a populated plain candle table into the partitioned, compact one without losing or
changing a row, and its reverse turns it back.

The test database is migrated back to 0010, filled through the old table's columns, and migrated forward
again; whatever happens, it ends at the latest migration, as the other tests expect.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from candles.bars import datetime_to_ms
from candles.models import Candle, CandleRecord, Timeframe
from candles.partitions import partition_list

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

BEFORE = ("candles", "0010_timeframe_retention")
AFTER = ("candles", "0011_candle_partitioned")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (bar, open time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, source, version)
LEGACY_ROWS = [
    ("1m", datetime(2019, 3, 5, 12, 0, tzinfo=UTC), "43000.10", "43000.10", "42999.0", "43000.0", "0.00000001",
     "0.00043", None, True, "rest", 1_551_787_260_000_000),
    ("1m", datetime(2019, 3, 5, 12, 1, tzinfo=UTC), "43000.0", "43001", "43000.0", "43000.5", "1.50", "64500.75",
     "64500.75", True, "ws", 1_551_787_321_123_456),
    ("1m", datetime(2024, 1, 16, 19, 0, tzinfo=UTC), "100", "110", "90", "105", "1.5", "157.5", "157.5", False, "ws",
     1_705_431_630_000_001),
    ("1s", None, "0.000012345", "0.000012350", "0.000012340", "0.000012345", "0", "0", "0", True, "ws", None),
    ("1D", datetime(2023, 12, 31, 16, 0, tzinfo=UTC), "97123.4", "99547.80", "96000", "99000.00", "12.5", "1.2E+6",
     None, True, "rest", 1_704_067_200_500_000),
    ("1M", datetime(2021, 1, 31, 16, 0, tzinfo=UTC), "1", "2", "0.5", "1.0", "10", "10", "10", False, "ws",
     1_612_108_800_000_000),
]


def migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.fixture
def legacy_table() -> Iterator[None]:
    """The test database at migration 0010 (the plain table); back at the latest migration afterwards."""
    migrate(BEFORE)
    try:
        yield
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def store_legacy(instruments: dict[str, int]) -> None:
    """The rows as the old write path left them, `updated_at` included."""
    bars = dict(Timeframe.objects.values_list("code", "id"))
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    with connection.cursor() as cursor:
        for instrument in instruments.values():
            for bar, open_time, *numbers, confirmed, source, version in LEGACY_ROWS:
                moment = open_time or recent
                version = version or datetime_to_ms(moment) * 1000 + 7
                cursor.execute(
                    "INSERT INTO candles_candle (instrument_id, timeframe_id, open_time, open, high, low, close, vol, "
                    "vol_ccy, vol_ccy_quote, confirmed, source, version, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
                    [instrument, bars[bar], moment, *numbers, confirmed, source, version],
                )


def as_text() -> list[tuple]:
    """Every candle, every column but `updated_at`, as PostgreSQL writes it (numbers digit for digit)."""
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT key, instrument_id, timeframe_id, open_time, open::text, high::text, low::text, close::text,
                   vol::text, vol_ccy::text, vol_ccy_quote::text, confirmed, source, version
            FROM candles_candle_record ORDER BY key
        """)
        return cursor.fetchall()


def exact(value: Decimal | None) -> tuple | None:
    """Digits and exponent: Decimal("43000.10") is not Decimal("43000.1") here."""
    return None if value is None else value.as_tuple()


def through_the_orm() -> list[tuple]:
    return sorted(
        (c.instrument_id, c.timeframe_id, c.open_time, *(exact(v) for v in (c.open, c.high, c.low, c.close, c.vol,
                                                                             c.vol_ccy, c.vol_ccy_quote)),
         c.confirmed, c.source, c.version)
        for c in Candle.objects.all()
    )


def instruments() -> dict[str, int]:
    with connection.cursor() as cursor:
        ids = {}
        for inst_id in ("BTC-USDT", "PEPE-USDT"):
            cursor.execute("INSERT INTO candles_instrument (inst_id, inst_type, base_ccy, quote_ccy, settle_ccy, "
                           "inst_family, state, created_at, updated_at) VALUES (%s, 'SPOT', '', '', '', '', 'live', "
                           "now(), now()) RETURNING id", [inst_id])
            ids[inst_id] = cursor.fetchone()[0]
    return ids


def test_every_row_reads_back_identical_after_partitioning(legacy_table):
    store_legacy(instruments())
    before = as_text()
    assert len(before) == 2 * len(LEGACY_ROWS)

    migrate(AFTER)

    assert as_text() == before
    orm = through_the_orm()
    assert [row[:3] for row in orm] == sorted((row[1], row[2], row[3]) for row in before)
    assert {row[-2] for row in orm} == {"ws", "rest"}
    rest = next(row for row in orm if row[2] == datetime(2019, 3, 5, 12, 0, tzinfo=UTC))
    assert (rest[3], rest[6], rest[7], rest[9], rest[11]) == (
        exact(Decimal("43000.10")), exact(Decimal("43000.0")), exact(Decimal("0.00000001")), None, "rest")
    for record in CandleRecord.objects.all():
        assert record.updated_at == EPOCH + timedelta(microseconds=record.version)
    leaves = {leaf.name: leaf.live_rows for leaf in partition_list()}
    assert {"candles_candle_1m_201903", "candles_candle_1m_202401", "candles_candle_1d_2023",
            "candles_candle_1mo_2021"} <= set(leaves)
    assert not any(name.startswith("candles_candle_1m_2020") for name in leaves)  # only periods holding rows


def test_the_reverse_migration_restores_the_plain_table_with_every_row(legacy_table):
    store_legacy(instruments())
    before = as_text()
    migrate(AFTER)

    migrate(BEFORE)

    assert as_text() == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind, reloptions FROM pg_class WHERE relname = 'candles_candle'")
        assert cursor.fetchone() == ("r", ["fillfactor=90"])
        cursor.execute("SELECT count(*) FROM candles_candle WHERE updated_at = timestamptz 'epoch' "
                       "+ version * interval '1 microsecond'")
        assert cursor.fetchone()[0] == len(before)


def test_the_compact_row_leaves_updated_at_behind_and_keeps_the_source_in_one_byte(legacy_table):
    migrate(AFTER)
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = 'candles_candle'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum
        """)
        columns = cursor.fetchall()
    assert columns[:6] == [("open_time", "timestamp with time zone"), ("version", "bigint"),
                           ("instrument_id", "integer"), ("timeframe_id", "smallint"), ("confirmed", "boolean"),
                           ("source", '"char"')]
    assert "updated_at" not in dict(columns)
    assert [dict(columns)[name] for name in ("open", "vol_ccy_quote")] == ["numeric", "numeric"]


def test_exact_decimals_survive_the_copy_with_their_scale(legacy_table):
    store_legacy(instruments())
    migrate(AFTER)
    closes = {c.close.as_tuple() for c in Candle.objects.filter(timeframe__code="1D")}
    assert closes == {Decimal("99000.00").as_tuple()}
