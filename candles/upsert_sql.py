"""The SQL of the one write path (`candles.storage.candles_upsert`): the staging tables and their COPY, the checks
every row goes through, the `ON CONFLICT DO UPDATE` rules, and the two merges built from them (a staged batch,
or a small batch as one JSON parameter). Text only: storage.py runs it.
"""

from __future__ import annotations

STAGING_COLUMNS = (
    "inst_id, bar, open_time_ms, open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, source, version, "
    "price"
)

# Temporary and dropped at commit: nothing survives on a pooled connection, and no WAL is written for it.
# A rejected row is mapped back to the caller's index by its copy order. COPY leaves `seq` empty: a fresh
# heap that one COPY filled holds its rows in copy order, so their ctid order numbers them, and only the
# rare report of rejected rows pays for that (an identity column cost every row a sequence step, ~3 % of a
# write). The text fallback fills `seq` itself.
CREATE_STAGING = """
CREATE TEMPORARY TABLE candle_staging (
    seq integer,
    inst_id text, bar text, open_time_ms bigint,
    open numeric, high numeric, low numeric, close numeric, vol numeric, vol_ccy numeric, vol_ccy_quote numeric,
    confirmed boolean, source text, version bigint, price text
) ON COMMIT DROP
"""
COPY_STAGING = f"COPY candle_staging ({STAGING_COLUMNS}) FROM STDIN"

# The slow path, taken only when a batch holds text that is not a number: every value lands as text,
# rows whose text parses move to candle_staging, and the others are reported with the column at fault.
CREATE_TEXT_STAGING = """
CREATE TEMPORARY TABLE candle_staging_text (
    seq integer GENERATED ALWAYS AS IDENTITY (MINVALUE 0 START WITH 0),
    inst_id text, bar text, open_time_ms text,
    open text, high text, low text, close text, vol text, vol_ccy text, vol_ccy_quote text,
    confirmed text, source text, version text, price text
) ON COMMIT DROP
"""
COPY_TEXT_STAGING = f"COPY candle_staging_text ({STAGING_COLUMNS}) FROM STDIN"
# What PostgreSQL's numeric accepts, less NaN/Infinity: Python renders Decimal("0.00000001") as "1E-8".
DECIMAL = r"'^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$'"
INTEGER = r"'^-?[0-9]{1,18}$'"
PARSE_TEXT_STAGING = f"""
WITH parsed AS (
    SELECT s.*, CASE
        WHEN s.open_time_ms !~ {INTEGER} THEN 'open time is not an integer (ms)'
        WHEN s.version !~ {INTEGER} THEN 'version is not an integer'
        WHEN lower(s.confirmed) NOT IN ('t', 'f', 'true', 'false') THEN 'confirmed is not a boolean'
        WHEN s.open !~ {DECIMAL} THEN 'open is not a decimal number'
        WHEN s.high !~ {DECIMAL} THEN 'high is not a decimal number'
        WHEN s.low !~ {DECIMAL} THEN 'low is not a decimal number'
        WHEN s.close !~ {DECIMAL} THEN 'close is not a decimal number'
        WHEN s.vol !~ {DECIMAL} THEN 'vol is not a decimal number'
        WHEN s.vol_ccy !~ {DECIMAL} THEN 'vol_ccy is not a decimal number'
        WHEN NULLIF(s.vol_ccy_quote, '') !~ {DECIMAL} THEN 'vol_ccy_quote is not a decimal number'
    END AS reason
    FROM candle_staging_text s
), moved AS (
    INSERT INTO candle_staging (seq, {STAGING_COLUMNS})
    SELECT seq, inst_id, bar, open_time_ms::bigint, open::numeric, high::numeric, low::numeric, close::numeric,
           vol::numeric, vol_ccy::numeric, NULLIF(vol_ccy_quote, '')::numeric, confirmed::boolean, source,
           version::bigint, price
    FROM parsed WHERE reason IS NULL
)
SELECT seq, reason FROM parsed WHERE reason IS NOT NULL ORDER BY seq
"""
DROP_STAGING = "DROP TABLE IF EXISTS candle_staging, candle_staging_text"

# Bar constants once per bar, not once per row (MATERIALIZED keeps the planner from inlining them).
CHECKED = """
FROM candle_staging s
LEFT JOIN candles_instrument i ON i.inst_id = s.inst_id AND i.price = coalesce(s.price, 'trade')
LEFT JOIN bar ON bar.code = s.bar
CROSS JOIN LATERAL (SELECT CASE
    WHEN i.id IS NULL THEN 'unknown instrument ' || coalesce(quote_literal(s.inst_id), 'NULL')
        || CASE WHEN coalesce(s.price, 'trade') = 'trade' THEN '' ELSE ' (' || s.price || ' price)' END
    WHEN bar.id IS NULL THEN 'unknown bar ' || coalesce(quote_literal(s.bar), 'NULL')
    WHEN s.source IS NULL OR s.source NOT IN ('ws', 'rest') THEN 'source must be ws or rest'
    WHEN s.open_time_ms IS NULL THEN 'open time is missing'
    WHEN s.version IS NULL THEN 'version is missing'
    WHEN s.confirmed IS NULL THEN 'confirmed is missing'
    WHEN s.open IS NULL THEN 'open is missing'
    WHEN s.high IS NULL THEN 'high is missing'
    WHEN s.low IS NULL THEN 'low is missing'
    WHEN s.close IS NULL THEN 'close is missing'
    WHEN i.price = 'trade' AND s.vol IS NULL THEN 'vol is missing'
    WHEN i.price = 'trade' AND s.vol_ccy IS NULL THEN 'vol_ccy is missing'
    WHEN i.price <> 'trade' AND coalesce(s.vol, s.vol_ccy, s.vol_ccy_quote) IS NOT NULL
        THEN i.price || ' candles carry no volumes'
    -- PostgreSQL sorts NaN and Infinity above every finite number, and -Infinity below.
    WHEN greatest(s.open, s.high, s.low, s.close, s.vol, s.vol_ccy, s.vol_ccy_quote) >= 'Infinity'
        OR least(s.open, s.high, s.low, s.close) <= '-Infinity' THEN 'value is not a finite number'
    WHEN s.high < greatest(s.open, s.close, s.low) THEN 'high is below open, close or low'
    WHEN s.low > least(s.open, s.close) THEN 'low is above open or close'
    WHEN s.vol < 0 THEN 'vol is negative'
    WHEN s.vol_ccy < 0 THEN 'vol_ccy is negative'
    WHEN s.vol_ccy_quote < 0 THEN 'vol_ccy_quote is negative'
    WHEN CASE WHEN bar.months = 0 THEN (s.open_time_ms - bar.anchor_ms) % bar.length_ms <> 0
              ELSE NOT candles_is_open_time(s.open_time_ms, 0, bar.months, bar.utc_offset_hours, bar.anchor)
         END THEN 'open time is not on a ' || bar.code || ' boundary'
END AS reason) v
"""
BAR_CONSTANTS = """
bar AS MATERIALIZED (
    SELECT id, code, seconds::bigint * 1000 AS length_ms, months, utc_offset_hours, anchor,
           (extract(epoch FROM anchor) * 1000)::bigint AS anchor_ms
    FROM candles_timeframe
)"""

CANDLE_COLUMNS = """instrument_id, timeframe_id, open_time, open, high, low, close, vol, vol_ccy, vol_ccy_quote,
        confirmed, source, version"""
# The table stores the source in one byte (candles.fields.CandleSourceField); batches speak ws/rest.
SOURCE_BYTE = "(CASE {s}source WHEN 'rest' THEN 'r' ELSE 'w' END)::\"char\""
# The monotone rules, shared by both strategies (docs/architecture.md, "Merging by the data"): a confirmed candle is
# final (another confirmed version replaces it only when newer: a REST re-confirmation); a confirmed candle
# replaces an open one whatever their versions; between two open versions the data decides, because two
# collectors of one shard (COLLECTOR_REPLICAS) stamp versions with two hosts' clocks: OKX's cumulative volume only
# grows while a candle is open, its high only rises and its low only falls. Only states the data cannot order
# (same volume, high and low: in a trade candle that is the same state) fall back to the version. The stored
# version still only grows (the live stream sends a version only when it is newer than the one it sent), and a
# version that changes nothing (the same push through the second collector) writes nothing: every number is
# compared as its text, so a re-sent state is a no-op while a changed figure, even 1.0 for 1.00, is written.
ON_CONFLICT = """ON CONFLICT (instrument_id, timeframe_id, open_time) DO UPDATE SET
        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
        vol = EXCLUDED.vol, vol_ccy = EXCLUDED.vol_ccy, vol_ccy_quote = EXCLUDED.vol_ccy_quote,
        confirmed = EXCLUDED.confirmed, source = EXCLUDED.source,
        version = greatest(EXCLUDED.version, c.version + 1)
    WHERE (EXCLUDED.confirmed, EXCLUDED.open::text, EXCLUDED.high::text, EXCLUDED.low::text, EXCLUDED.close::text,
           EXCLUDED.vol::text, EXCLUDED.vol_ccy::text, EXCLUDED.vol_ccy_quote::text)
        IS DISTINCT FROM (c.confirmed, c.open::text, c.high::text, c.low::text, c.close::text, c.vol::text,
                          c.vol_ccy::text, c.vol_ccy_quote::text)
      AND CASE
        WHEN c.confirmed THEN EXCLUDED.confirmed AND EXCLUDED.version > c.version
        WHEN EXCLUDED.confirmed THEN true
        WHEN EXCLUDED.vol <> c.vol THEN EXCLUDED.vol > c.vol
        WHEN EXCLUDED.high <> c.high THEN EXCLUDED.high > c.high
        WHEN EXCLUDED.low <> c.low THEN EXCLUDED.low < c.low
        ELSE EXCLUDED.version > c.version
    END
    RETURNING {returning}"""
# What the merge hands back per written row while the live stream has listeners (candles/stream/feed.py): a line
# "instrument_id:timeframe_id<TAB>[JSON row]", the stored version as the stream serves it, text made by PostgreSQL
# as /data's is. Written with single % signs:
# the JSON strategy's statement doubles them with the rest of its text.
FEED_ROW = (
    "c.instrument_id::text || ':' || c.timeframe_id::text || E'\\t' || "
    "json_build_array(c.instrument_id, c.timeframe_id, (extract(epoch FROM c.open_time) * 1000)::bigint, "
    "to_char(c.open_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
    "|| CASE WHEN date_part('milliseconds', c.open_time)::int % 1000 = 0 THEN 'Z' "
    "ELSE to_char(c.open_time AT TIME ZONE 'UTC', '.MS\"Z\"') END, "
    "c.open::text, c.high::text, c.low::text, c.close::text, c.vol::text, c.vol_ccy::text, c.vol_ccy_quote::text, "
    "c.confirmed, c.version)::text AS feed_row"
)
FED_COUNT = "SELECT count(*), coalesce(string_agg(feed_row, E'\\n'), '') FROM merged"
# Among the valid rows of a key that are stored at all, the one the database would keep: confirmed first (the
# newest of those), then the open one furthest on by the data (volume, high, low), then the newest version.
TWINS_ORDER = ("{s}confirmed DESC, CASE WHEN {s}confirmed THEN {s}version END DESC NULLS LAST, "
                "{s}vol DESC NULLS LAST, {s}high DESC, {s}low ASC, {s}version DESC")

MERGE = """
WITH {bar_constants},
merged AS (
    INSERT INTO candles_candle AS c ({columns})
    SELECT {distinct} i.id, bar.id, timestamptz 'epoch' + s.open_time_ms * interval '1 millisecond',
           s.open, s.high, s.low, s.close, s.vol, s.vol_ccy, s.vol_ccy_quote, s.confirmed, {source}, s.version
    {checked}
    WHERE v.reason IS NULL AND (s.confirmed OR s.source = 'ws')
    {order}
    {on_conflict}
)
{count}
"""
PLAIN_COUNT = "SELECT count(*) FROM merged"


def _merge_staged_sql(*, deduplicate: bool, fed: bool) -> str:
    return MERGE.format(
        bar_constants=BAR_CONSTANTS, checked=CHECKED, columns=CANDLE_COLUMNS, source=SOURCE_BYTE.format(s="s."),
        distinct="DISTINCT ON (i.id, bar.id, s.open_time_ms)" if deduplicate else "",
        order="ORDER BY i.id, bar.id, s.open_time_ms, " + TWINS_ORDER.format(s="s.") if deduplicate else "",
        on_conflict=ON_CONFLICT.format(returning=FEED_ROW if fed else "1"),
        count=FED_COUNT if fed else PLAIN_COUNT,
    )


# (deduplicate, fed) → statement.
# ON CONFLICT cannot touch one row twice in a statement: a batch holding a key more than once keeps, among
# its valid rows, the one the database would keep (confirmed first, then the newest version). The sort
# costs, so batches without duplicates (the usual case) skip it.
MERGE_STAGED = {(dedup, fed): _merge_staged_sql(deduplicate=dedup, fed=fed)
                 for dedup in (False, True) for fed in (False, True)}

NUMBERED_STAGING = """(
    SELECT coalesce(seq, (row_number() OVER (ORDER BY ctid) - 1)::integer) AS seq, inst_id, bar, open_time_ms,
           open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, source, version, price
    FROM candle_staging
)"""
REPORT = f"""
WITH {BAR_CONSTANTS}
SELECT count(*) FILTER (WHERE v.reason IS NULL AND NOT s.confirmed AND s.source = 'rest'),
       coalesce(json_agg(json_build_array(s.seq, v.reason) ORDER BY s.seq) FILTER (WHERE v.reason IS NOT NULL),
                '[]')
{CHECKED.replace("FROM candle_staging s", "FROM " + NUMBERED_STAGING + " s", 1)}
"""


# The small-batch strategy: the batch travels as one JSON text (an array of rows, each an array of its fields) and
# is validated, merged and reported on in one statement. Each value is taken as text and cast by the same input
# function COPY uses, so the same text is the same number (Decimals go as their str(), as COPY writes them); text a
# cast refuses fails the statement, and the batch takes the staging path, which names the column at fault. An
# empty quote volume is NULL, as in the staging path's text fallback.
JSON_ROWS = """(
    SELECT (u.n - 1)::integer AS seq, u.r->>0 AS inst_id, u.r->>1 AS bar, (u.r->>2)::bigint AS open_time_ms,
           (u.r->>3)::numeric AS open, (u.r->>4)::numeric AS high, (u.r->>5)::numeric AS low,
           (u.r->>6)::numeric AS close, (u.r->>7)::numeric AS vol, (u.r->>8)::numeric AS vol_ccy,
           NULLIF(u.r->>9, '')::numeric AS vol_ccy_quote, (u.r->>10)::boolean AS confirmed, u.r->>11 AS source,
           (u.r->>12)::bigint AS version, u.r->>13 AS price
    FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS u(r, n)
)"""
def _merge_json_sql(*, fed: bool) -> str:
    """Static text first, with its literal % doubled (the statement takes parameters), then the JSON source."""
    fed_rows = "(SELECT coalesce(string_agg(feed_row, E'\\n'), '') FROM merged)" if fed else "NULL"
    return f"""
WITH {BAR_CONSTANTS},
checked AS MATERIALIZED (
    SELECT s.seq, i.id AS instrument_id, bar.id AS timeframe_id, s.open_time_ms, s.open, s.high, s.low, s.close,
           s.vol, s.vol_ccy, s.vol_ccy_quote, s.confirmed, s.source, s.version, v.reason
    {CHECKED}
),
merged AS (
    INSERT INTO candles_candle AS c ({CANDLE_COLUMNS})
    SELECT DISTINCT ON (instrument_id, timeframe_id, open_time_ms) instrument_id, timeframe_id,
           timestamptz 'epoch' + open_time_ms * interval '1 millisecond',
           open, high, low, close, vol, vol_ccy, vol_ccy_quote, confirmed, {SOURCE_BYTE.format(s="")}, version
    FROM checked
    WHERE reason IS NULL AND (confirmed OR source = 'ws')
    ORDER BY instrument_id, timeframe_id, open_time_ms, {TWINS_ORDER.format(s="")}
    {ON_CONFLICT.format(returning=FEED_ROW if fed else "1")}
)
SELECT (SELECT count(*) FROM merged),
       (SELECT count(*) FROM checked WHERE reason IS NULL AND NOT confirmed AND source = 'rest'),
       (SELECT coalesce(json_agg(json_build_array(seq, reason) ORDER BY seq), '[]')
        FROM checked WHERE reason IS NOT NULL),
       {fed_rows}
""".replace("%", "%%").replace("FROM candle_staging s", "FROM " + JSON_ROWS + " s", 1)


MERGE_JSON = {fed: _merge_json_sql(fed=fed) for fed in (False, True)}
