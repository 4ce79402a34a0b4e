-- Migration prototype (issue 15): the plain candles_candle becomes
--   candles_candle            PARTITION BY LIST (timeframe_id)      one partition per bar
--     candles_candle_<bar>    PARTITION BY RANGE (open_time)        1s: a day, 1m/3m/5m: a month, others: a year
--       candles_candle_<bar>_<start>                                leaves, fillfactor 100
-- with the compact row (no updated_at; source as "char" 'w'/'r'; fixed-width columns first).
-- Every row is copied (INSERT … SELECT); the old table is dropped only after the counts agree.
-- In the Django migration this is one RunSQL inside the migration's transaction.
\set ON_ERROR_STOP on
\timing on
BEGIN;
-- Writers wait (the flush keeps its batch in Redis and retries); readers go on until the swap.
LOCK TABLE candles_candle IN EXCLUSIVE MODE;

CREATE OR REPLACE FUNCTION candles_partition_interval(seconds integer, months integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN months = 0 AND seconds < 60 THEN 'day'
                WHEN months = 0 AND seconds < 900 THEN 'month'
                ELSE 'year' END
$$;
-- A bar's code as a lower-case name part: 1m stays 1m, 1M becomes 1mo (names fold case).
CREATE OR REPLACE FUNCTION candles_bar_slug(code text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT lower(replace(code, 'M', 'mo')) $$;

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
) PARTITION BY LIST (timeframe_id);

-- One partition per bar, and leaves covering every stored open time up to two intervals past now.
DO $$
DECLARE
    tf record; lo timestamptz; hi timestamptz; step interval; unit text; slug text; leaf text;
BEGIN
    FOR tf IN
        -- one pass over the table (a min/max per bar would scan it once per bar: the key leads with instrument)
        SELECT t.id, t.code, t.seconds, t.months, r.first, r.last
        FROM candles_timeframe t
        LEFT JOIN (SELECT timeframe_id, min(open_time) AS first, max(open_time) AS last FROM candles_candle
                   GROUP BY timeframe_id) r ON r.timeframe_id = t.id
    LOOP
        slug := candles_bar_slug(tf.code);
        unit := candles_partition_interval(tf.seconds, tf.months);
        step := ('1 ' || unit)::interval;
        EXECUTE format('CREATE TABLE %I PARTITION OF candles_candle_new FOR VALUES IN (%s) '
                       'PARTITION BY RANGE (open_time)', 'candles_candle_' || slug, tf.id);
        lo := date_trunc(unit, least(coalesce(tf.first, now()), now()), 'UTC');
        hi := date_trunc(unit, greatest(coalesce(tf.last, now()), now()), 'UTC') + 2 * step;
        WHILE lo < hi LOOP
            leaf := 'candles_candle_' || slug || '_' || to_char(lo AT TIME ZONE 'UTC',
                    CASE unit WHEN 'day' THEN 'YYYYMMDD' WHEN 'month' THEN 'YYYYMM' ELSE 'YYYY' END);
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L) WITH (fillfactor = 100)',
                           leaf, 'candles_candle_' || slug, lo, lo + step);
            lo := lo + step;
        END LOOP;
    END LOOP;
END $$;

-- The copy, in key order, before the indexes exist: each leaf's index is then built by one sort.
INSERT INTO candles_candle_new (open_time, version, instrument_id, timeframe_id, confirmed, source,
                                open, high, low, close, vol, vol_ccy, vol_ccy_quote)
SELECT open_time, version, instrument_id, timeframe_id, confirmed, CASE source WHEN 'rest' THEN 'r' ELSE 'w' END,
       open, high, low, close, vol, vol_ccy, vol_ccy_quote
FROM candles_candle ORDER BY timeframe_id, instrument_id, open_time;

ALTER TABLE candles_candle_new ADD CONSTRAINT candles_candle_new_pkey PRIMARY KEY (instrument_id, timeframe_id, open_time);
CREATE INDEX candle_unconfirmed_new_idx ON candles_candle_new (timeframe_id, open_time) INCLUDE (instrument_id)
    WHERE NOT confirmed;

DO $$
DECLARE old_n bigint; new_n bigint;
BEGIN
    SELECT count(*) INTO old_n FROM candles_candle;
    SELECT count(*) INTO new_n FROM candles_candle_new;
    IF old_n <> new_n THEN
        RAISE EXCEPTION 'candle migration copied % of % rows', new_n, old_n;
    END IF;
END $$;

DROP VIEW candles_candle_record;
DROP TABLE candles_candle;
ALTER TABLE candles_candle_new RENAME TO candles_candle;
ALTER INDEX candles_candle_new_pkey RENAME TO candles_candle_pkey;
ALTER INDEX candle_unconfirmed_new_idx RENAME TO candle_unconfirmed_idx;
-- The admin's view keeps its columns: source spelled out, updated_at read from the receipt version.
CREATE VIEW candles_candle_record AS
SELECT instrument_id || '.' || timeframe_id || '.' || (extract(epoch FROM open_time) * 1000)::bigint AS key,
       instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed,
       CASE source WHEN 'r' THEN 'rest' ELSE 'ws' END::varchar(4) AS source, version,
       timestamptz 'epoch' + version * interval '1 microsecond' AS updated_at
FROM candles_candle;
COMMIT;
