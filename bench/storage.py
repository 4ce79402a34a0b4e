"""Issue 15's benchmark: the candle store holding a month of `1s`, against its targets.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/okx_candles \\
        .venv/bin/python bench/storage.py [--instruments 12] [--days 30] [--rounds 10] [--reads 500] [--reuse]

1. Works in two databases of its own beside DATABASE_URL's: `<name>_bench_storage` (the full one) and
   `<name>_bench_storage_empty` (the same schema, no history; made anew every run). Both are migrated here.
2. Loads the full one (reused with --reuse when already loaded): --days daily `1s` leaves of --instruments
   instruments (12 × 30 days = 31.1 M candles), plus `1m`, `5m`, `1H` and `1D` candles of the same days; every
   `1s` leaf is built without indexes, indexed once, attached, then closed out by the product's own
   `partition_close_out` (REINDEX, VACUUM FREEZE), as a month-old leaf would be. One day before them (the "churn
   day") is written the way the live flush writes (an open version, a newer one, the confirm, each a batch through
   `candles_upsert`), so its bytes per candle include what live writing leaves behind.
3. Measures, and prints each figure beside its target:
   (a) `candles_upsert` rows/s of a live-like batch (8.5k rows: the confirms of the last window's `1s` candles,
       the opens of the next, the open `1m` candles) into the full table and into the empty one, alternating,
       --rounds times: the median ratio full/empty, target ≥ 0.8;
   (b) --reads reads of 1,000 `1s` candles at random places of the month through GET /api/v1/data (Django's
       test client: the view, the query, the rendering; no network): p50, target ≤ 10 ms;
   (c) while a flush thread writes the current `1s` and `1m` candles every second (and records each batch's lag
       from the close of its newest candle to its commit), `retention_enforce` retires the oldest day: the time
       it takes (target ≤ 1 s) and the flush lag p99 meanwhile (target ≤ 2 s); then once more with a 3 s reader
       holding the bar's tables, to show the retirement does not stall the writer behind it;
   (d) bytes per closed candle (`pg_total_relation_size(leaf) / rows`) of a loaded day and of the churn day,
       both closed out: target ≤ 150;
   (e) `archive_write` of one day: candles/s, MB per million candles, and the verified round trip;
   (f) the admin's candle list (its default window, one series, a filtered count) and the dashboard: p50,
       target ≤ 500 ms.

Everything runs on 127.0.0.1 against the machine's PostgreSQL and Redis (under its own key prefix); it stops by
itself. The first load takes about 10 minutes on 2 cores; with --reuse a run takes 3–4.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYMBOL_FORMAT = "BST{:02d}-USDT"
OTHER_BARS = ("1m", "5m", "1H", "1D")
PREFIX = "benchstorage:"
LIVE_WINDOW_S = 350  # (a)'s batch: 12 instruments × 350 s of confirms + 350 s of opens ≈ 8.5k rows


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def figure(name: str, value: str, target: str = "", verdict: str = "") -> None:
    print(f"  {name:<58} {value:<40} {target:<18} {verdict}", flush=True)


# --- databases ------------------------------------------------------------------------------------------------


def _environment(archive_dir: Path) -> tuple[str, str]:
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/okx_candles")
    base_url, base_name = os.environ["DATABASE_URL"].rsplit("/", 1)
    full, empty = f"{base_name}_bench_storage", f"{base_name}_bench_storage_empty"
    os.environ.update({
        "DATABASE_URL": f"{base_url}/{full}", "REDIS_KEY_PREFIX": f"{PREFIX}{full}:", "DEBUG": "0",
        "SECRET_KEY": "bench-storage-not-secret", "ALLOWED_HOSTS": "testserver,localhost",
        "API_THROTTLE_ANON": "off", "API_THROTTLE_USER": "off", "LOG_LEVEL": "WARNING",
        "CANDLE_ARCHIVE_DIR": str(archive_dir),
    })
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
    return full, empty


def _admin_connection():
    import psycopg

    return psycopg.connect(os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres", autocommit=True)


def database_create(name: str, *, fresh: bool) -> None:
    from psycopg import sql

    with _admin_connection() as conn:
        if fresh:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def use_database(name: str) -> None:
    """Point Django's default connection (of this thread) at `name`, and drop what was cached of the other."""
    from django.db import connections

    from candles import bar_catalog, partitions

    connection = connections["default"]
    connection.close()
    connection.settings_dict["NAME"] = name
    partitions.coverage_forget()
    bar_catalog.bar_catalog_forget()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


# --- the load -------------------------------------------------------------------------------------------------


def instruments_ensure(count: int) -> dict[str, int]:
    from candles.models import Instrument


    symbols = [SYMBOL_FORMAT.format(i) for i in range(count)]
    Instrument.objects.bulk_create(
        [Instrument(inst_id=s, inst_type="SPOT", base_ccy=s.split("-")[0], quote_ccy="USDT", tick_size="0.1",
                    lot_size="0.0001") for s in symbols], ignore_conflicts=True)
    return dict(Instrument.objects.filter(inst_id__in=symbols).values_list("inst_id", "pk"))


def retention_set(bar: str, retention: timedelta | None) -> None:
    from candles import bar_catalog
    from candles.models import Timeframe

    Timeframe.objects.filter(code=bar).update(retention=retention)
    bar_catalog.bar_catalog_forget()


# OKX-shaped candles (the storage spike's measured shapes, bench/storage_spike/gen.sql): twelve instruments
# with OKX's price and lot scales, from BTC at one decimal to PEPE at nine, numbers trimmed of trailing zeros as
# OKX writes them, and a share of flat zero-volume candles (most `1s` candles of a quiet instrument are). The
# bench's instruments take these shapes in turn. Deterministic (no random()), so a rebuilt leaf holds the same.
SHAPES = (  # (base price, price decimals, lot decimals, share of flat candles, volume unit)
    (97123.4, 1, 8, 0.10, 0.5), (3456.78, 2, 6, 0.15, 5), (180.12, 2, 6, 0.30, 40), (2.3456, 4, 4, 0.35, 3000),
    (0.32145, 5, 6, 0.40, 20000), (0.00002134, 8, 0, 0.60, 300000000), (0.000012345, 9, 0, 0.60, 500000000),
    (97120.1, 1, 2, 0.05, 300), (3456.7, 2, 2, 0.10, 800), (5.432, 3, 4, 0.55, 500), (98.76, 2, 6, 0.50, 20),
    (0.2345, 4, 2, 0.65, 20000),
)
_ROWS_SELECT = """
SELECT i.id, %(timeframe)s::smallint, t, e.e * 1000000 + 1500000, true, 'w'::"char",
       trim_scale(x.o),
       trim_scale(CASE WHEN x.flat THEN x.o ELSE greatest(x.o, x.c) + round(r.r4 * i.base * 0.0005, i.d) END),
       trim_scale(CASE WHEN x.flat THEN x.o
                       ELSE greatest(least(x.o, x.c) - round(r.r4 * i.base * 0.0004, i.d), power(10::numeric, -i.d))
                  END),
       trim_scale(CASE WHEN x.flat THEN x.o ELSE x.c END),
       CASE WHEN x.flat THEN 0 ELSE x.v END,
       CASE WHEN x.flat THEN 0 ELSE trim_scale(x.v * x.c) END,
       CASE WHEN x.flat THEN 0 ELSE trim_scale(x.v * x.c) END
FROM unnest(%(instruments)s::integer[], %(bases)s::numeric[], %(ds)s::integer[], %(ls)s::integer[],
            %(quiets)s::float8[], %(units)s::numeric[]) AS i(id, base, d, l, quiet, unit)
CROSS JOIN generate_series(%(start)s::timestamptz, %(end)s::timestamptz - %(step)s::interval, %(step)s::interval) AS t
CROSS JOIN LATERAL (SELECT extract(epoch FROM t)::bigint AS e) AS e
CROSS JOIN LATERAL (SELECT ((e.e * 7919 + i.id * 104729) %% 10007) / 10007.0 AS r1,
                           ((e.e * 6007 + i.id * 7727) %% 10009) / 10009.0 AS r2,
                           ((e.e * 4001 + i.id * 1543) %% 10037) / 10037.0 AS r3,
                           ((e.e * 3037 + i.id * 9173) %% 10039) / 10039.0 AS r4) AS r
CROSS JOIN LATERAL (SELECT round(p.p, i.d) AS o, round(p.p * (1 + (r.r2 - 0.5) * 0.002), i.d) AS c,
                           r.r1 < i.quiet AS flat,
                           trim_scale(round((r.r3 * i.unit * sqrt(%(seconds)s::float8)::numeric), i.l)) AS v
                    FROM (SELECT i.base * (1 + 0.03 * sin(e.e / 5000.0 + i.id)::numeric) AS p) AS p) AS x
ORDER BY i.id, t
"""


def shape_params(instrument_ids: list[int]) -> dict[str, list]:
    shapes = [SHAPES[n % len(SHAPES)] for n in range(len(instrument_ids))]
    return {"instruments": instrument_ids, "bases": [Decimal(str(s[0])) for s in shapes],
            "ds": [s[1] for s in shapes], "ls": [s[2] for s in shapes], "quiets": [float(s[3]) for s in shapes],
            "units": [Decimal(str(s[4])) for s in shapes]}


_COLUMNS = ("instrument_id, timeframe_id, open_time, version, confirmed, source, open, high, low, close, vol, vol_ccy, "
            "vol_ccy_quote")


def leaf_rows(name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        if not cursor.fetchone()[0]:
            return -1
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(name)}")
        return cursor.fetchone()[0]


def day_leaf_build(day: datetime, instrument_ids: list[int], timeframe_id: int) -> str:
    """One `1s` day, loaded into a table of its own, indexed once, then attached: minutes faster than inserting
    into an indexed leaf, and the index comes out as dense as close-out leaves it."""
    from django.db import connection

    from candles.partitions import bar_table, leaf_name

    name = leaf_name("1s", day)
    q, parent = connection.ops.quote_name(name), connection.ops.quote_name(bar_table("1s"))
    end = day + timedelta(days=1)
    have = leaf_rows(name)
    if have == len(instrument_ids) * 86_400:
        return name
    with connection.cursor() as cursor:
        if have >= 0:  # premade (empty) or an interrupted load: this database is the bench's own
            cursor.execute(f"DROP TABLE {q}")
        cursor.execute(f"CREATE TABLE {q} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
                       "WITH (fillfactor = 100)")
        cursor.execute(f"INSERT INTO {q} ({_COLUMNS}) {_ROWS_SELECT}",
                       {"timeframe": timeframe_id, **shape_params(instrument_ids), "start": day, "end": end,
                        "step": "1 second", "seconds": 1})
        # A CHECK matching the bounds lets ATTACH skip its scan; the parent's indexes are built on attach.
        cursor.execute(f"ALTER TABLE {q} ADD CONSTRAINT bench_bounds CHECK (open_time >= %s AND open_time < %s)",
                       [day, end])
        cursor.execute(f"ALTER TABLE {parent} ATTACH PARTITION {q} FOR VALUES FROM (%s) TO (%s)", [day, end])
        cursor.execute(f"ALTER TABLE {q} DROP CONSTRAINT bench_bounds")
        cursor.execute(f"ANALYZE {q}")
    return name


def other_bars_load(start: datetime, end: datetime, instrument_ids: list[int]) -> int:
    from django.db import connection

    from candles.bar_catalog import timeframe_id
    from candles.partitions import partitions_ensure

    steps = {"1m": ("1 minute", 60), "5m": ("5 minutes", 300), "1H": ("1 hour", 3600), "1D": ("1 day", 86400)}
    written = 0
    for bar in OTHER_BARS:
        partitions_ensure(bar=bar, start=start, end=end)
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO candles_candle ({_COLUMNS}) {_ROWS_SELECT} ON CONFLICT DO NOTHING",
                           {"timeframe": timeframe_id(bar), **shape_params(instrument_ids), "start": start,
                            "end": end, "step": steps[bar][0], "seconds": steps[bar][1]})
            written += cursor.rowcount
    return written


# Dead row versions after which autovacuum vacuums a hot `1s` leaf (its autovacuum_vacuum_threshold, set by
# candles/partitions.py). This machine's PostgreSQL runs with autovacuum off, so the churn stands in for it.
HOT_LEAF_VACUUM_AFTER = 50_000


def churn_day_write(day: datetime, instrument_ids: list[int]) -> int:
    """A day written as the live flush writes it, through `candles_upsert`: every candle's first open version
    (flat, no volume yet), its last open version, then its confirm; the leaf vacuumed as autovacuum would."""
    from django.db import connection

    from candles.bar_catalog import timeframe_id
    from candles.partitions import leaf_name
    from candles.storage import CandleRow, candles_upsert

    name = leaf_name("1s", day)
    have = leaf_rows(name)
    if have == len(instrument_ids) * 86_400:
        return 0
    with connection.cursor() as cursor:
        if have >= 0:  # an interrupted churn: written anew, or its dead versions would count twice
            cursor.execute(f"DROP TABLE {connection.ops.quote_name(name)}")
        cursor.execute(f"SELECT ci.inst_id, extract(epoch FROM q.t)::bigint * 1000, q.o::text, q.h::text, q.l::text, "
                       f"q.c::text, q.v::text, q.vc::text, q.vq::text FROM ({_ROWS_SELECT}) "
                       "AS q(id, tf, t, version, confirmed, source, o, h, l, c, v, vc, vq) "
                       "JOIN candles_instrument ci ON ci.id = q.id ORDER BY q.t, q.id",
                       {"timeframe": timeframe_id("1s"), **shape_params(instrument_ids), "start": day,
                        "end": day + timedelta(days=1), "step": "1 second", "seconds": 1})
        final = cursor.fetchall()
    written = dead = 0
    chunk = 2_000 * len(instrument_ids)
    for first in range(0, len(final), chunk):
        rows = final[first:first + chunk]
        for stage in range(3):
            batch = []
            for inst_id, ms, o, h, low, c, v, vc, vq in rows:
                version = (ms + 200 + 400 * stage) * 1000
                if stage == 0:
                    batch.append(CandleRow(inst_id, "1s", ms, Decimal(o), Decimal(o), Decimal(o), Decimal(o),
                                           Decimal(0), Decimal(0), Decimal(0), False, "ws", version))
                else:
                    batch.append(CandleRow(inst_id, "1s", ms, Decimal(o), Decimal(h), Decimal(low), Decimal(c),
                                           Decimal(v), Decimal(vc), Decimal(vq), stage == 2, "ws", version))
            result = candles_upsert(rows=batch)
            written += result.written
            dead += result.updated
        if dead >= HOT_LEAF_VACUUM_AFTER:
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM {connection.ops.quote_name(name)}")
            dead = 0
    return written


def load(instruments: int, days: int, today: datetime) -> tuple[list[datetime], datetime]:
    from django.db import connection

    from candles.bar_catalog import timeframe_id
    from candles.partitions import partition_close_out, partitions_premake

    by_symbol = instruments_ensure(instruments)
    ids = sorted(by_symbol.values())
    loaded = [today - timedelta(days=n) for n in range(days, 0, -1)]
    churn = loaded[0] - timedelta(days=1)
    retention_set("1s", timedelta(days=days + 5))  # the month must be inside the horizon while it loads
    partitions_premake(now=datetime.now(UTC))
    started = time.monotonic()
    for n, day in enumerate(loaded, 1):
        day_leaf_build(day, ids, timeframe_id("1s"))
        log(f"  1s {day:%Y-%m-%d} loaded ({n}/{len(loaded)}, {time.monotonic() - started:.0f} s)")
    other = other_bars_load(loaded[0], today, ids)
    log(f"  {', '.join(OTHER_BARS)}: {other:,} candles added")
    written = churn_day_write(churn, ids)
    if written:
        log(f"  churn day {churn:%Y-%m-%d}: {written:,} row versions written through candles_upsert")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE candles_instrument")
    closed = 0
    while (name := partition_close_out(now=datetime.now(UTC))) is not None:
        closed += 1
        log(f"  closed out {name} ({closed})")
    return loaded, churn


def total_candles() -> int:
    from candles.partitions import partition_list

    return sum(leaf.live_rows for leaf in partition_list())


# --- (a) the live-like batch --------------------------------------------------------------------------------------


def live_batch(symbols: list[str], base: datetime, window: int, version: int) -> list:
    """The confirms of window `window - 1`'s `1s` candles, the opens of window `window`, the open `1m` candles."""
    from candles.storage import CandleRow

    rows = []
    start = int(base.timestamp()) + window * LIVE_WINDOW_S
    for n, symbol in enumerate(symbols):
        for s in range(start - LIVE_WINDOW_S, start + LIVE_WINDOW_S):
            price = Decimal(30000 + n * 100 + (s * 7919) % 20000 / 10).quantize(Decimal("0.1"))
            vol = Decimal((s * 31 + n) % 100000) / 10000
            rows.append(CandleRow(symbol, "1s", s * 1000, price, price + 1, price - 1, price, vol,
                                  round(vol * price, 5), round(vol * price, 5), s < start, "ws", version))
        minute = (start + LIVE_WINDOW_S) // 60 * 60
        for m in range(minute - 5 * 60, minute + 60, 60):
            rows.append(CandleRow(symbol, "1m", m * 1000, Decimal("30000.1"), Decimal("30010.5"), Decimal("29990.2"),
                                  Decimal("30001.7"), Decimal("12.3456"), Decimal("370383.1"), Decimal("370383.1"),
                                  m < minute, "ws", version))
    return rows


def current_leaves_truncate(now: datetime) -> None:
    """Both databases start (a) and (c) from empty current `1s` leaves: they differ only by the month behind."""
    from django.db import connection

    from candles.partitions import leaf_name, partitions_premake

    partitions_premake(now=now)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with connection.cursor() as cursor:
        for d in (day, day + timedelta(days=1)):
            cursor.execute(f"TRUNCATE {connection.ops.quote_name(leaf_name('1s', d))}")


def upsert_ratio(full: str, empty: str, symbols: list[str], rounds: int, now: datetime) -> list[tuple[float, float]]:
    from candles.storage import candles_upsert

    base = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=1)
    for name in (full, empty):
        use_database(name)
        current_leaves_truncate(now)
    pairs = []
    for window in range(rounds + 1):
        version = time.time_ns() // 1000
        batch = live_batch(symbols, base, window, version)
        rates = {}
        for name in ((full, empty) if window % 2 else (empty, full)):
            use_database(name)
            candles_upsert(rows=batch[:10])  # the connection and the caches warm, outside the timing
            started = time.perf_counter()
            result = candles_upsert(rows=batch)
            rates[name] = len(batch) / (time.perf_counter() - started)
            assert not result.rejected, result.rejected[:3]
        if window:  # the first window only inserts: a warm-up
            pairs.append((rates[full], rates[empty]))
    use_database(full)
    return pairs


# --- (b) reads ---------------------------------------------------------------------------------------------------


def data_reads(symbols: list[str], days: list[datetime], reads: int, rng: random.Random) -> list[float]:
    from django.test import Client

    client = Client()
    timings = []
    for n in range(reads + 20):
        symbol = rng.choice(symbols)
        day = rng.choice(days)
        start = int(day.timestamp() * 1000) + rng.randrange(0, 86_400 - 1_000) * 1000
        started = time.perf_counter()
        response = client.get(f"/api/v1/data/{symbol}/1s", {"start_time": start, "limit": 1000, "sort": "asc"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (response.status_code, response.content[:300])
        if n >= 20:  # warm-up
            timings.append(elapsed * 1000)
    return timings


# --- (c) retention under the live flush --------------------------------------------------------------------------


class LiveFlush(threading.Thread):
    """Writes the `1s` candle that just closed (and the open `1m`) of every instrument each second, and records
    the lag from that candle's close to the commit."""

    def __init__(self, symbols: list[str]):
        super().__init__(name="bench-flush", daemon=True)
        self.symbols = symbols
        self.lags: list[tuple[float, float]] = []  # (when, lag s)
        self.stop = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from candles.storage import CandleRow, candles_upsert

        try:
            while not self.stop.is_set():
                now = time.time()
                closed = int(now) - 1
                version = int(now * 1_000_000)
                rows = []
                for symbol in self.symbols:
                    for s, confirmed in ((closed, True), (closed + 1, False)):
                        rows.append(CandleRow(symbol, "1s", s * 1000, Decimal("30000.1"), Decimal("30000.6"),
                                              Decimal("29999.8"), Decimal("30000.3"), Decimal("1.2345"),
                                              Decimal("37037.46"), Decimal("37037.46"), confirmed, "ws", version))
                    rows.append(CandleRow(symbol, "1m", closed // 60 * 60_000, Decimal("30000.1"), Decimal("30010.5"),
                                          Decimal("29990.2"), Decimal("30001.7"), Decimal("12.3456"),
                                          Decimal("370383.1"), Decimal("370383.1"), False, "ws", version))
                candles_upsert(rows=rows)
                committed = time.time()
                self.lags.append((committed, committed - (closed + 1)))
                self.stop.wait(max(0.0, int(now) + 1 - time.time()))
        finally:
            connection.close()


@contextmanager
def live_flush(symbols: list[str]) -> Iterator[LiveFlush]:
    flush = LiveFlush(symbols)
    flush.start()
    try:
        yield flush
    finally:
        flush.stop.set()
        flush.join(10)


class SlowReader(threading.Thread):
    """An analyst's 3 s query over the bar, holding its tables' locks until it ends."""

    def __init__(self, seconds: float):
        super().__init__(name="bench-reader", daemon=True)
        self.seconds = seconds
        self.started = threading.Event()

    def run(self) -> None:
        from django.db import connection, transaction

        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM candles_candle c "
                               "JOIN candles_timeframe t ON t.id = c.timeframe_id "
                               "WHERE t.code = '1s' AND c.open_time < now() - interval '20 days' "
                               "AND c.instrument_id = 0")
                self.started.set()
                cursor.execute("SELECT pg_sleep(%s)", [self.seconds])
        finally:
            self.started.set()
            connection.close()


def retire_oldest(days: list[datetime], now: datetime, *, reader_s: float = 0.0) -> tuple[float, object, str]:
    """Retention of `1s` shortened so exactly the oldest stored day is behind the horizon; then enforced."""
    from candles.partitions import partition_list
    from candles.retention import retention_enforce

    oldest = min(leaf.start for leaf in partition_list(bar="1s"))
    # The horizon (now − retention) a minute past the oldest day's end: that day goes, the next one stays.
    retention_set("1s", now - (oldest + timedelta(days=1)) - timedelta(minutes=1))
    reader = None
    if reader_s:
        reader = SlowReader(reader_s)
        reader.start()
        reader.started.wait(10)
    started = time.perf_counter()
    result = retention_enforce(now=now)
    took = time.perf_counter() - started
    if reader is not None:
        reader.join(reader_s + 10)
    return took, result, f"{oldest:%Y-%m-%d}"


def lag_figures(lags: list[tuple[float, float]], since: float, until: float) -> tuple[int, float, float]:
    window = sorted(lag for when, lag in lags if since <= when <= until + 1.5)
    if not window:
        return 0, float("nan"), float("nan")
    p99 = window[min(len(window) - 1, int(len(window) * 0.99))]
    return len(window), p99, window[-1]


# --- (d) bytes per candle, (e) archive, (f) admin ---------------------------------------------------------------


def bytes_per_candle(name: str) -> tuple[int, int, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_total_relation_size(%s), (SELECT count(*) FROM {connection.ops.quote_name(name)})",
                       [name])
        size, rows = cursor.fetchone()
    return size, rows, size / rows if rows else float("nan")


def admin_pages(rounds: int) -> dict[str, list[float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from candles.bar_catalog import timeframe_id

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-storage").first() or user_model.objects.create_superuser(
        "bench-storage", "bench@example.invalid", "bench-storage-not-secret")
    client = Client()
    client.force_login(user)
    bar_1s = timeframe_id("1s")
    day = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    pages = {
        "candle list (its default window)": "/admin/candles/candlerecord/",
        "candle list, one series (an instrument's 1s, any time)":
            f"/admin/candles/candlerecord/?q={SYMBOL_FORMAT.format(0)}&timeframe__id__exact={bar_1s}",
        "candle list, filtered by bar (1s)": f"/admin/candles/candlerecord/?timeframe__id__exact={bar_1s}",
        f"candle list, one day ({day}, 1.04 M 1s candles)": f"/admin/candles/candlerecord/?window={day}",
        "candle list, search (an instrument)": f"/admin/candles/candlerecord/?q={SYMBOL_FORMAT.format(3)}",
        "admin dashboard": "/admin/",
    }
    timings: dict[str, list[float]] = {}
    for name, url in pages.items():
        client.get(url)
        for _ in range(rounds):
            started = time.perf_counter()
            response = client.get(url)
            timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (name, response.status_code)
    return timings


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


# --- the run -----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=12)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10, help="(a): alternating upsert rounds")
    parser.add_argument("--reads", type=int, default=500, help="(b): /data reads of 1,000 candles")
    parser.add_argument("--reuse", action="store_true", help="keep a loaded full database instead of starting anew")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    archive_dir = Path(tempfile.mkdtemp(prefix="okx-bench-archive-"))
    full, empty = _environment(archive_dir)
    try:
        return run(args, full, empty, rng, archive_dir)
    finally:
        shutil.rmtree(archive_dir, ignore_errors=True)


def run(args: argparse.Namespace, full: str, empty: str, rng: random.Random, archive_dir: Path) -> int:
    log(f"storage bench: {args.instruments} instruments × {args.days} days of 1s (+ {', '.join(OTHER_BARS)}); "
        f"databases {full} (full) and {empty} (empty)")
    database_create(full, fresh=not args.reuse)
    database_create(empty, fresh=True)
    import django

    django.setup()
    from candles.partitions import leaf_name, partition_list

    for name in (full, empty):
        use_database(name)
        migrate()
    use_database(empty)
    instruments_ensure(args.instruments)
    use_database(full)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    started = time.monotonic()
    days, churn = load(args.instruments, args.days, today)
    candles = total_candles()
    leaves = partition_list()
    log(f"loaded in {time.monotonic() - started:.0f} s: {candles:,} candles in {len(leaves)} leaves")
    symbols = [SYMBOL_FORMAT.format(i) for i in range(args.instruments)]

    # (d) first: nothing below has touched these leaves yet.
    loaded_size = bytes_per_candle(leaf_name("1s", days[len(days) // 2]))
    churn_size = bytes_per_candle(leaf_name("1s", churn))

    log("(a) candles_upsert of a live-like batch, full vs empty table")
    pairs = upsert_ratio(full, empty, symbols, args.rounds, datetime.now(UTC))
    ratios = [f / e for f, e in pairs]

    log(f"(b) {args.reads} reads of 1,000 1s candles through /api/v1/data")
    reads = data_reads(symbols, days[1:], args.reads, rng)

    log("(e) archive_write of one day")
    from candles.archive import archive_write
    from candles.retention import retention_enforce

    archived_day = days[len(days) // 2]
    archive = archive_write(table=leaf_name("1s", archived_day), bar="1s", start=archived_day,
                            end=archived_day + timedelta(days=1), directory=archive_dir)

    log("(c) retention retires the oldest day while the flush writes every second")
    with live_flush(symbols) as flush:
        time.sleep(5)
        since = time.time()
        took_plain, result_plain, day_plain = retire_oldest(days, datetime.now(UTC))
        until = time.time()
        time.sleep(2.5)  # the flushes of the window, and the one after it, have landed
        plain_window = lag_figures(flush.lags, since, until)
        since = time.time()
        took_reader, result_reader, day_reader = retire_oldest(days, datetime.now(UTC), reader_s=3.0)
        until = time.time()
        time.sleep(2.5)
        reader_window = lag_figures(flush.lags, since, until)
        # The next maintenance run, once the reader is gone, finishes what the reader held up.
        started = time.perf_counter()
        result_after = retention_enforce(now=datetime.now(UTC))
        took_after = time.perf_counter() - started
        time.sleep(2.5)
        baseline = lag_figures(flush.lags, 0, time.time())
    retention_set("1s", timedelta(days=args.days + 5))

    log("(f) the admin")
    admin = admin_pages(rounds=7)

    print(f"\nfigures ({candles:,} candles; {len(leaves)} leaves):", flush=True)
    figure("(a) upsert rows/s, full table / empty (median of rounds)",
           f"{statistics.median(f for f, _ in pairs):,.0f} / {statistics.median(e for _, e in pairs):,.0f}")
    figure("(a) ratio full/empty, median (min–max)",
           f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}), {len(ratios)} rounds",
           "target >= 0.8", verdict(statistics.median(ratios) >= 0.8))
    figure("(b) /data 1,000 1s candles, p50 (p90, p99)",
           f"{p(reads, 0.5):.1f} ms ({p(reads, 0.9):.1f}, {p(reads, 0.99):.1f} ms), {len(reads)} reads",
           "target <= 10 ms", verdict(p(reads, 0.5) <= 10))
    dropped_plain = sum(c.dropped for c in result_plain.bars.values())
    figure(f"(c) retention retiring {day_plain} ({dropped_plain} leaf dropped)", f"{took_plain:.2f} s",
           "target <= 1 s", verdict(took_plain <= 1 and dropped_plain == 1))
    figure("(c) flush lag p99 (max) meanwhile", f"{plain_window[1]:.2f} s ({plain_window[2]:.2f} s), "
           f"{plain_window[0]} flushes", "target <= 2 s", verdict(plain_window[1] <= 2))
    dropped_reader = sum(c.dropped for c in result_reader.bars.values())
    figure(f"(c) the same behind a 3 s reader of the bar: retiring {day_reader}",
           f"{took_reader:.2f} s, {dropped_reader} dropped (held up: the next run's)", "reported")
    dropped_after = sum(c.dropped for c in result_after.bars.values())
    figure("(c) the next run once the reader is gone", f"{took_after:.2f} s, {dropped_after} dropped",
           "target <= 1 s", verdict(took_after <= 1 and dropped_reader + dropped_after == 1))
    figure("(c) flush lag p99 (max) meanwhile", f"{reader_window[1]:.2f} s ({reader_window[2]:.2f} s), "
           f"{reader_window[0]} flushes", "target <= 2 s", verdict(reader_window[1] <= 2))
    figure("(c) flush lag over the whole phase, p99 (max)", f"{baseline[1]:.2f} s ({baseline[2]:.2f} s)")
    figure("(d) bytes per closed candle: a loaded day, closed out",
           f"{loaded_size[2]:.1f} B ({loaded_size[0] / 2**20:.0f} MB / {loaded_size[1]:,})", "target <= 150",
           verdict(loaded_size[2] <= 150))
    figure("(d) bytes per closed candle: the churn day, closed out",
           f"{churn_size[2]:.1f} B ({churn_size[0] / 2**20:.1f} MB / {churn_size[1]:,})", "target <= 150",
           verdict(churn_size[2] <= 150))
    rate = archive.rows / archive.seconds if archive.seconds else float("nan")
    figure("(e) archive: one day of 1s", f"{archive.rows:,} candles in {archive.seconds:.1f} s "
           f"({rate / 1e6:.2f} M/s), verified", "reported")
    figure("(e) archive: size", f"{archive.bytes / 2**20:.1f} MB, {archive.bytes / 2**20 / archive.rows * 1e6:.1f} "
           "MB per million candles", "reported")
    for name, values in admin.items():
        figure(f"(f) {name}, p50", f"{p(values, 0.5):.0f} ms (max {max(values):.0f} ms)", "target <= 500 ms",
               verdict(p(values, 0.5) <= 500))
    return 0


if __name__ == "__main__":
    sys.exit(main())
