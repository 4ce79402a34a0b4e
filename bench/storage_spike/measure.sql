-- bytes per row of a table after VACUUM: heap (with FSM/VM), each index, total
CREATE OR REPLACE FUNCTION spike_bytes(rel regclass) RETURNS TABLE (rows bigint, heap_b numeric, idx_b numeric, total_b numeric, heap_mb numeric, idx_mb numeric)
LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM %s', rel) INTO n;
  RETURN QUERY SELECT n,
    round(pg_table_size(rel)::numeric / n, 1), round(pg_indexes_size(rel)::numeric / n, 1),
    round(pg_total_relation_size(rel)::numeric / n, 1),
    round(pg_table_size(rel) / 1048576.0, 1), round(pg_indexes_size(rel) / 1048576.0, 1);
END $$;
