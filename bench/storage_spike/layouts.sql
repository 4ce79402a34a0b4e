-- Row layouts for a closed candle, each filled with the same 1,036,800 rows in arrival order (time-major),
-- primary key present while loading (as live), then VACUUM. Run after gen.sql/measure.sql and a load of
-- candles_candle.
DROP TABLE IF EXISTS l1_ff100, l2_no_updated_at, l3_source_bool, l4_reordered, l5_reordered_ff90, l6_text, l7_scaled_int8;

CREATE TABLE l1_ff100 (LIKE candles_candle INCLUDING ALL) WITH (fillfactor = 100);
INSERT INTO l1_ff100 SELECT * FROM candles_candle ORDER BY open_time, instrument_id;

CREATE TABLE l2_no_updated_at (LIKE candles_candle INCLUDING ALL) WITH (fillfactor = 100);
ALTER TABLE l2_no_updated_at DROP COLUMN updated_at;  -- dropped before any row: no null bitmap cost
INSERT INTO l2_no_updated_at SELECT open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed,
  source, version, instrument_id, timeframe_id FROM candles_candle ORDER BY open_time, instrument_id;

CREATE TABLE l3_source_bool (
  open_time timestamptz NOT NULL, open numeric NOT NULL, high numeric NOT NULL, low numeric NOT NULL,
  close numeric NOT NULL, vol numeric NOT NULL, vol_ccy numeric NOT NULL, vol_ccy_quote numeric,
  confirmed boolean NOT NULL, from_rest boolean NOT NULL, version bigint NOT NULL,
  instrument_id integer NOT NULL, timeframe_id smallint NOT NULL,
  PRIMARY KEY (instrument_id, timeframe_id, open_time)) WITH (fillfactor = 100);
INSERT INTO l3_source_bool SELECT open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed,
  source = 'rest', version, instrument_id, timeframe_id FROM candles_candle ORDER BY open_time, instrument_id;

-- fixed-width columns first, widest first: no alignment padding; numerics (1-byte headers, unaligned) last
CREATE TABLE l4_reordered (
  open_time timestamptz NOT NULL, version bigint NOT NULL, instrument_id integer NOT NULL,
  timeframe_id smallint NOT NULL, confirmed boolean NOT NULL, source "char" NOT NULL,
  open numeric NOT NULL, high numeric NOT NULL, low numeric NOT NULL, close numeric NOT NULL,
  vol numeric NOT NULL, vol_ccy numeric NOT NULL, vol_ccy_quote numeric,
  PRIMARY KEY (instrument_id, timeframe_id, open_time)) WITH (fillfactor = 100);
INSERT INTO l4_reordered SELECT open_time, version, instrument_id, timeframe_id, confirmed,
  CASE source WHEN 'ws' THEN 'w' ELSE 'r' END, open, high, low, close, vol, vol_ccy, vol_ccy_quote
  FROM candles_candle ORDER BY open_time, instrument_id;

CREATE TABLE l5_reordered_ff90 (LIKE l4_reordered INCLUDING ALL) WITH (fillfactor = 90);
INSERT INTO l5_reordered_ff90 SELECT * FROM l4_reordered ORDER BY open_time, instrument_id;

CREATE TABLE l6_text (
  open_time timestamptz NOT NULL, version bigint NOT NULL, instrument_id integer NOT NULL,
  timeframe_id smallint NOT NULL, confirmed boolean NOT NULL, source "char" NOT NULL,
  open text NOT NULL, high text NOT NULL, low text NOT NULL, close text NOT NULL,
  vol text NOT NULL, vol_ccy text NOT NULL, vol_ccy_quote text,
  PRIMARY KEY (instrument_id, timeframe_id, open_time)) WITH (fillfactor = 100);
INSERT INTO l6_text SELECT open_time, version, instrument_id, timeframe_id, confirmed, source, open::text,
  high::text, low::text, close::text, vol::text, vol_ccy::text, vol_ccy_quote::text
  FROM l4_reordered ORDER BY open_time, instrument_id;

-- exact as integers: mantissa × 10^-scale per value, the seven scales packed 5 bits each into one bigint
CREATE TABLE l7_scaled_int8 (
  open_time timestamptz NOT NULL, version bigint NOT NULL, scales bigint NOT NULL,
  open bigint NOT NULL, high bigint NOT NULL, low bigint NOT NULL, close bigint NOT NULL,
  vol bigint NOT NULL, vol_ccy bigint NOT NULL, vol_ccy_quote bigint,
  instrument_id integer NOT NULL, timeframe_id smallint NOT NULL, confirmed boolean NOT NULL, source "char" NOT NULL,
  PRIMARY KEY (instrument_id, timeframe_id, open_time)) WITH (fillfactor = 100);
INSERT INTO l7_scaled_int8 SELECT open_time, version,
  scale(open) | scale(high) << 5 | scale(low) << 10 | scale(close) << 15 | scale(vol) << 20 | scale(vol_ccy) << 25
    | coalesce(scale(vol_ccy_quote), 0)::bigint << 30,
  (open * 10 ^ scale(open))::bigint, (high * 10 ^ scale(high))::bigint, (low * 10 ^ scale(low))::bigint,
  (close * 10 ^ scale(close))::bigint, (vol * 10 ^ scale(vol))::bigint, (vol_ccy * 10 ^ scale(vol_ccy))::bigint,
  (vol_ccy_quote * 10 ^ scale(vol_ccy_quote))::bigint, instrument_id, timeframe_id, confirmed, source
  FROM l4_reordered ORDER BY open_time, instrument_id;

VACUUM ANALYZE l1_ff100, l2_no_updated_at, l3_source_bool, l4_reordered, l5_reordered_ff90, l6_text, l7_scaled_int8;
SELECT r AS layout, b.* FROM unnest(ARRAY['candles_candle', 'l1_ff100', 'l2_no_updated_at', 'l3_source_bool',
  'l4_reordered', 'l5_reordered_ff90', 'l6_text', 'l7_scaled_int8']) r, spike_bytes(r::regclass) b;
