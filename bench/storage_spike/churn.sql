-- Live-like writes: each flush (one statement) confirms the candle that just closed and writes the next
-- version of the open one, through INSERT … ON CONFLICT with the monotone rule. `versions` writes per
-- candle while open (1s: 1, 1m: 60), then the confirm. Afterwards VACUUM and bytes per row.
-- Run with synchronous_commit off (each flush commits).
CREATE OR REPLACE PROCEDURE spike_churn(tbl text, bar text, steps int, versions int)
LANGUAGE plpgsql AS $$
DECLARE s int; v int;
BEGIN
  DROP TABLE IF EXISTS churn_src;
  CREATE TEMP TABLE churn_src AS
    SELECT row_number() OVER (PARTITION BY instrument_id ORDER BY open_time) - 1 AS step, *
    FROM spike_candles(bar, '2026-11-01', steps);
  CREATE INDEX ON churn_src (step);
  ANALYZE churn_src;
  FOR s IN 0 .. steps LOOP
    FOR v IN 1 .. versions LOOP
      EXECUTE format($f$
        INSERT INTO %I AS c (open_time, version, instrument_id, timeframe_id, confirmed, source,
                             open, high, low, close, vol, vol_ccy, vol_ccy_quote)
        SELECT open_time, version + CASE WHEN step < $1 THEN %s + 1 ELSE $2 END, instrument_id, timeframe_id,
               step < $1, 'w', open, high, low, close, vol, vol_ccy, vol_ccy_quote
        FROM churn_src WHERE step = $1 OR (step = $1 - 1 AND $2 = 1)
        ON CONFLICT (instrument_id, timeframe_id, open_time) DO UPDATE SET
          open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
          vol = EXCLUDED.vol, vol_ccy = EXCLUDED.vol_ccy, vol_ccy_quote = EXCLUDED.vol_ccy_quote,
          confirmed = EXCLUDED.confirmed, source = EXCLUDED.source, version = EXCLUDED.version
        WHERE EXCLUDED.version > c.version AND (EXCLUDED.confirmed OR NOT c.confirmed)$f$, tbl, versions)
      USING s, v;
      COMMIT;  -- one flush, one transaction: versions become prunable as they would live
    END LOOP;
  END LOOP;
END $$;
