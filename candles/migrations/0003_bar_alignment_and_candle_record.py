"""SQL that the write path and the admin rely on.

`candles_is_open_time` is the database's copy of candles.bars.BarSpec.is_open_time (tests hold the two
to the same answers); it is an inlinable SQL function so `candles_upsert` validates a whole batch in one
statement. `candles_candle_record` gives the admin a single-column key over the composite-key table.
"""

from django.db import migrations

IS_OPEN_TIME = """
CREATE OR REPLACE FUNCTION candles_is_open_time(
    open_time_ms bigint, seconds integer, months integer, utc_offset_hours integer, anchor timestamptz
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN months = 0 THEN
            (open_time_ms - (extract(epoch FROM anchor) * 1000)::bigint) % (seconds::bigint * 1000) = 0
        ELSE (
            SELECT local = date_trunc('month', local)
               AND ((extract(year FROM local) * 12 + extract(month FROM local))
                    - (extract(year FROM anchor_local) * 12 + extract(month FROM anchor_local)))::integer
                   % months = 0
            FROM (SELECT
                    timestamp 'epoch' + (open_time_ms + utc_offset_hours * 3600000::bigint)
                                        * interval '1 millisecond' AS local,
                    (anchor AT TIME ZONE 'UTC') + utc_offset_hours * interval '1 hour' AS anchor_local
                 ) AS t
        )
    END
$$;
"""

CANDLE_RECORD = """
CREATE VIEW candles_candle_record AS
SELECT instrument_id || '.' || timeframe_id || '.' || (extract(epoch FROM open_time) * 1000)::bigint AS key,
       instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote,
       confirmed, source, version, updated_at
FROM candles_candle;
"""


class Migration(migrations.Migration):
    dependencies = [("candles", "0002_seed_timeframes")]
    operations = [
        migrations.RunSQL(IS_OPEN_TIME, "DROP FUNCTION candles_is_open_time(bigint, integer, integer, integer, timestamptz);"),
        migrations.RunSQL(CANDLE_RECORD, "DROP VIEW candles_candle_record;"),
    ]
