"""The candle table becomes partitioned and compact (issue 15; docs/storage-design.md §1–§3).

    candles_candle                         PARTITION BY LIST (timeframe_id)
      candles_candle_<slug>                PARTITION BY RANGE (open_time), one per bar
        candles_candle_<slug>_<start>      a UTC day (1s), month (1m, 3m, 5m) or year (others); fillfactor 100

The row loses `updated_at` (the version is the receipt time, and the admin's view derives it), stores
`source` as one byte ("char": w/r) and puts its fixed-width columns first: 135.9 B per closed candle against
164.3 measured. Dropping the column in place would save nothing (the row keeps a null for it), so the table
is rebuilt:

1. the old table is locked IN EXCLUSIVE MODE: readers go on, writers wait (the flush keeps its batch in Redis
   and retries), so no row can arrive after the copy;
2. one GROUP BY pass finds the leaves the stored rows need, and the leaves around now are made too;
3. the rows are copied in key order, and only then are the indexes built (one sort per leaf: dense);
4. the two tables' counts are compared and the migration fails on any difference, leaving the old table as
   it was; then the tables are swapped and the admin's view recreated.

About 6.5 s per million rows on the development machine. The reverse copies back into a plain table of the
old shape; `updated_at` then comes from the version. The names and sizes of leaves are frozen here as they
were when this ran: `candles/partitions.py` owns them from now on, and its tests hold the two equal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import django.contrib.postgres.indexes
from django.db import migrations
from django.utils import timezone

import candles.fields

_MONTHLY = ("1m", "3m", "5m")
_NAME_FORMAT = {"day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}
_HOT = ("autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_insert_scale_factor = 0, "
        "autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.02, ")
_HOT_THRESHOLDS = {
    "day": "autovacuum_vacuum_threshold = 50000, autovacuum_vacuum_insert_threshold = 500000",
    "month": "autovacuum_vacuum_threshold = 100000, autovacuum_vacuum_insert_threshold = 1000000",
    "year": "autovacuum_vacuum_threshold = 100000, autovacuum_vacuum_insert_threshold = 1000000",
}


def unit_of(code: str) -> str:
    return "day" if code == "1s" else "month" if code in _MONTHLY else "year"


def slug_of(code: str) -> str:
    return code.replace("M", "mo").lower()


def unit_floor(unit: str, moment: datetime) -> datetime:
    m = moment.astimezone(UTC)
    return datetime(m.year, m.month if unit != "year" else 1, m.day if unit == "day" else 1, tzinfo=UTC)


def unit_add(unit: str, start: datetime, units: int) -> datetime:
    if unit == "day":
        return start + timedelta(days=units)
    if unit == "month":
        index = start.year * 12 + start.month - 1 + units
        return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return datetime(start.year + units, 1, 1, tzinfo=UTC)


COMPACT_TABLE = """
CREATE TABLE candles_candle_new (
    open_time timestamptz NOT NULL,
    version bigint NOT NULL,
    instrument_id integer NOT NULL,
    timeframe_id smallint NOT NULL,
    confirmed boolean NOT NULL,
    source "char" NOT NULL,
    open numeric NOT NULL,
    high numeric NOT NULL,
    low numeric NOT NULL,
    close numeric NOT NULL,
    vol numeric NOT NULL,
    vol_ccy numeric NOT NULL,
    vol_ccy_quote numeric,
    CONSTRAINT candle_source_known CHECK (source IN ('w', 'r')),
    CONSTRAINT candle_rest_closed_only CHECK (confirmed OR source = 'w')
) PARTITION BY LIST (timeframe_id)
"""

COPY_COMPACT = """
INSERT INTO candles_candle_new (open_time, version, instrument_id, timeframe_id, confirmed, source,
                                open, high, low, close, vol, vol_ccy, vol_ccy_quote)
SELECT open_time, version, instrument_id, timeframe_id, confirmed,
       (CASE source WHEN 'rest' THEN 'r' ELSE 'w' END)::"char", open, high, low, close, vol, vol_ccy, vol_ccy_quote
FROM candles_candle ORDER BY timeframe_id, instrument_id, open_time
"""

COMPACT_INDEXES = [
    "ALTER TABLE candles_candle_new ADD CONSTRAINT candles_candle_new_pkey "
    "PRIMARY KEY (instrument_id, timeframe_id, open_time)",
    "CREATE INDEX candle_unconfirmed_new_idx ON candles_candle_new (timeframe_id, open_time) "
    "INCLUDE (instrument_id) WHERE NOT confirmed",
    "CREATE INDEX candle_open_time_brin_new ON candles_candle_new USING brin (open_time) "
    "WITH (pages_per_range = 32)",
]

COMPACT_SWAP = [
    "DROP VIEW candles_candle_record",
    "DROP TABLE candles_candle",
    "ALTER TABLE candles_candle_new RENAME TO candles_candle",
    "ALTER INDEX candles_candle_new_pkey RENAME TO candles_candle_pkey",
    "ALTER INDEX candle_unconfirmed_new_idx RENAME TO candle_unconfirmed_idx",
    "ALTER INDEX candle_open_time_brin_new RENAME TO candle_open_time_brin",
    # The admin's view keeps its columns: the source spelled out, updated_at read from the receipt version.
    """CREATE VIEW candles_candle_record AS
SELECT instrument_id || '.' || timeframe_id || '.' || (extract(epoch FROM open_time) * 1000)::bigint AS key,
       instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed,
       (CASE source WHEN 'r' THEN 'rest' ELSE 'ws' END)::varchar(4) AS source, version,
       timestamptz 'epoch' + version * interval '1 microsecond' AS updated_at
FROM candles_candle""",
]

# The shape of migrations 0001–0009, for the reverse.
PLAIN_TABLE = """
CREATE TABLE candles_candle_old (
    open_time timestamptz NOT NULL,
    open numeric NOT NULL,
    high numeric NOT NULL,
    low numeric NOT NULL,
    close numeric NOT NULL,
    vol numeric NOT NULL,
    vol_ccy numeric NOT NULL,
    vol_ccy_quote numeric NULL,
    confirmed boolean NOT NULL,
    source varchar(4) NOT NULL,
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    instrument_id integer NOT NULL,
    timeframe_id smallint NOT NULL,
    CONSTRAINT candle_source_known CHECK (source IN ('ws', 'rest')),
    CONSTRAINT candle_rest_closed_only CHECK (confirmed OR source = 'ws')
) WITH (fillfactor = 90)
"""

COPY_PLAIN = """
INSERT INTO candles_candle_old (open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, source,
                                version, updated_at, instrument_id, timeframe_id)
SELECT open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed,
       CASE source WHEN 'r' THEN 'rest' ELSE 'ws' END, version,
       timestamptz 'epoch' + version * interval '1 microsecond', instrument_id, timeframe_id
FROM candles_candle ORDER BY instrument_id, timeframe_id, open_time
"""

PLAIN_INDEXES_AND_SWAP = [
    "ALTER TABLE candles_candle_old ADD CONSTRAINT candles_candle_old_pkey "
    "PRIMARY KEY (instrument_id, timeframe_id, open_time)",
    "CREATE INDEX candle_unconfirmed_old_idx ON candles_candle_old (timeframe_id, open_time) "
    "INCLUDE (instrument_id) WHERE NOT confirmed",
]
PLAIN_SWAP = [
    "DROP VIEW candles_candle_record",
    "DROP TABLE candles_candle",
    "ALTER TABLE candles_candle_old RENAME TO candles_candle",
    "ALTER INDEX candles_candle_old_pkey RENAME TO candles_candle_pkey",
    "ALTER INDEX candle_unconfirmed_old_idx RENAME TO candle_unconfirmed_idx",
    """CREATE VIEW candles_candle_record AS
SELECT instrument_id || '.' || timeframe_id || '.' || (extract(epoch FROM open_time) * 1000)::bigint AS key,
       instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote,
       confirmed, source, version, updated_at
FROM candles_candle""",
]


def _counts_agree(cursor, new_table: str) -> None:
    cursor.execute(f"SELECT (SELECT count(*) FROM candles_candle), (SELECT count(*) FROM {new_table})")
    old, new = cursor.fetchone()
    if old != new:
        raise RuntimeError(f"candle migration copied {new} of {old} rows; nothing was changed")


def partition(apps, schema_editor):
    now = timezone.now()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("LOCK TABLE candles_candle IN EXCLUSIVE MODE")
        cursor.execute("SELECT id, code FROM candles_timeframe ORDER BY display_order, id")
        bars = cursor.fetchall()
        slugs = [slug_of(code) for _, code in bars]
        if len(set(slugs)) != len(slugs):
            raise RuntimeError(f"bar codes do not give distinct table names: {sorted(slugs)}")
        cursor.execute(COMPACT_TABLE)
        # One pass over the stored rows: a min/max per bar would read the whole table once per bar, since the
        # key leads with the instrument. Leaves are made for the periods that hold rows, not every period
        # between the first and the last.
        units = ", ".join(f"({tf_id}, '{unit_of(code)}')" for tf_id, code in bars) or "(NULL::smallint, 'year')"
        cursor.execute(f"""
            SELECT c.timeframe_id, date_trunc(u.unit, c.open_time, 'UTC')
            FROM candles_candle c JOIN (VALUES {units}) AS u(id, unit) ON u.id = c.timeframe_id
            GROUP BY 1, 2
        """)
        stored: dict[int, set[datetime]] = {}
        for tf_id, start in cursor.fetchall():
            stored.setdefault(tf_id, set()).add(start.astimezone(UTC))
        for tf_id, code in bars:
            unit, parent = unit_of(code), f"candles_candle_{slug_of(code)}"
            cursor.execute(f'CREATE TABLE "{parent}" PARTITION OF candles_candle_new FOR VALUES IN ({int(tf_id)}) '
                           "PARTITION BY RANGE (open_time)")
            current = unit_floor(unit, now)
            starts = stored.get(tf_id, set()) | {unit_add(unit, current, k) for k in range(-1, 3)}
            for start in sorted(starts):
                end = unit_add(unit, start, 1)
                # Leaves still being written get the hot-leaf autovacuum settings; closed ones only fillfactor.
                options = "fillfactor = 100" + (f", {_HOT}{_HOT_THRESHOLDS[unit]}" if end > now else "")
                name = f"{parent}_{start.strftime(_NAME_FORMAT[unit])}"
                cursor.execute(f'CREATE TABLE "{name}" PARTITION OF "{parent}" '
                               f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}') WITH ({options})")
        cursor.execute(COPY_COMPACT)
        for sql in COMPACT_INDEXES:
            cursor.execute(sql)
        _counts_agree(cursor, "candles_candle_new")
        for sql in COMPACT_SWAP:
            cursor.execute(sql)


def unpartition(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("LOCK TABLE candles_candle IN EXCLUSIVE MODE")
        cursor.execute(PLAIN_TABLE)
        cursor.execute(COPY_PLAIN)
        for sql in PLAIN_INDEXES_AND_SWAP:
            cursor.execute(sql)
        _counts_agree(cursor, "candles_candle_old")
        for sql in PLAIN_SWAP:
            cursor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("candles", "0010_timeframe_retention")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(partition, unpartition)],
            state_operations=[
                migrations.RemoveField(model_name="candle", name="updated_at"),
                migrations.AlterField(
                    model_name="candle",
                    name="source",
                    field=candles.fields.CandleSourceField(choices=[("ws", "WebSocket"), ("rest", "REST")]),
                ),
                migrations.AddIndex(
                    model_name="candle",
                    index=django.contrib.postgres.indexes.BrinIndex(
                        fields=["open_time"], name="candle_open_time_brin", pages_per_range=32),
                ),
            ],
        ),
    ]
