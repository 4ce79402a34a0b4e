"""`manage.py export`: stored candles as CSV or Parquet, exact to the digit, streamed from the real PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from candles import parquet
from candles.bars import ms_to_datetime
from candles.management.commands import export
from candles.storage import candles_upsert
from tests.conftest import build_row

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "collectors" / "okx" / "samples"
HEADER = "timestamp,open_time_ms,open,high,low,close,volume,volume_currency,volume_quote,confirm"


def okx_rows(name: str) -> list[list[str]]:
    """A recorded OKX REST answer's rows, oldest first: [ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]."""
    answer = json.loads((SAMPLES / "rest_candles.json").read_text())[name]
    return sorted(answer["data"], key=lambda row: int(row[0]))


def store(inst_id: str, bar: str, rows: list[list[str]], source: str = "rest") -> None:
    """Stored through the one write path, as the backfill stores OKX's rows."""
    result = candles_upsert(rows=[
        build_row(int(r[0]), inst_id=inst_id, bar=bar, open=r[1], high=r[2], low=r[3], close=r[4], vol=r[5],
                  vol_ccy=r[6], vol_ccy_quote=r[7], confirmed=r[8] == "1", source=source)
        for r in rows
    ])
    assert not result.rejected


def csv_line(row: list[str]) -> str:
    ms = int(row[0])
    return ",".join([ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%SZ"), str(ms), *row[1:7], row[7] or "",
                     "true" if row[8] == "1" else "false"])


def run_export(*args: str, stdout=None) -> tuple[str, str]:
    out, err = stdout or StringIO(), StringIO()
    call_command("export", *args, stdout=out, stderr=err)
    return (out.getvalue() if isinstance(out, StringIO) else ""), err.getvalue()


@pytest.fixture
def okx_1h(btc) -> list[list[str]]:
    """Four real BTC-USDT 1H candles as OKX served them (2024-01-16 16:00 to 19:00 UTC), stored."""
    rows = okx_rows("hummingbot_spot_1H_newest_first")
    store("BTC-USDT", "1H", rows)
    return rows


def test_it_writes_okx_candles_to_stdout_digit_for_digit(okx_1h):
    out, err = run_export("BTC-USDT", "1H", "--from", "2024-01-16", "--to", "2024-01-17")

    assert out.splitlines() == [HEADER, *map(csv_line, okx_1h)]
    assert out.splitlines()[1] == (
        "2024-01-16T16:00:00Z,1705420800000,43253.6,43440.2,43000,43250.9,942.87870026,40743115.773175484,"
        "40743115.773175484,true"
    )
    assert re.fullmatch(r"BTC-USDT 1H: 4 rows in \d+\.\ds\n", err)


def test_the_range_is_inclusive_and_in_utc(okx_1h):
    # 17:00 and 18:00 UTC, named once in UTC+8 and once in epoch milliseconds.
    out, _ = run_export("BTC-USDT", "1H", "--from", "2024-01-17T01:00:00+08:00", "--to", "1705428000000", "--quiet")

    assert out.splitlines() == [HEADER, *map(csv_line, okx_1h[1:3])]


def test_an_open_candle_is_exported_unless_confirmed_only(instrument):
    instrument("BTC-USD-SWAP", inst_type="SWAP")
    rows = okx_rows("ccxt_comment_inverse_swap_1m_first_row_open")  # the newest row is still open
    store("BTC-USD-SWAP", "1m", rows[:2])
    store("BTC-USD-SWAP", "1m", rows[2:], source="ws")

    everything, _ = run_export("BTC-USD-SWAP", "1m", "--from", "2023-03-16", "--to", "2023-03-17", "--quiet")
    closed, _ = run_export("BTC-USD-SWAP", "1m", "--from", "2023-03-16", "--to", "2023-03-17", "--quiet",
                           "--confirmed-only")

    assert everything.splitlines()[-1] == (
        "2023-03-16T01:06:00Z,1678928760000,24341.4,24344,24313.2,24323,628,2.5819,62800,false"
    )
    assert everything.splitlines() == [HEADER, *map(csv_line, rows)]
    assert closed.splitlines() == [HEADER, *map(csv_line, rows[:2])]


def test_scale_and_missing_quote_volume_come_out_as_stored(btc):
    store("BTC-USDT", "1m", [
        ["1705431600000", "43000.0", "43000.10", "0.00000001", "0.00000001", "0", "0.000", None, "1"],
        ["1705431660000", "1E+2", "100", "100", "100", "17447600.212916623", "1", "1.50", "1"],
    ])

    out, _ = run_export("BTC-USDT", "1m", "--from", "1705431600000", "--to", "1705431660000", "--quiet")

    assert out.splitlines()[1:] == [
        # Trailing zeros kept, no exponent, and the 7-field shape's absent quote volume empty (not "None", not 0).
        "2024-01-16T19:00:00Z,1705431600000,43000.0,43000.10,0.00000001,0.00000001,0,0.000,,true",
        # PostgreSQL's numeric has no exponent: 1E+2 is stored, and read, as 100.
        "2024-01-16T19:01:00Z,1705431660000,100,100,100,100,17447600.212916623,1,1.50,true",
    ]


def test_to_a_file_with_progress_on_stderr_and_a_summary(okx_1h, tmp_path):
    target = tmp_path / "btc-1h.csv"

    out, err = run_export("BTC-USDT", "1H", "--from", "2024-01-16", "--to", "2024-01-17", "-o", str(target))

    assert target.read_text() == "\n".join([HEADER, *map(csv_line, okx_1h)]) + "\n"
    assert out.startswith(f"BTC-USDT 1H: 4 rows from 2024-01-16T00:00:00Z to 2024-01-17T00:00:00Z written to "
                          f"{target} (0.0 MB) in ")
    assert err.splitlines()[-1].startswith("BTC-USDT 1H: 4 of 4 rows (100%), ")
    assert os.listdir(tmp_path) == ["btc-1h.csv"]  # no partial file left beside it


def test_rows_stream_through_a_server_side_cursor_in_open_time_order(btc, monkeypatch):
    monkeypatch.setattr(export, "CHUNK_ROWS", 7)  # 100 rows: 15 fetches, boundaries inside the range
    start = ms_to_datetime(1_705_431_600_000)
    candles_upsert(rows=[build_row(start + timedelta(minutes=i), close=f"{100 + i}.5", high="300")
                         for i in reversed(range(100))])

    class Observed(io.StringIO):
        """Records, at each write, the server-side cursors this session holds open."""

        cursors: list[tuple[bool, bool]] = []

        def write(self, text: str) -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT is_holdable, is_scrollable FROM pg_cursors")
                self.cursors.extend(cursor.fetchall())
            return super().write(text)

    stream = Observed()
    run_export("BTC-USDT", "1m", "--from", iso_of(start), "--to", iso_of(start + timedelta(hours=5)), "--quiet",
               stdout=stream)

    lines = stream.getvalue().splitlines()[1:]
    assert [line.split(",")[5] for line in lines] == [f"{100 + i}.5" for i in range(100)]
    assert len(lines) == len(set(lines)) == 100
    # While rows were written, a cursor WITHOUT HOLD was open on the server: fetched in chunks, never all at once.
    assert (False, False) in Observed.cursors


def iso_of(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_empty_range_is_a_header_alone(okx_1h):
    out, err = run_export("BTC-USDT", "1H", "--from", "2025-01-01", "--to", "2025-02-01")

    assert out == HEADER + "\n"
    assert re.fullmatch(r"BTC-USDT 1H: 0 rows in \d+\.\ds\n", err)


# --- parquet ----------------------------------------------------------------------------------------------

PARQUET_COLUMNS = ["timestamp", "open_time_ms", "open", "high", "low", "close", "volume", "volume_currency",
                   "volume_quote", "confirm"]


@pytest.fixture
def exact_1m(btc) -> None:
    """Digits a float would lose, a NULL quote volume (OKX's 7-field rows) and a candle still open."""
    store("BTC-USDT", "1m", [
        ["1705431600000", "43000.10", "43100", "0.00000001", "43000.0", "0.00000001", "17447600.212916623", None,
         "1"],
        ["1705431660000", "43000.0", "43000.10", "42999.99", "43000.00", "0", "0.000", "1.50", "0"],
    ], source="ws")  # open candles are stored from the websocket only


def test_parquet_to_a_file_keeps_every_digit_with_progress_and_no_partial_file(exact_1m, tmp_path):
    target = tmp_path / "btc-1m.parquet"

    out, err = run_export("BTC-USDT", "1m", "--from", "2024-01-16", "--to", "2024-01-17", "--format", "parquet",
                          "-o", str(target))

    frame = pd.read_parquet(target)
    assert list(frame.columns) == PARQUET_COLUMNS
    assert frame.astype(object).where(frame.notna(), None).to_dict("records") == [
        {"timestamp": pd.Timestamp("2024-01-16T19:00:00Z"), "open_time_ms": 1705431600000, "open": "43000.10",
         "high": "43100", "low": "0.00000001", "close": "43000.0", "volume": "0.00000001",
         "volume_currency": "17447600.212916623", "volume_quote": None, "confirm": True},
        {"timestamp": pd.Timestamp("2024-01-16T19:01:00Z"), "open_time_ms": 1705431660000, "open": "43000.0",
         "high": "43000.10", "low": "42999.99", "close": "43000.00", "volume": "0", "volume_currency": "0.000",
         "volume_quote": "1.50", "confirm": False},
    ]
    assert pl.read_parquet(target)["volume_currency"].to_list() == ["17447600.212916623", "0.000"]
    assert out.startswith(f"BTC-USDT 1m: 2 rows from 2024-01-16T00:00:00Z to 2024-01-17T00:00:00Z written to "
                          f"{target} (0.0 MB) in ")
    assert err.splitlines()[-1].startswith("BTC-USDT 1m: 2 of 2 rows (100%), ")
    assert os.listdir(tmp_path) == ["btc-1m.parquet"]


def test_parquet_has_the_api_encoding_and_says_what_it_holds(exact_1m, tmp_path):
    target = tmp_path / "out.parquet"
    run_export("BTC-USDT", "1m", "--from", "2024-01-16", "--to", "2024-01-17", "--format", "parquet", "--quiet",
               "--confirmed-only", "-o", str(target))

    assert pq.read_schema(target).remove_metadata() == parquet.candle_schema()
    metadata = pq.read_metadata(target)
    assert metadata.num_rows == 1  # the open candle left out
    assert metadata.row_group(0).column(2).compression == "ZSTD"
    assert {k.decode(): v.decode() for k, v in metadata.metadata.items() if k.startswith(b"okx_candles.")} == {
        "okx_candles.format": "1", "okx_candles.symbol": "BTC-USDT", "okx_candles.bar": "1m",
        "okx_candles.start": "2024-01-16T00:00:00Z", "okx_candles.end": "2024-01-17T00:00:00Z",
        "okx_candles.sort": "asc", "okx_candles.confirmed_only": "true"}


def test_parquet_streams_from_the_server_side_cursor_in_row_groups(btc, monkeypatch, tmp_path):
    monkeypatch.setattr(export, "CHUNK_ROWS", 7)
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 30)  # 100 rows: 15 fetches gathered into row groups
    start = ms_to_datetime(1_705_431_600_000)
    candles_upsert(rows=[build_row(start + timedelta(minutes=i), close=f"{100 + i}.5", high="300")
                         for i in reversed(range(100))])
    target = tmp_path / "out.parquet"

    run_export("BTC-USDT", "1m", "--from", iso_of(start), "--to", iso_of(start + timedelta(hours=5)), "--quiet",
               "--format", "parquet", "-o", str(target))

    parquet_file = pq.ParquetFile(target)
    # Each group is written once it holds 30 rows (5 fetches of 7 = 35), the rest at the end.
    assert [parquet_file.metadata.row_group(i).num_rows for i in range(parquet_file.num_row_groups)] == [
        35, 35, 30]
    assert parquet_file.read()["close"].to_pylist() == [f"{100 + i}.5" for i in range(100)]


def test_parquet_to_stdout_goes_to_its_bytes_and_an_empty_range_is_a_file_without_rows(exact_1m):
    stdout = io.BytesIO()
    run_export("BTC-USDT", "1m", "--from", "2024-01-16", "--to", "2024-01-17", "--format", "parquet", "--quiet",
               stdout=stdout)
    assert pq.read_table(io.BytesIO(stdout.getvalue()))["open"].to_pylist() == ["43000.10", "43000.0"]

    empty = io.BytesIO()
    run_export("BTC-USDT", "1m", "--from", "2030-01-01", "--to", "2030-01-02", "--format", "parquet", "--quiet",
               stdout=empty)
    frame = pd.read_parquet(io.BytesIO(empty.getvalue()))
    assert (list(frame.columns), len(frame)) == (PARQUET_COLUMNS, 0)


def test_parquet_is_not_written_to_a_text_stream(exact_1m):
    with pytest.raises(CommandError, match=r"--format parquet writes binary: give --output FILE"):
        run_export("BTC-USDT", "1m", "--from", "2024-01-16", "--to", "2024-01-17", "--format", "parquet")


@pytest.mark.parametrize(("args", "message"), [
    (("ETH-USDT", "1H"), r"unknown instrument 'ETH-USDT'"),
    (("BTC-USDT", "1h"), r"timeframe '1h' is not an OKX bar; bars are case-sensitive"),
    (("BTC-USDT", "1H", "--from", "2024-02-01", "--to", "2024-01-01"), r"--from 2024-02-01T00:00:00Z is after --to"),
    (("BTC-USDT", "1H", "--from", "soon", "--to", "2024-01-01"), r"--from: 'soon' is neither an ISO 8601"),
    (("BTC-USDT", "1H", "--price", "index"), r"'BTC-USDT' has no index series \(it has: trade\)"),
])
def test_bad_arguments_get_a_clear_message(okx_1h, args, message):
    times = () if "--from" in args else ("--from", "2024-01-01", "--to", "2024-02-01")
    with pytest.raises(CommandError, match=message):
        run_export(*args, *times)


def test_an_unwritable_output_is_refused_before_any_query(okx_1h, tmp_path):
    with pytest.raises(CommandError, match=r"cannot write .*/missing/out.csv: No such file or directory"):
        run_export("BTC-USDT", "1H", "--from", "2024-01-16", "--to", "2024-01-17", "-o",
                   str(tmp_path / "missing" / "out.csv"))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_reader_that_stops_early_is_not_an_error(btc):
    """`export … | head`: the closed pipe ends the export quietly, with status 0."""
    start = ms_to_datetime(1_705_431_600_000)
    candles_upsert(rows=[build_row(start + timedelta(minutes=i)) for i in range(5_000)])  # ~450 KB of CSV
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    export_cmd = [sys.executable, "manage.py", "export", "BTC-USDT", "1m", "--from", "2024-01-16", "--to",
                  "2024-01-31", "--skip-checks"]  # system checks are tested elsewhere

    with subprocess.Popen(export_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        head = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()  # the reader goes away
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)

    assert head[0].decode().rstrip("\n") == HEADER
    assert head[1].decode().startswith("2024-01-16T19:00:00Z,1705431600000,100,110,90,105,")
    assert code == 0, err
    assert "Traceback" not in err
    assert "BrokenPipe" not in err


def test_the_mark_price_series_of_a_swap_is_exported_apart_from_its_trades_without_volumes(instrument, tmp_path):
    instrument("BTC-USDT-SWAP", inst_type="SWAP")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    t0 = 1_705_431_600_000
    none = {"vol": None, "vol_ccy": None, "vol_ccy_quote": None}
    candles_upsert(rows=[build_row(t0, inst_id="BTC-USDT-SWAP", close="105"),
                         build_row(t0, inst_id="BTC-USDT-SWAP", close="105.25", price="mark", **none)])
    when = ("--from", "2024-01-16", "--to", "2024-01-17")

    trade, _ = run_export("BTC-USDT-SWAP", "1m", *when)
    mark, err = run_export("BTC-USDT-SWAP", "1m", "--price", "mark", *when)

    assert trade.splitlines()[1].split(",")[5:9] == ["105", "1.5", "157.5", "157.5"]
    assert mark.splitlines() == [HEADER, "2024-01-16T19:00:00Z,1705431600000,100,110,90,105.25,,,,true"]
    assert err.startswith("BTC-USDT-SWAP 1m mark: 1 rows")
    path = tmp_path / "mark.parquet"
    run_export("BTC-USDT-SWAP", "1m", "--price", "mark", *when, "--format", "parquet", "-o", str(path))
    table = pq.read_table(path)
    assert (table.column("close").to_pylist(), table.column("volume").to_pylist()) == (["105.25"], [None])
    assert pq.read_metadata(path).metadata[b"okx_candles.price"] == b"mark"
    with pytest.raises(CommandError, match="OKX has no 1s mark candles"):
        run_export("BTC-USDT-SWAP", "1s", "--price", "mark", *when)
