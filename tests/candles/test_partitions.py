"""The partitioned candle table: leaves made ahead and on demand, their names, settings and close-out.

See candles/partitions.py and docs/storage-design.md §1. Writes go through `candles_upsert`, which makes the
leaves it needs; the DDL's own guarantees (idempotent, safe from two connections) are checked directly.
"""

from __future__ import annotations

import importlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from candles import partitions
from candles.bars import datetime_to_ms, ms_to_datetime
from candles.models import Candle, Timeframe
from candles.partitions import (
    PARTITION_UNIT,
    bar_table,
    leaf_name,
    leaf_range,
    partition_close_out,
    partition_list,
    partitions_ensure,
    partitions_premake,
)
from candles.storage import candles_upsert
from tests.conftest import SEEDED_CODES, build_row, utc

migration_0011 = importlib.import_module("candles.migrations.0011_candle_partitioned")


def attached(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s))", [name])
        return cursor.fetchone()[0]


def units_after(bar: str, moment: datetime, units: int) -> datetime:
    """The start of the leaf `units` leaves after the one holding `moment` (before it, when negative)."""
    start = leaf_range(bar, moment)[0]
    for _ in range(units):
        start = leaf_range(bar, start)[1]
    for _ in range(-units):
        start = leaf_range(bar, start - timedelta(microseconds=1))[0]
    return start


def first_open_time_at_or_after(timeframe: Timeframe, moment: datetime) -> datetime:
    return ms_to_datetime(timeframe.spec.ceil(datetime_to_ms(moment)))


# --- names -----------------------------------------------------------------------------------------------


def test_bar_tables_spell_a_capital_m_as_mo_and_all_27_bars_get_distinct_tables():
    assert [bar_table(code) for code in ("1m", "1M", "3M", "1Mutc", "1H", "1s")] == [
        "candles_candle_1m", "candles_candle_1mo", "candles_candle_3mo", "candles_candle_1moutc",
        "candles_candle_1h", "candles_candle_1s",
    ]
    assert len({bar_table(code) for code in SEEDED_CODES}) == len(SEEDED_CODES) == 27


def test_a_leaf_is_a_utc_day_of_1s_a_month_of_1m_3m_5m_and_a_year_of_longer_bars():
    moment = datetime(2026, 12, 6, 15, 30, 1, tzinfo=UTC)
    assert leaf_range("1s", moment) == (utc(2026, 12, 6), utc(2026, 12, 7))
    assert leaf_range("5m", moment) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert leaf_range("1D", moment) == (utc(2026, 1, 1), utc(2027, 1, 1))
    assert leaf_range("a bar nobody knows", moment) == (utc(2026, 1, 1), utc(2027, 1, 1))
    assert leaf_name("1s", utc(2026, 12, 6)) == "candles_candle_1s_20261206"
    assert leaf_name("1m", utc(2026, 12, 1)) == "candles_candle_1m_202612"
    assert leaf_name("1M", utc(2026, 1, 1)) == "candles_candle_1mo_2026"
    assert {PARTITION_UNIT[code] for code in SEEDED_CODES} == {"day", "month", "year"}


def test_the_migration_made_leaves_of_the_sizes_and_names_the_module_makes_now():
    for code in SEEDED_CODES:
        assert migration_0011.unit_of(code) == PARTITION_UNIT[code], code
        assert f"candles_candle_{migration_0011.slug_of(code)}" == bar_table(code)


# --- leaves ahead and on demand ------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_bar_has_leaves_from_one_unit_before_now_to_two_units_ahead():
    now = timezone.now()
    partitions_premake(now=now)
    leaves = {(leaf.bar, leaf.start) for leaf in partition_list()}
    for code in SEEDED_CODES:
        for units in (-1, 0, 1, 2):
            assert (code, units_after(code, now, units)) in leaves, (code, units)


@pytest.mark.django_db
def test_premake_twice_makes_nothing_the_second_time():
    now = timezone.now()
    partitions_premake(now=now)
    assert partitions_premake(now=now) == []


@pytest.mark.django_db
def test_a_write_into_any_bars_future_beyond_the_premade_leaves_lands(btc):
    now = timezone.now()
    for timeframe in Timeframe.objects.all():
        beyond = first_open_time_at_or_after(timeframe, units_after(timeframe.code, now, 5))
        result = candles_upsert(rows=[build_row(beyond, bar=timeframe.code)])
        assert (result.inserted, result.rejected) == (1, []), timeframe.code
        assert attached(leaf_name(timeframe.code, leaf_range(timeframe.code, beyond)[0]))
    assert Candle.objects.count() == Timeframe.objects.count() == 27


@pytest.mark.django_db
def test_a_write_into_2019_lands_in_a_partition_made_for_it(btc):
    assert not attached("candles_candle_1m_201903")

    result = candles_upsert(rows=[build_row(utc(2019, 3, 5, 12, 0)), build_row(utc(2019, 3, 5, 12, 1))])

    assert (result.inserted, result.expired) == (2, 0)
    assert attached("candles_candle_1m_201903")
    (leaf,) = [leaf for leaf in partition_list(bar="1m") if leaf.name == "candles_candle_1m_201903"]
    assert (leaf.name, leaf.start, leaf.end, leaf.timeframe_id) == (
        "candles_candle_1m_201903", utc(2019, 3, 1), utc(2019, 4, 1), Timeframe.objects.get(code="1m").pk)


@pytest.mark.django_db
def test_a_backfill_page_spread_over_years_gets_leaves_only_for_the_years_it_holds(btc):
    rows = [build_row(utc(year, 1, 1, 0, 0), bar="1Dutc") for year in (2001, 2011, 2021)]

    assert candles_upsert(rows=rows).inserted == 3

    made = {leaf.start.year for leaf in partition_list(bar="1Dutc")}
    assert {2001, 2011, 2021} <= made
    assert not made & {2002, 2010, 2012}


@pytest.mark.django_db
def test_there_is_no_default_partition_anywhere_in_the_tree():
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT c.relname, p.partdefid FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
            WHERE c.relname LIKE 'candles_candle%%'
        """)
        parents = dict(cursor.fetchall())
    assert len(parents) == 28  # the root and one table per bar
    assert set(parents.values()) == {0}


@pytest.mark.django_db
def test_a_row_with_no_leaf_fails_loudly_rather_than_landing_elsewhere(btc, tf):
    with pytest.raises(IntegrityError, match="no partition of relation"), transaction.atomic():
        Candle.objects.create(instrument=btc, timeframe=tf("1m"), open_time=utc(1999, 1, 1), open=1, high=1, low=1,
                              close=1, vol=0, vol_ccy=0, confirmed=True, source="ws", version=1)


@pytest.mark.django_db
def test_ensure_makes_each_missing_leaf_once_and_then_nothing():
    made = partitions_ensure(bar="1s", start=utc(2030, 5, 30, 12), end=utc(2030, 6, 1, 0, 0, 1))
    assert made == ["candles_candle_1s_20300530", "candles_candle_1s_20300531", "candles_candle_1s_20300601"]
    assert partitions_ensure(bar="1s", start=utc(2030, 5, 30), end=utc(2030, 6, 2)) == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_ensure_from_two_connections_at_once_makes_every_leaf_exactly_once():
    start, end = utc(2031, 1, 1), utc(2031, 7, 1)
    ready = threading.Barrier(2)
    made: list[list[str]] = []
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            ready.wait(timeout=10)
            made.append(partitions_ensure(bar="5m", start=start, end=end))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ensure) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    expected = [f"candles_candle_5m_2031{month:02d}" for month in range(1, 7)]
    assert sorted(made[0] + made[1]) == expected
    assert all(attached(name) for name in expected)


@pytest.mark.django_db
def test_a_new_leaf_has_fillfactor_100_and_the_hot_leaf_autovacuum_settings():
    (name,) = partitions_ensure(bar="1s", start=utc(2030, 1, 2), end=utc(2030, 1, 3))
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [name])
        options = dict(option.split("=") for option in cursor.fetchone()[0])
    assert options["fillfactor"] == "100"
    assert (options["autovacuum_vacuum_scale_factor"], options["autovacuum_vacuum_threshold"]) == ("0", "50000")
    assert options["autovacuum_vacuum_cost_delay"] == "0"


@pytest.mark.django_db
def test_a_new_leaf_gets_the_primary_key_the_unconfirmed_index_and_the_brin_index():
    (name,) = partitions_ensure(bar="1H", start=utc(2032, 6, 1), end=utc(2032, 6, 2))
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [name])
        definitions = " | ".join(row[0] for row in cursor.fetchall())
    assert "UNIQUE INDEX" in definitions
    assert "(instrument_id, timeframe_id, open_time)" in definitions
    assert "WHERE (NOT confirmed)" in definitions
    assert "USING brin (open_time)" in definitions


# --- retention's horizon --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_leaf_behind_the_horizon_is_not_made_and_its_rows_count_as_expired(btc):
    now = timezone.now()
    eight_days_ago = (now - timedelta(days=8)).replace(microsecond=0)
    day = leaf_name("1s", leaf_range("1s", eight_days_ago)[0])
    assert Timeframe.objects.get(code="1s").retention == timedelta(days=7)

    result = candles_upsert(rows=[build_row(eight_days_ago, bar="1s"), build_row(now.replace(microsecond=0),
                                                                                  bar="1s")])

    assert (result.expired, result.inserted, result.unchanged, result.rejected) == (1, 1, 0, [])
    assert not attached(day)
    assert partitions_ensure(bar="1s", start=eight_days_ago, end=eight_days_ago + timedelta(seconds=1)) == []
    assert not attached(day)
    assert Candle.objects.count() == 1


@pytest.mark.django_db
def test_a_candle_just_inside_the_horizon_is_stored_in_the_leaf_the_horizon_cuts(btc):
    inside = (timezone.now() - timedelta(days=7) + timedelta(minutes=1)).replace(second=0, microsecond=0)

    result = candles_upsert(rows=[build_row(inside, bar="1s")])

    assert (result.inserted, result.expired) == (1, 0)
    assert attached(leaf_name("1s", leaf_range("1s", inside)[0]))


@pytest.mark.django_db
def test_a_lengthened_retention_counts_at_once_even_in_a_process_that_read_the_old_one(btc):
    old = (timezone.now() - timedelta(days=20)).replace(microsecond=0)
    assert candles_upsert(rows=[build_row(old, bar="1s")]).expired == 1

    Timeframe.objects.filter(code="1s").update(retention=timedelta(days=30))

    assert candles_upsert(rows=[build_row(old, bar="1s")]).inserted == 1


@pytest.mark.django_db
def test_a_bar_without_retention_keeps_everything(btc):
    assert Timeframe.objects.get(code="1m").retention is None
    assert candles_upsert(rows=[build_row(utc(1990, 1, 1, 0, 0))]).inserted == 1


# --- the write path's cache of leaves -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_leaf_dropped_behind_the_writers_back_is_made_again_on_the_next_write(btc):
    assert candles_upsert(rows=[build_row(utc(2019, 3, 5, 12, 0))]).inserted == 1
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE candles_candle_1m_201903")

    result = candles_upsert(rows=[build_row(utc(2019, 3, 5, 12, 0), version=5)])

    assert (result.inserted, result.updated, result.unchanged) == (1, 0, 0)
    assert attached("candles_candle_1m_201903")


@pytest.mark.django_db
@pytest.mark.parametrize("json_batch_max", [10**9, 0], ids=["json", "staging"])
def test_inserts_and_updates_are_counted_per_row_across_bars_and_leaves(btc, monkeypatch, json_batch_max):
    from candles import storage

    monkeypatch.setattr(storage, "JSON_BATCH_MAX", json_batch_max)
    now = timezone.now().replace(microsecond=0)
    first = [build_row(utc(2019, 3, 31, 23, 59)), build_row(utc(2019, 4, 1, 0, 0)), build_row(now, bar="1s"),
             build_row(utc(2024, 1, 16, 16), bar="1D")]
    assert (candles_upsert(rows=first).inserted, Candle.objects.count()) == (4, 4)

    # Newer versions that change the candle (an identical one would write nothing), a new row, an older version.
    second = [row._replace(version=2_000, close="106") for row in first[1:]] + [build_row(utc(2019, 5, 1, 0, 0)),
                                                                                first[0]._replace(version=1)]
    result = candles_upsert(rows=second)

    assert (result.inserted, result.updated, result.unchanged, result.written) == (1, 3, 1, 4)


# --- close-out -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_close_out_rebuilds_and_freezes_one_closed_leaf_and_then_leaves_it_alone(btc):
    rows = [build_row(utc(2003, 5, 1) + timedelta(minutes=m), version=1, confirmed=False) for m in range(300)]
    candles_upsert(rows=rows)
    candles_upsert(rows=[row._replace(version=2, confirmed=True) for row in rows])  # the confirms: new versions
    name = "candles_candle_1m_200305"
    now = utc(2003, 6, 1) + partitions.CLOSE_OUT_AFTER

    assert partition_close_out(now=now - timedelta(seconds=1)) != name  # not closed long enough yet
    assert partition_close_out(now=now) == name

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT age(c.relfrozenxid) < (SELECT min(age(xmin)) FROM {name}), c.reloptions, "
                       "obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relname = %s", [name])
        frozen, options, comment = cursor.fetchone()
    assert frozen  # every row's inserting transaction lies behind the table's frozen horizon
    assert options == ["fillfactor=100"]
    assert comment.startswith("okx-candles: closed out")
    assert partition_close_out(now=now) != name


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_close_out_leaves_alone_a_leaf_that_retention_is_to_retire(btc):
    # A month of its own: leaves outlive a test's rollback, and the test above closes out May 2003.
    candles_upsert(rows=[build_row(utc(2003, 8, 1) + timedelta(minutes=m), version=1) for m in range(10)])
    name = "candles_candle_1m_200308"
    now = utc(2003, 9, 1) + partitions.CLOSE_OUT_AFTER
    Timeframe.objects.filter(code="1m").update(retention=timedelta(days=1))  # its end is behind the horizon

    assert partition_close_out(now=now) != name

    Timeframe.objects.filter(code="1m").update(retention=None)
    assert partition_close_out(now=now) == name


@pytest.mark.django_db
def test_close_out_refuses_to_run_inside_a_transaction():
    with pytest.raises(RuntimeError, match="outside a transaction"):
        partition_close_out(now=timezone.now())
