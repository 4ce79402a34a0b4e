-- Spike for issue 15: realistic OKX-shaped candles, generated in SQL (deterministic: setseed per call).
-- Twelve instruments with OKX's tick and lot scales; numbers trimmed of trailing zeros as OKX writes them.
INSERT INTO candles_instrument (inst_id, inst_type, base_ccy, quote_ccy, settle_ccy, inst_family, state,
                                created_at, updated_at)
SELECT v.inst_id, CASE WHEN v.inst_id LIKE '%-SWAP' THEN 'SWAP' ELSE 'SPOT' END, '', '', '', '', 'live', now(), now()
FROM (VALUES ('BTC-USDT'), ('ETH-USDT'), ('SOL-USDT'), ('XRP-USDT'), ('DOGE-USDT'), ('SHIB-USDT'),
             ('PEPE-USDT'), ('BTC-USDT-SWAP'), ('ETH-USDT-SWAP'), ('TON-USDT'), ('LTC-USDT'), ('TRX-USDT')) v(inst_id)
ON CONFLICT (inst_id) DO NOTHING;

CREATE TABLE IF NOT EXISTS spike_inst (inst_id text PRIMARY KEY, base numeric, d int, l int, quiet float8, unit numeric);
INSERT INTO spike_inst VALUES
  ('BTC-USDT', 97123.4, 1, 8, 0.10, 0.5), ('ETH-USDT', 3456.78, 2, 6, 0.15, 5),
  ('SOL-USDT', 180.12, 2, 6, 0.30, 40), ('XRP-USDT', 2.3456, 4, 4, 0.35, 3000),
  ('DOGE-USDT', 0.32145, 5, 6, 0.40, 20000), ('SHIB-USDT', 0.00002134, 8, 0, 0.60, 300000000),
  ('PEPE-USDT', 0.000012345, 9, 0, 0.60, 500000000), ('BTC-USDT-SWAP', 97120.1, 1, 2, 0.05, 300),
  ('ETH-USDT-SWAP', 3456.7, 2, 2, 0.10, 800), ('TON-USDT', 5.432, 3, 4, 0.55, 500),
  ('LTC-USDT', 98.76, 2, 6, 0.50, 20), ('TRX-USDT', 0.2345, 4, 2, 0.65, 20000)
ON CONFLICT DO NOTHING;

-- Candles of one bar for every spike instrument: `steps` open times from `t0`, in arrival order (time-major).
-- Shaped like candles_candle's columns (legacy layout). A `quiet` share of candles are OKX's flat
-- zero-volume candles.
CREATE OR REPLACE FUNCTION spike_candles(bar text, t0 timestamptz, steps int, seed float8 DEFAULT 0.42)
RETURNS TABLE (instrument_id int, timeframe_id smallint, open_time timestamptz, open numeric, high numeric,
               low numeric, close numeric, vol numeric, vol_ccy numeric, vol_ccy_quote numeric,
               confirmed boolean, source varchar, version bigint, updated_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE tf record;
BEGIN
  PERFORM setseed(seed);
  SELECT id, seconds FROM candles_timeframe WHERE code = bar INTO tf;
  RETURN QUERY
  WITH t AS (
    SELECT k, t0 + k * tf.seconds * interval '1 second' AS ot FROM generate_series(0, steps - 1) k
  ), raw AS (
    SELECT i.id AS iid, s.*, t.k, t.ot,
           s.base * (1 + 0.03 * sin(t.k / 5000.0 + i.id))::numeric AS p,
           random() AS r1, random() AS r2, random() AS r3, random() AS r4
    FROM t CROSS JOIN spike_inst s JOIN candles_instrument i USING (inst_id)
  ), px AS (
    SELECT *, round(p, d) AS o, round(p * (1 + (r2 - 0.5) * 0.002)::numeric, d) AS c,
           r1 < quiet AS flat, trim_scale(round((r3 * unit * sqrt(tf.seconds))::numeric, l)) AS v
    FROM raw
  )
  SELECT iid, tf.id::smallint, ot,
         trim_scale(o),
         trim_scale(CASE WHEN flat THEN o ELSE greatest(o, c) + round((r4 * base * 0.0005)::numeric, d) END),
         trim_scale(CASE WHEN flat THEN o ELSE greatest(least(o, c) - round((r4 * base * 0.0004)::numeric, d), power(10::numeric, -d)) END),
         trim_scale(CASE WHEN flat THEN o ELSE c END),
         CASE WHEN flat THEN 0::numeric ELSE v END,
         CASE WHEN flat THEN 0::numeric ELSE trim_scale(v * c) END,
         CASE WHEN flat THEN 0::numeric ELSE trim_scale(v * c) END,
         true, 'ws'::varchar, (extract(epoch FROM ot) * 1000000)::bigint + 1500000 + (r2 * 100000)::bigint,
         ot + interval '1.5 second'
  FROM px ORDER BY k, iid;
END $$;
