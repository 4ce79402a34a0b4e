"""`manage.py collector_status` on a real collector runtime connected to the OKX simulator over real sockets,
with the real Redis (a key prefix of the test's own) and PostgreSQL.

The tests are transactional: the flush commits, and `--watch` runs in a subprocess that reads the rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
import redis as redis_lib
import redis.asyncio
from django.core.management import CommandError, call_command
from django.db import connection

from candles.models import Instrument, Subscription, SubscriptionStatus, Timeframe
from collectors.live.flush import buffer_flush
from collectors.live.runtime import CollectorRuntime, RuntimeConfig, SubscriptionSnapshot
from collectors.monitoring.health import health_check
from collectors.monitoring.status import channel_statuses, collector_statuses, pipeline_overview
from collectors.okx.protocol import Channel
from collectors.simulator import SimulatorConfig, ThreadedSimulator, run_in_thread
from okxproject.keys import Keys
from tests.support import wait_for
from tests.support.ports import free_port as unused_port
from tests.support.signals import default_sigint

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_ID = "test-collector-1"
COLLECTED = (("BTC-USDT", "1s"), ("ETH-USDT", "1m"), ("NOPE-USDT", "1m"))  # NOPE-USDT: OKX refuses it

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class RuntimeThread(threading.Thread):
    """The collector runtime on its own event loop, collecting COLLECTED from the simulator."""

    def __init__(self, ws_url: str, keys: Keys, redis_url: str):
        super().__init__(daemon=True)
        specs = {tf.code: tf.spec for tf in Timeframe.objects.all()}
        snapshot = SubscriptionSnapshot(channels=frozenset(Channel(i, b) for i, b in COLLECTED), specs=specs)
        config = RuntimeConfig(ws_url=ws_url, keys=keys, shards=2, lease_ttl_s=5, reconcile_s=0.5,
                               status_interval_s=0.2, collector_id=COLLECTOR_ID)
        self.runtime = CollectorRuntime(config, redis_factory=lambda: redis.asyncio.Redis.from_url(redis_url),
                                        load_snapshot=lambda: snapshot)
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.runtime.run())
        self.loop.close()

    def stop(self) -> None:
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.runtime.stop)
        self.join(15)


@pytest.fixture
def keys(settings) -> Iterator[Keys]:
    keys = Keys(prefix=f"test:cli-status:{uuid.uuid4().hex}:")
    settings.REDIS_KEY_PREFIX = keys.prefix
    url = settings.REDIS_URL  # a test may point REDIS_URL elsewhere
    yield keys
    client = redis_lib.Redis.from_url(url)
    stale = list(client.scan_iter(match=f"{keys.prefix}*"))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def r(settings) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def running(settings, keys, r) -> Iterator[ThreadedSimulator]:
    """A collector collecting three channels (one refused by OKX), one paused subscription, one dead letter,
    a flush and a health check done: the state a running system is in."""
    config = SimulatorConfig(seed=5, instruments=2, bars=("1s", "1m"), push_interval=0.2)
    with run_in_thread(config, port=0) as sim:
        for inst_id in ("BTC-USDT", "ETH-USDT", "NOPE-USDT"):
            Instrument.objects.create(inst_id=inst_id, inst_type="SPOT")
        for inst_id, bar in COLLECTED:
            Subscription.objects.create(instrument=Instrument.objects.get(inst_id=inst_id),
                                        timeframe=Timeframe.objects.get(code=bar))
        Subscription.objects.create(instrument=Instrument.objects.get(inst_id="ETH-USDT"),
                                    timeframe=Timeframe.objects.get(code="1s"), is_active=False)
        collector = RuntimeThread(sim.ws_url, keys, settings.REDIS_URL)
        collector.start()
        try:
            def ready() -> bool:
                statuses = channel_statuses(r, keys)
                btc, nope = statuses.get(("BTC-USDT", "1s")), statuses.get(("NOPE-USDT", "1m"))
                return bool(btc and btc.last_confirmed_open and nope and nope.state == "invalid")

            wait_for(ready, what="the collector to report its channels")
            sim.simulator.send_malformed(1)
            wait_for(lambda: pipeline_overview(r, keys)["dead_letters"] >= 1, what="a dead letter")
            buffer_flush(redis=r, keys=keys)
            health_check(redis=r, keys=keys)
            yield sim
        finally:
            collector.stop()


def run_status(*args: str) -> str:
    out = StringIO()
    call_command("collector_status", *args, stdout=out)
    return out.getvalue()


def section(text: str, title: str) -> list[list[str]]:
    """The rows of the table under the line starting with `title`, split into cells (header first)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    rows = []
    for line in lines[start:]:
        if not line:
            break
        rows.append(re.split(r" {2,}", line.strip()))
    return rows


def test_it_shows_collectors_channels_and_the_pipeline_as_aligned_tables(running, r, keys):
    out = run_status()

    assert out.startswith("Collectors: 1 of 1 alive\n")
    header, collector = section(out, "Collectors:")
    assert header == ["ID", "ALIVE", "SHARDS", "CONNECTIONS", "CHANNELS", "MESSAGES", "RECONNECTS", "ERRORS",
                      "HEARTBEAT"]
    assert collector[:5] == [COLLECTOR_ID, "yes", "0-1", "1 open", "2"]  # NOPE-USDT's channel was refused
    assert int(collector[5].replace(",", "")) > 0
    (reader,) = collector_statuses(r, keys)
    assert collector[6:8] == ["0", str(reader.errors)]  # the malformed frame and the refused channel count
    assert re.fullmatch(r"\d\.\ds ago", collector[8])

    assert "Channels: 4 (1 invalid, 1 not collected, 2 subscribed)" in out
    header, *channels = section(out, "Channels:")
    assert header == ["SYMBOL", "BAR", "SUBSCRIPTION", "STATE", "LAST MESSAGE", "CONFIRMED LAG", "RECONNECTS", "ERROR"]
    by_pair = {(row[0], row[1]): row for row in channels}
    assert list(by_pair) == [("BTC-USDT", "1s"), ("ETH-USDT", "1s"), ("ETH-USDT", "1m"), ("NOPE-USDT", "1m")]
    btc = by_pair[("BTC-USDT", "1s")]
    assert btc[2:4] == ["live", "subscribed"]
    assert re.fullmatch(r"\d\.\ds ago", btc[4])
    assert float(btc[5].rstrip("s")) < 5  # a 1s channel confirms every second
    assert btc[6:] == ["0", "-"]
    assert by_pair[("ETH-USDT", "1s")][2:] == ["paused", "-", "-", "-", "0", "-"]
    nope = by_pair[("NOPE-USDT", "1m")]
    assert nope[2:4] == ["error", "invalid"]
    assert nope[7].startswith("60018 ")
    # Columns line up: every cell of a column starts where its header does.
    lines = out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("SYMBOL"))):][:5]
    assert len({line.index(cell) for line, cell in zip(table, ["BAR", "1s", "1s", "1m", "1m"], strict=True)}) == 1

    summary = out.splitlines()[-1]
    overview = pipeline_overview(r, keys)
    assert re.fullmatch(
        rf"Buffer depth [\d,]+ \(live [\d,]+, being flushed 0\); dead letters {overview['dead_letters']}; "
        rf"REST queue \d+; last flush [\d.]+s ago \([\d,]+ rows, [\d,]+ written, \d+ ms\)", summary)


def test_json_gives_the_readers_data_with_ages(running, r, keys):
    before = time.time()
    data = json.loads(run_status("--json"))

    # A small system lists its channels without --channels; the summary is always there.
    assert set(data) == {"at", "collectors", "subscriptions", "worst_lags", "troubled", "channels", "pipeline"}
    assert data["subscriptions"]["by_state"]["paused"] == 1
    assert before <= data["at"] <= time.time()
    (collector,) = data["collectors"]
    (reader,) = collector_statuses(r, keys)
    assert (collector["id"], collector["alive"], collector["shards"], collector["channels"]) == \
        (reader.id, reader.alive, reader.shards, reader.channels)
    assert collector["connections"][0]["state"] == "open"
    assert 0 <= collector["heartbeat_age_s"] < 5
    rows = {(row["symbol"], row["bar"]): row for row in data["channels"]}
    btc = rows[("BTC-USDT", "1s")]
    truth = channel_statuses(r, keys)[("BTC-USDT", "1s")]
    assert (btc["subscription"], btc["status"], btc["state"]) == ("active", "live", "subscribed")
    assert btc["collector"] == COLLECTOR_ID
    assert btc["last_confirmed_open"] <= truth.last_confirmed_open  # read a moment before the reader
    assert 0 <= btc["confirmed_lag_s"] < 5
    assert rows[("NOPE-USDT", "1m")]["error"].startswith("60018 ")
    assert rows[("ETH-USDT", "1s")] == {
        "symbol": "ETH-USDT", "bar": "1s", "subscription": "paused", "status": "pending", "status_message": None,
        "state": None, "collector": None, "last_message_at": None, "last_message_age_s": None,
        "last_confirmed_open": None, "confirmed_lag_s": None, "reconnects": 0, "error": None, "price": "trade",
    }
    assert data["pipeline"]["dead_letters"] >= 1
    assert data["pipeline"]["last_flush"]["rows"] >= 1


def test_symbol_keeps_that_instruments_channels(running):
    out = run_status("--symbol", "ETH-USDT")

    _, *channels = section(out, "Channels:")
    assert [(row[0], row[1]) for row in channels] == [("ETH-USDT", "1s"), ("ETH-USDT", "1m")]
    assert "Collectors: 1 of 1 alive" in out  # collectors are not per instrument

    with pytest.raises(CommandError, match=r"unknown instrument 'eth-usdt' \(ids are exact"):
        run_status("--symbol", "eth-usdt")


def test_nothing_running_says_how_to_start_a_collector(keys):
    out = run_status()

    assert out == ("Collectors: none (start one: make run, or manage.py run_collector)\n\nChannels: none\n\n"
                   "Buffer depth 0 (live 0, being flushed 0); dead letters 0; REST queue 0; no flush yet\n")


def test_with_a_hot_standby_each_shard_shows_its_primary_and_standby_and_their_hosts(keys, r, settings):
    settings.COLLECTOR_REPLICAS, settings.COLLECTOR_SHARDS = 2, 3
    for shard, slot, collector_id in [(0, 0, "c-a"), (0, 1, "c-b"), (1, 0, "c-b"), (1, 1, "c-a"), (2, 0, "c-a")]:
        r.set(keys.lease(shard, slot), collector_id, px=60_000)
    r.hset(keys.lease_hosts, mapping={"c-a": "host-a", "c-b": "host-b"})

    out = run_status()

    assert "Shards: 3 × 2 replicas, 1 short of a replica" in out
    assert section(out, "Shards:") == [
        ["SHARD", "PRIMARY", "STANDBY"],
        ["0", "c-a on host-a", "c-b on host-b"],
        ["1", "c-b on host-b", "c-a on host-a"],
        ["2", "c-a on host-a", "-", "SHORT"],
    ]
    shards = json.loads(run_status("--json"))["pipeline"]["shards"]
    assert (shards["replicas"], shards["short"], shards["holders"][2]) == (
        2, [2], [{"slot": 0, "collector": "c-a", "host": "host-a"}])


def test_one_replica_shows_no_shard_table(keys, r):
    r.set(keys.lease(0), "c-a", px=60_000)

    assert "Shards:" not in run_status()


def test_redis_down_is_a_clear_error(keys, settings):
    settings.REDIS_URL = f"redis://:secret@127.0.0.1:{unused_port()}/0"

    with pytest.raises(CommandError, match=r"^Redis at redis://:\*\*\*@127\.0\.0\.1:\d+/0 is unreachable: .*"
                                           r"Connection refused"):
        run_status()


def status_process(keys: Keys, *args: str, redis_url: str | None = None) -> subprocess.Popen:
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_KEY_PREFIX": keys.prefix}
    if redis_url:
        env["REDIS_URL"] = redis_url
    # --skip-checks: the system checks (URLs, admin) are tested elsewhere and cost a second per start.
    return subprocess.Popen([sys.executable, "manage.py", "collector_status", *args, "--skip-checks"], cwd=ROOT,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=default_sigint)


def interrupt_after(proc: subprocess.Popen, *, seconds: float, signum: int = signal.SIGINT) -> tuple[str, str]:
    """Wait for the first output, let it run `seconds` more, send `signum`; return its stdout and stderr."""
    first = proc.stdout.readline()  # started: Django is set up, the handlers are in place
    time.sleep(seconds)
    proc.send_signal(signum)
    # A command that ignores the signal is killed, and the test fails on its exit code instead of hanging.
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        # Not communicate(): it reads the descriptors directly and would lose what readline() buffered.
        out, err = first + proc.stdout.read(), proc.stderr.read()
        proc.wait(timeout=20)
    finally:
        watchdog.cancel()
    return out, err


def test_watch_refreshes_until_ctrl_c(running, keys):
    proc = status_process(keys, "--watch", "0.2")
    out, err = interrupt_after(proc, seconds=1.0)

    assert proc.returncode == 0, err
    frames = out.split("-- collector_status, every 0.2s, ")
    assert len(frames) >= 3  # '' before the first header, then two frames or more
    assert all("Collectors: 1 of 1 alive" in frame and "NOPE-USDT" in frame for frame in frames[1:-1]), frames
    assert "Traceback" not in err


def test_watch_json_with_redis_down_reports_each_frame_and_sigterm_exits_1(keys):
    proc = status_process(keys, "--watch", "0.2", "--json", redis_url=f"redis://127.0.0.1:{unused_port()}/0")
    out, err = interrupt_after(proc, seconds=0.6, signum=signal.SIGTERM)

    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) >= 2
    assert all("is unreachable" in frame["error"] for frame in frames)
    assert proc.returncode == 1
    assert re.search(r"CommandError: Redis at redis://127\.0\.0\.1:\d+/0 is unreachable", err)


@pytest.mark.parametrize("interval", ["0", "-1", "soon", "inf"])
def test_watch_needs_a_positive_interval(keys, interval):
    with pytest.raises(CommandError, match=r"argument --watch: .*seconds"):
        run_status("--watch", interval)


def test_many_subscriptions_are_a_summary_and_the_table_comes_with_a_filter(keys):
    """Above AUTO_CHANNELS subscriptions the default output is a summary; --state lists just those channels."""
    bars = list(Timeframe.objects.order_by("display_order"))
    for i in range(3):
        inst = Instrument.objects.create(inst_id=f"SUM{i}-USDT", inst_type="SPOT")
        Subscription.objects.bulk_create([
            Subscription(instrument=inst, timeframe=tf, status=SubscriptionStatus.STALE if n < 2 else "live")
            for n, tf in enumerate(bars)])

    out = run_status()

    assert f"Subscriptions: {3 * len(bars)} ({3 * len(bars) - 6} live, 6 stale)" in out
    assert "  stale: SUM0-USDT 1s; SUM0-USDT 1m; SUM1-USDT 1s; SUM1-USDT 1m; SUM2-USDT 1s; SUM2-USDT 1m" in out
    assert "Channels: not listed" in out
    assert "SYMBOL" not in out

    _, *channels = section(run_status("--state", "stale", "--bar", "1m"), "Channels:")
    assert [(row[0], row[1], row[2]) for row in channels] == [
        ("SUM0-USDT", "1m", "stale"), ("SUM1-USDT", "1m", "stale"), ("SUM2-USDT", "1m", "stale")]
