"""`candles_upsert`, the one write path: the monotone rules, counts, exact decimals and rejected rows.

State a test needs beforehand is stored through the ORM, so that most tests call the write path once
and stay inside the per-test transaction. Every test runs on both strategies of the write path (one statement
from one JSON parameter for small batches, a staging table for large ones), whatever the size of its batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from candles import storage
from candles.bars import datetime_to_ms
from candles.models import Candle, CandleRecord
from candles.storage import CandleRow, candles_upsert
from tests.conftest import build_row

T0 = datetime(2024, 1, 16, 19, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture(autouse=True, params=["json", "staging"])
def strategy(request, monkeypatch) -> str:
    monkeypatch.setattr(storage, "JSON_BATCH_MAX", 10**9 if request.param == "json" else 0)
    return request.param


def at(minutes: int) -> datetime:
    return T0 + minutes * MINUTE


def stored(inst, code: str, open_time: datetime) -> Candle:
    return Candle.objects.get(instrument=inst, timeframe__code=code, open_time=open_time)


def exactly(value: Decimal | None) -> tuple | None:
    """Digits and exponent: Decimal('43000.0') == Decimal('43000') but they differ here."""
    return None if value is None else value.as_tuple()


# --- writing and counting -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_of_new_candles_is_inserted_and_counted(btc, candle_row):
    rows = [candle_row(at(i), version=100 + i, close=f"10{i}") for i in range(3)]

    result = candles_upsert(rows=rows)

    assert (result.received, result.inserted, result.updated, result.unchanged) == (3, 3, 0, 0)
    assert (result.skipped_open_rest, result.rejected, result.written) == (0, [], 3)
    candles = list(Candle.objects.filter(instrument=btc).order_by("open_time"))
    assert [c.open_time for c in candles] == [at(0), at(1), at(2)]
    assert [c.close for c in candles] == [Decimal("100"), Decimal("101"), Decimal("102")]
    assert [c.version for c in candles] == [100, 101, 102]
    assert all(c.timeframe.code == "1m" and c.source == "ws" and c.confirmed for c in candles)


@pytest.mark.django_db
def test_each_strategy_writes_the_batch_its_own_way(btc, candle_row, strategy):
    rows = [candle_row(at(i)) for i in range(3)] + [candle_row(at(3), open="abc")]

    with CaptureQueriesContext(connection) as queries:
        candles_upsert(rows=rows[:3])
    with CaptureQueriesContext(connection) as fallback:
        result = candles_upsert(rows=rows)  # text that is not a number: the staging path names the column

    staged = [q["sql"] for q in queries if "candle_staging" in q["sql"]]
    merged = [q["sql"] for q in queries if "INSERT INTO candles_candle" in q["sql"]]
    assert (len(merged), bool(staged)) == ((1, False) if strategy == "json" else (1, True))
    assert any("CREATE TEMPORARY TABLE candle_staging_text" in q["sql"] for q in fallback)
    assert [(r.index, "open" in r.reason) for r in result.rejected] == [(3, True)]


@pytest.mark.django_db
def test_an_empty_batch_writes_nothing_and_counts_nothing(btc, candle_table):
    result = candles_upsert(rows=[])
    assert (result.received, result.written, result.unchanged, result.rejected) == (0, 0, 0, [])
    assert candle_table() == []


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_same_batch_written_twice_leaves_the_table_exactly_as_the_first_write_left_it(
    btc, candle_row, candle_table
):
    rows = [candle_row(at(i), version=100 + i) for i in range(5)]
    rows += [candle_row(at(5), confirmed=False, version=200), candle_row(at(6), source="rest", version=300)]

    first = candles_upsert(rows=rows)
    after_first = candle_table()
    second = candles_upsert(rows=rows)

    assert (first.inserted, first.updated) == (7, 0)
    assert (second.inserted, second.updated, second.unchanged, second.rejected) == (0, 0, 7, [])
    assert candle_table() == after_first  # every column: nothing was rewritten


@pytest.mark.django_db
def test_two_batches_written_inside_one_outer_transaction_both_land(btc, candle_row):
    # Callers may already be in a transaction (a Django TestCase, ATOMIC_REQUESTS, a task that writes
    # several pages at once); the staging table must not outlive one call.
    with transaction.atomic():
        first = candles_upsert(rows=[candle_row(at(0))])
        second = candles_upsert(rows=[candle_row(at(1))])

    assert (first.inserted, second.inserted) == (1, 1)
    assert Candle.objects.filter(instrument=btc).count() == 2


@pytest.mark.django_db
def test_a_batch_that_raised_can_be_written_again_once_fixed(btc, candle_row):
    beyond_timestamps = 4_611_686_018_427_360_000  # a bigint on a minute boundary, far past year 294276
    with pytest.raises(DataError):
        candles_upsert(rows=[candle_row(at(0)), candle_row(beyond_timestamps)])

    result = candles_upsert(rows=[candle_row(at(0)), candle_row(at(1))])

    assert result.inserted == 2


@pytest.mark.django_db
def test_counts_add_up_over_a_mixed_batch(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [at(0)], confirmed=True, version=10)
    stored_candles(btc, "1m", [at(1)], confirmed=False, version=10)
    rows = [
        candle_row(at(0), confirmed=False, version=20),  # unchanged: confirmed stays
        candle_row(at(1), confirmed=False, version=20, vol="2"),  # updated: further on (more volume)
        candle_row(at(2)),  # inserted
        candle_row(at(3), source="rest", confirmed=False),  # skipped: open candle from REST
        candle_row(at(4), high="1"),  # rejected
    ]

    result = candles_upsert(rows=rows)

    assert (result.received, result.inserted, result.updated, result.unchanged) == (5, 1, 1, 1)
    assert result.skipped_open_rest == 1
    assert [r.index for r in result.rejected] == [4]


@pytest.mark.django_db
def test_rejected_rows_keep_their_batch_index_across_a_large_batch(btc, candle_row):
    # Thousands of rows fill many pages of the staging table: the reported indices are still the caller's.
    bad = {0, 1, 777, 2_500, 4_999}
    rows = [candle_row(at(i), high="1") if i in bad else candle_row(at(i)) for i in range(5_000)]

    result = candles_upsert(rows=rows)

    assert [(r.index, r.row) for r in result.rejected] == [(i, rows[i]) for i in sorted(bad)]
    assert result.inserted == 5_000 - len(bad)


# --- the monotone rules ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_confirmed_candle_is_never_replaced_by_an_unconfirmed_one_even_with_a_newer_version(
    btc, candle_row, stored_candles
):
    stored_candles(btc, "1m", [T0], confirmed=True, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[candle_row(T0, confirmed=False, version=99, close="108")])

    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 1)
    candle = stored(btc, "1m", T0)
    assert (candle.confirmed, candle.version, candle.close) == (True, 10, Decimal("105"))


@pytest.mark.django_db
def test_an_open_candle_is_replaced_by_a_newer_version(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [T0], confirmed=False, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[candle_row(T0, confirmed=False, version=11, close="106", high="111")])

    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 0)
    candle = stored(btc, "1m", T0)
    assert (candle.confirmed, candle.version, candle.close, candle.high) == (False, 11, Decimal("106"), Decimal("111"))


@pytest.mark.django_db
def test_an_open_candle_is_not_replaced_by_an_older_version(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [T0], confirmed=False, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[candle_row(T0, confirmed=False, version=9, close="106")])

    assert (result.updated, result.unchanged) == (0, 1)
    assert (stored(btc, "1m", T0).version, stored(btc, "1m", T0).close) == (10, Decimal("105"))


@pytest.mark.django_db
def test_an_open_candle_is_not_replaced_by_the_same_version(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [T0], confirmed=False, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[candle_row(T0, confirmed=False, version=10, close="106")])

    assert (result.updated, result.unchanged) == (0, 1)
    assert stored(btc, "1m", T0).close == Decimal("105")


@pytest.mark.django_db
def test_a_confirmed_candle_with_a_newer_version_replaces_an_open_one(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [T0], confirmed=False, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[candle_row(T0, confirmed=True, version=11, close="107", source="rest")])

    assert (result.updated, result.unchanged) == (1, 0)
    candle = stored(btc, "1m", T0)
    assert (candle.confirmed, candle.version, candle.close, candle.source) == (True, 11, Decimal("107"), "rest")


@pytest.mark.django_db
def test_a_confirmed_row_replaces_an_open_candle_whatever_its_version(btc, candle_row, stored_candles):
    # Two collectors of one shard stamp versions with two clocks: the confirm of the one whose clock is behind
    # must still close the candle the other left open. The stored version still grows.
    stored_candles(btc, "1m", [T0], confirmed=False, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[candle_row(T0, confirmed=True, version=9, close="107")])

    assert (result.updated, result.unchanged) == (1, 0)
    row = stored(btc, "1m", T0)
    assert (row.confirmed, row.close, row.version) == (True, Decimal("107"), 11)


@pytest.mark.django_db
def test_between_open_versions_the_volume_decides_not_the_receipt_time(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [at(0), at(1)], confirmed=False, version=100, vol=Decimal("2"))

    result = candles_upsert(rows=[
        candle_row(at(0), confirmed=False, version=50, vol="2.5", close="106"),  # further on, older clock
        candle_row(at(1), confirmed=False, version=900, vol="1.9", close="104"),  # behind, newer clock
    ])

    assert (result.updated, result.unchanged) == (1, 1)
    assert (stored(btc, "1m", at(0)).close, stored(btc, "1m", at(0)).version) == (Decimal("106"), 101)
    assert (stored(btc, "1m", at(1)).close, stored(btc, "1m", at(1)).version) == (Decimal("105"), 100)


@pytest.mark.django_db
def test_a_mark_candle_without_volume_is_ordered_by_its_high_then_its_low(candle_row, instrument, stored_candles):
    mark = instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    none = {"vol": None, "vol_ccy": None, "vol_ccy_quote": None}
    stored_candles(mark, "1m", [at(0), at(1), at(2), at(3)], confirmed=False, version=100, **none)

    def row(minute: int, version: int, **fields) -> CandleRow:
        return candle_row(at(minute), inst_id="BTC-USDT-SWAP", price="mark", confirmed=False, version=version,
                          **none, **fields)

    candles_upsert(rows=[
        row(0, 50, high="111", close="111"),  # a higher high: further on
        row(1, 900, high="109", low="89", close="100"),  # a lower high: behind, whatever its low
        row(2, 50, low="89", close="89"),  # the same high, a lower low: further on
        row(3, 90, close="101"),  # the same range: only the version can say, and it is older
    ])

    closes = [stored(mark, "1m", at(minute)).close for minute in range(4)]
    assert closes == [Decimal("111"), Decimal("105"), Decimal("89"), Decimal("105")]


@pytest.mark.django_db
def test_a_re_sent_identical_state_writes_nothing_but_a_changed_text_is_written(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [at(0), at(1)], confirmed=True, version=100, close=Decimal("105.0"))

    result = candles_upsert(rows=[candle_row(at(0), version=200, close="105.0"),  # the other replica's copy
                                  candle_row(at(1), version=200, close="105.00", source="rest")])

    assert (result.updated, result.unchanged) == (1, 1)
    assert stored(btc, "1m", at(0)).version == 100
    assert (str(stored(btc, "1m", at(1)).close), stored(btc, "1m", at(1)).version) == ("105.00", 200)


@pytest.mark.django_db
def test_a_newer_confirmed_candle_corrects_an_older_confirmed_one_but_not_the_reverse(
    btc, candle_row, stored_candles
):
    stored_candles(btc, "1m", [at(0)], confirmed=True, version=10, close=Decimal("105"))
    stored_candles(btc, "1m", [at(1)], confirmed=True, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[
        candle_row(at(0), version=11, close="104", source="rest"),
        candle_row(at(1), version=9, close="104", source="rest"),
    ])

    assert (result.updated, result.unchanged) == (1, 1)
    assert (stored(btc, "1m", at(0)).close, stored(btc, "1m", at(0)).source) == (Decimal("104"), "rest")
    assert (stored(btc, "1m", at(1)).close, stored(btc, "1m", at(1)).source) == (Decimal("105"), "ws")


@pytest.mark.django_db
def test_an_update_moves_the_receipt_time_the_admin_shows_and_an_unchanged_row_keeps_it(
    btc, candle_row, stored_candles
):
    # The row keeps no update time of its own: the version is the receipt time, and the admin's view reads it.
    received = datetime(2024, 1, 16, 19, 0, 5, tzinfo=UTC)
    version = datetime_to_ms(received) * 1000
    stored_candles(btc, "1m", [at(0), at(1)], confirmed=False, version=version)

    # A new close at the same volume, high and low: the data cannot order them, so the version does.
    candles_upsert(rows=[candle_row(at(0), confirmed=False, version=version + 1_000_000, close="106"),
                         candle_row(at(1), confirmed=False, version=version - 1, close="104")])

    shown = {r.open_time: r.updated_at for r in CandleRecord.objects.filter(instrument=btc)}
    assert shown == {at(0): received + timedelta(seconds=1), at(1): received}


# --- REST ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_open_candles_from_rest_are_not_stored_but_counted_while_closed_ones_are_stored(btc, candle_row):
    rows = [
        candle_row(at(1), source="rest", confirmed=False, version=50),
        candle_row(at(0), source="rest", confirmed=True, version=50),
    ]

    result = candles_upsert(rows=rows)

    assert (result.skipped_open_rest, result.inserted, result.unchanged, result.rejected) == (1, 1, 0, [])
    assert [(c.open_time, c.source, c.confirmed) for c in Candle.objects.filter(instrument=btc)] == [
        (at(0), "rest", True),
    ]


@pytest.mark.django_db
def test_an_open_candle_from_rest_leaves_the_stored_open_candle_alone_even_when_newer(
    btc, candle_row, stored_candles
):
    stored_candles(btc, "1m", [T0], confirmed=False, version=10, close=Decimal("105"))

    result = candles_upsert(rows=[candle_row(T0, source="rest", confirmed=False, version=99, close="95")])

    assert (result.skipped_open_rest, result.updated, result.unchanged) == (1, 0, 0)
    candle = stored(btc, "1m", T0)
    assert (candle.source, candle.version, candle.close) == ("ws", 10, Decimal("105"))


# --- duplicate keys within one batch -------------------------------------------------------------


@pytest.mark.django_db
def test_within_a_batch_the_confirmed_row_of_a_key_wins_over_newer_open_ones(btc, candle_row):
    rows = [
        candle_row(T0, confirmed=False, version=5, close="101"),
        candle_row(T0, confirmed=True, version=1, close="105"),
        candle_row(T0, confirmed=False, version=9, close="109"),
    ]

    result = candles_upsert(rows=rows)

    assert (result.received, result.inserted, result.updated, result.unchanged) == (3, 1, 0, 2)
    candle = stored(btc, "1m", T0)
    assert (candle.confirmed, candle.version, candle.close) == (True, 1, Decimal("105"))


@pytest.mark.django_db
@pytest.mark.parametrize("confirmed", [False, True])
def test_within_a_batch_the_highest_version_of_a_key_wins_whatever_the_order(btc, candle_row, confirmed):
    rows = [
        candle_row(T0, confirmed=confirmed, version=5, close="105"),
        candle_row(T0, confirmed=confirmed, version=9, close="109"),
        candle_row(T0, confirmed=confirmed, version=7, close="107"),
    ]

    result = candles_upsert(rows=rows)

    assert (result.inserted, result.unchanged) == (1, 2)
    assert (stored(btc, "1m", T0).version, stored(btc, "1m", T0).close) == (9, Decimal("109"))


@pytest.mark.django_db
def test_duplicates_in_a_batch_update_a_stored_open_candle_once_with_the_newest(btc, candle_row, stored_candles):
    stored_candles(btc, "1m", [T0], confirmed=False, version=10)

    result = candles_upsert(rows=[
        candle_row(T0, confirmed=False, version=12, close="102"),
        candle_row(T0, confirmed=False, version=11, close="101"),
    ])

    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)
    assert (stored(btc, "1m", T0).version, stored(btc, "1m", T0).close) == (12, Decimal("102"))


@pytest.mark.django_db
def test_the_same_open_time_on_other_bars_and_instruments_are_different_candles(btc, instrument, candle_row):
    instrument("ETH-USDT")
    rows = [
        candle_row(T0, bar="1m"), candle_row(T0, bar="1H"), candle_row(T0, bar="1m", inst_id="ETH-USDT"),
    ]

    result = candles_upsert(rows=rows)

    assert (result.inserted, result.unchanged) == (3, 0)
    assert Candle.objects.count() == 3


# --- exact decimals ------------------------------------------------------------------------------

# Rows from shared/okx/samples/rest_candles.json: [ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm].
SAMPLE_ROWS = {
    ("BTC-USDT", "1H"): [
        ["1705431600000", "43016", "43183.8", "42946", "43169.7", "404.74017381", "17447600.212916623",
         "17447600.212916623", "1"],
        ["1705428000000", "43053.3", "43157.4", "42836.5", "43016", "385.88107189", "16589516.212133739",
         "16589516.212133739", "1"],
        ["1705424400000", "43250.9", "43250.9", "43035.1", "43048.1", "333.55276206", "14383538.301882162",
         "14383538.301882162", "1"],
        ["1705420800000", "43253.6", "43440.2", "43000", "43250.9", "942.87870026", "40743115.773175484",
         "40743115.773175484", "1"],
    ],
    ("BTC-USDT-SWAP", "1H"): [
        ["1718658000000", "66401", "66734", "66310.1", "66575.3", "201605.6", "2016.056", "134181486.8892", "1"],
        ["1718654400000", "66684", "66765.1", "66171.3", "66400.6", "532566.8", "5325.668", "353728101.5321", "1"],
    ],
    ("BTC-USD-SWAP", "1m"): [
        ["1678928760000", "24341.4", "24344", "24313.2", "24323", "628", "2.5819", "62800", "0"],
        ["1678928700000", "24324.1", "24347.6", "24321.7", "24341.4", "2565", "10.5401", "256500", "1"],
        ["1678928640000", "24300.2", "24324.1", "24288", "24324.1", "3304", "13.5937", "330400", "1"],
    ],
}


def sample_rows() -> list[CandleRow]:
    rows = []
    for (inst_id, bar), data in SAMPLE_ROWS.items():
        for ts, o, h, low, c, vol, vol_ccy, vol_ccy_quote, confirm in data:
            rows.append(CandleRow(inst_id, bar, int(ts), o, h, low, c, vol, vol_ccy, vol_ccy_quote,
                                  confirm == "1", "ws", 1_000))
    return rows


@pytest.mark.django_db
def test_the_okx_samples_read_back_digit_for_digit(instrument):
    for inst_id, _ in SAMPLE_ROWS:
        instrument(inst_id, inst_type="SWAP" if inst_id.endswith("SWAP") else "SPOT")
    rows = sample_rows()

    result = candles_upsert(rows=rows)

    assert (result.inserted, result.rejected) == (len(rows), [])
    fields = ("open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote")
    for row in rows:
        candle = Candle.objects.get(
            instrument__inst_id=row.inst_id, timeframe__code=row.bar,
            open_time=datetime.fromtimestamp(row.open_time_ms / 1000, tz=UTC),
        )
        for name in fields:
            assert exactly(getattr(candle, name)) == exactly(Decimal(getattr(row, name))), (row, name)
        assert candle.confirmed == row.confirmed


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["17447600.212916623", "0.00000001", "43000", "43000.0", "0", "0.10"])
@pytest.mark.parametrize("as_type", [str, Decimal], ids=["str", "Decimal"])
def test_a_decimal_is_stored_with_every_digit_and_its_scale(btc, candle_row, text, as_type):
    value = as_type(text)
    row = candle_row(T0, open=value, high=value, low=value, close=value, vol=value, vol_ccy=value,
                     vol_ccy_quote=value)

    candles_upsert(rows=[row])

    candle = stored(btc, "1m", T0)
    for name in ("open", "high", "low", "close", "vol", "vol_ccy", "vol_ccy_quote"):
        assert exactly(getattr(candle, name)) == exactly(Decimal(text)), name
    if text == "43000.0":
        assert str(candle.close) == "43000.0"


@pytest.mark.django_db
def test_a_missing_quote_volume_from_the_old_seven_field_shape_is_stored_as_null(btc, candle_row):
    result = candles_upsert(rows=[candle_row(at(0), vol_ccy_quote=None), candle_row(at(1))])

    assert (result.inserted, result.rejected) == (2, [])
    assert stored(btc, "1m", at(0)).vol_ccy_quote is None
    assert stored(btc, "1m", at(1)).vol_ccy_quote == Decimal("157.5")


@pytest.mark.django_db
def test_an_empty_quote_volume_is_stored_as_null(btc, candle_row):
    result = candles_upsert(rows=[candle_row(at(0), vol_ccy_quote=""), candle_row(at(1))])

    assert (result.inserted, result.rejected) == (2, [])
    assert stored(btc, "1m", at(0)).vol_ccy_quote is None
    assert exactly(stored(btc, "1m", at(1)).vol_ccy_quote) == exactly(Decimal("157.5"))


# --- rejected rows -------------------------------------------------------------------------------

BAD_ROWS = [
    # id, fields of the bad row, words its reason must contain
    ("high below low", {"open": "90", "close": "90", "low": "90", "high": "85"}, ["high"]),
    ("high below open", {"open": "115", "high": "110"}, ["high", "open"]),
    ("high below close", {"close": "111", "high": "110"}, ["high", "close"]),
    ("low above close", {"close": "95", "low": "96"}, ["low", "close"]),
    ("low above open", {"open": "89", "low": "90"}, ["low", "open"]),
    ("negative vol", {"vol": "-1"}, ["vol", "negative"]),
    ("negative vol_ccy", {"vol_ccy": "-0.5"}, ["vol_ccy", "negative"]),
    ("negative vol_ccy_quote", {"vol_ccy_quote": "-0.5"}, ["vol_ccy_quote", "negative"]),
    ("open abc", {"open": "abc"}, ["open"]),
    ("close abc", {"close": "abc"}, ["close"]),
    ("open empty", {"open": ""}, ["open"]),
    ("vol empty", {"vol": ""}, ["vol"]),
    ("open None", {"open": None}, ["open"]),
    ("close None", {"close": None}, ["close"]),
    ("vol None", {"vol": None}, ["vol"]),
    ("close NaN", {"close": Decimal("NaN")}, ["number"]),
    ("high Infinity", {"high": "Infinity"}, ["number"]),
    ("low -Infinity", {"low": "-Infinity"}, ["number"]),
    ("vol NaN", {"vol": "NaN"}, ["number"]),
    ("vol_ccy_quote Infinity", {"vol_ccy_quote": "Infinity"}, ["number"]),
    ("confirmed None", {"confirmed": None}, ["confirmed"]),
    ("version None", {"version": None}, ["version"]),
    ("version not an integer", {"version": "abc"}, ["version"]),
    ("version a float", {"version": 1.5}, ["version"]),
    ("open time past bigint", {"open_time": 2**63}, ["open time"]),
    ("1H open time off the hour", {"bar": "1H", "open_time": T0 + MINUTE}, ["open time", "1H"]),
    ("1D open time at midnight UTC", {"bar": "1D", "open_time": datetime(2024, 1, 17, tzinfo=UTC)}, ["1D"]),
    ("1M open time at midnight UTC", {"bar": "1M", "open_time": datetime(2024, 2, 1, tzinfo=UTC)}, ["1M"]),
    ("1Mutc open time at Hong Kong midnight", {"bar": "1Mutc", "open_time": datetime(2024, 1, 31, 16, tzinfo=UTC)},
     ["1Mutc"]),
    ("unknown instrument", {"inst_id": "NOPE-USDT"}, ["instrument", "NOPE-USDT"]),
    ("bar in the wrong case", {"bar": "1h"}, ["bar", "1h"]),
    ("1m spelled 1M would be a month", {"bar": "1M"}, ["1M"]),
    ("unknown source", {"source": "rpc"}, ["source"]),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("fields", "words"), [case[1:] for case in BAD_ROWS], ids=[case[0] for case in BAD_ROWS])
def test_an_invalid_row_is_rejected_with_its_index_and_a_reason_and_the_valid_rows_still_land(
    btc, candle_row, candle_table, fields, words
):
    bad = candle_row(**{"open_time": at(1), **fields})
    rows = [candle_row(at(0)), bad, candle_row(at(2))]

    result = candles_upsert(rows=rows)

    assert [(r.index, r.row) for r in result.rejected] == [(1, bad)]
    reason = result.rejected[0].reason
    assert all(word.lower() in reason.lower() for word in words), reason
    assert (result.inserted, result.updated, result.unchanged, result.skipped_open_rest) == (2, 0, 0, 0)
    assert [c.open_time for c in Candle.objects.order_by("open_time")] == [at(0), at(2)]


@pytest.mark.django_db
@pytest.mark.parametrize("with_unparsable_row", [False, True], ids=["typed copy", "text fallback"])
def test_exponent_notation_is_the_same_exact_number_on_both_staging_paths(btc, candle_row, with_unparsable_row):
    # Python renders Decimal("0.00000001") as "1E-8"; both ways in must store the same number.
    rows = [candle_row(at(0), vol="1E-8", vol_ccy=Decimal("0.00000001"), vol_ccy_quote="1e2")]
    if with_unparsable_row:
        rows.append(candle_row(at(1), open="abc"))

    result = candles_upsert(rows=rows)

    assert result.inserted == 1
    candle = stored(btc, "1m", at(0))
    assert (candle.vol, candle.vol_ccy, candle.vol_ccy_quote) == (
        Decimal("0.00000001"), Decimal("0.00000001"), Decimal("100"),
    )


@pytest.mark.django_db
def test_rejected_rows_point_at_the_callers_index_when_duplicates_and_unparsable_text_share_the_batch(
    btc, candle_row
):
    rows = [
        candle_row(at(0), version=1),
        candle_row(at(0), version=2),  # a twin: loses nothing, settles to one row
        candle_row(at(1), close="abc"),  # text that is not a number
        candle_row(at(2)),
        candle_row(at(3), high="1"),  # numbers that break the candle's shape
        candle_row(at(4), inst_id="NOPE-USDT"),
    ]

    result = candles_upsert(rows=rows)

    assert [(r.index, r.row) for r in result.rejected] == [(2, rows[2]), (4, rows[4]), (5, rows[5])]
    assert "close" in result.rejected[0].reason
    assert (result.inserted, result.unchanged) == (2, 1)
    assert stored(btc, "1m", at(0)).version == 2


@pytest.mark.django_db
def test_a_rejected_row_does_not_touch_the_stored_candle_of_its_key(btc, candle_row, stored_candles, candle_table):
    stored_candles(btc, "1m", [T0], confirmed=False, version=10)
    before = candle_table()

    result = candles_upsert(rows=[candle_row(T0, confirmed=True, version=11, high="1")])

    assert [r.index for r in result.rejected] == [0]
    assert (result.updated, result.unchanged) == (0, 0)
    assert candle_table() == before


# --- errors roll the whole batch back -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad",
    [
        build_row(4_611_686_018_427_360_000),  # on a minute boundary, but past the last timestamp
        build_row(inst_id="BTC\x00USDT"),  # text PostgreSQL cannot hold
    ],
    ids=["open time past the last timestamp", "NUL byte in the instrument"],
)
def test_an_error_inside_the_batch_propagates_and_writes_nothing_of_it(
    btc, candle_row, stored_candles, candle_table, bad
):
    stored_candles(btc, "1m", [at(0)], confirmed=False, version=10)
    before = candle_table()
    rows = [candle_row(at(0), confirmed=True, version=11), candle_row(at(1)), bad, candle_row(at(2))]

    with pytest.raises((DataError, psycopg.DataError)):
        candles_upsert(rows=rows)

    assert candle_table() == before



@pytest.mark.django_db
def test_a_newer_open_rest_twin_does_not_hide_the_websocket_row_of_the_same_key(btc, candle_row):
    ws = candle_row(at(0), confirmed=False, source="ws", version=1, close="101")
    rest = candle_row(at(0), confirmed=False, source="rest", version=2, close="102")

    result = candles_upsert(rows=[ws, rest])

    assert (result.inserted, result.skipped_open_rest) == (1, 1)
    assert stored(btc, "1m", at(0)).close == Decimal("101")


@pytest.mark.django_db
def test_an_invalid_confirmed_twin_does_not_hide_a_valid_open_row_of_the_same_key(btc, candle_row):
    valid = candle_row(at(0), confirmed=False, version=1)
    invalid = candle_row(at(0), confirmed=True, version=2, high="1")

    result = candles_upsert(rows=[valid, invalid])

    assert [r.index for r in result.rejected] == [1]
    assert result.inserted == 1
    assert stored(btc, "1m", at(0)).confirmed is False


# --- price kinds: trade, mark and index candles -----------------------------------------------------


@pytest.fixture
def swap_and_index(instrument):
    """BTC-USDT-SWAP's trade and mark series, and the index BTC-USDT beside the spot pair BTC-USDT."""
    return {
        "trade": instrument("BTC-USDT-SWAP", inst_type="SWAP"),
        "mark": instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark"),
        "spot": instrument("BTC-USDT"),
        "index": instrument("BTC-USDT", inst_type="INDEX", price="index"),
    }


def mark_row(candle_row, open_time=None, *, inst_id="BTC-USDT-SWAP", price="mark", **fields):
    volumes = {"vol": None, "vol_ccy": None, "vol_ccy_quote": None} | fields
    return candle_row(at(0) if open_time is None else open_time, inst_id=inst_id, price=price, **volumes)


@pytest.mark.django_db
def test_mark_and_trade_candles_of_one_instrument_and_bar_are_separate_series(swap_and_index, candle_row):
    result = candles_upsert(rows=[
        candle_row(at(0), inst_id="BTC-USDT-SWAP", close="105"),
        mark_row(candle_row, close="104.9"),
        candle_row(at(0), inst_id="BTC-USDT", close="106"),
        mark_row(candle_row, inst_id="BTC-USDT", price="index", close="105.95"),
    ])
    assert (result.inserted, result.rejected) == (4, [])
    trade, mark = stored(swap_and_index["trade"], "1m", at(0)), stored(swap_and_index["mark"], "1m", at(0))
    assert (str(trade.close), str(trade.vol)) == ("105", "1.5")
    assert (str(mark.close), mark.vol, mark.vol_ccy, mark.vol_ccy_quote) == ("104.9", None, None, None)
    assert str(stored(swap_and_index["spot"], "1m", at(0)).close) == "106"
    assert str(stored(swap_and_index["index"], "1m", at(0)).close) == "105.95"


@pytest.mark.django_db
def test_the_rules_of_trade_candles_hold_for_mark_candles(swap_and_index, candle_row):
    candles_upsert(rows=[mark_row(candle_row, close="104", confirmed=True, version=10)])
    again = candles_upsert(rows=[mark_row(candle_row, close="103", confirmed=False, version=20),
                                 mark_row(candle_row, close="102", confirmed=True, version=5)])
    assert (again.written, again.unchanged) == (0, 2)  # confirmed is final; older never replaces newer
    assert str(stored(swap_and_index["mark"], "1m", at(0)).close) == "104"


@pytest.mark.django_db
def test_volumes_belong_to_trade_candles_only(swap_and_index, candle_row):
    result = candles_upsert(rows=[
        mark_row(candle_row, vol="1"),  # a mark candle with a volume
        candle_row(at(1), inst_id="BTC-USDT-SWAP", vol=None),  # a trade candle without one
        mark_row(candle_row, at(2), inst_id="BTC-USDT-SWAP-X"),  # no such mark series
        mark_row(candle_row, at(3), inst_id="BTC-USDT", price="mark"),  # spot pairs have no mark price
    ])
    assert [(item.index, item.reason) for item in result.rejected] == [
        (0, "mark candles carry no volumes"),
        (1, "vol is missing"),
        (2, "unknown instrument 'BTC-USDT-SWAP-X' (mark price)"),
        (3, "unknown instrument 'BTC-USDT' (mark price)"),
    ]
