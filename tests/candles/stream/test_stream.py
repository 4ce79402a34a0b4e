"""The live stream over a real WebSocket: replay from since, then every new version, nothing missed, nothing older
after newer, and clear errors."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

import orjson
import pytest
import redis as redis_lib
from django.conf import settings as django_settings
from django.db import connection

from candles.stream import feed
from tests.candles.stream.conftest import row, write
from tests.support import MINUTE_MS, T0_MS

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SECOND_MS = 1000
# 1s candles are kept for days only (Timeframe.retention): those of these tests are from a few hours ago.
RECENT_MS = (int(time.time()) // 3600 - 3) * 3_600_000


def closes(candles: list[dict]) -> list[tuple[int, str, bool]]:
    return [(c["open_time_ms"], c["close"], c["confirm"]) for c in candles]


def test_replays_from_since_in_order_then_pushes_each_new_version(btc, stream_client):
    write(*(row("BTC-USDT", "1m", T0_MS + k * MINUTE_MS, close=f"10{k}") for k in range(5)))
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT", "timeframe": "1m", "since": "2024-01-16T19:01:00Z"})

    client.wait_for(lambda f: len(client.candles("BTC-USDT", "1m")) == 4, what="the replay")
    assert client.frames[0] == {"event": "subscribe", "arg": {"symbol": "BTC-USDT", "timeframe": "1m"}}
    replayed = client.candles("BTC-USDT", "1m")
    assert closes(replayed) == [(T0_MS + k * MINUTE_MS, f"10{k}", True) for k in range(1, 5)]
    # The /data shape, exact strings.
    assert replayed[0] == {
        "timestamp": "2024-01-16T19:01:00Z", "open_time_ms": T0_MS + MINUTE_MS, "open": "100", "high": "110",
        "low": "90", "close": "101", "volume": "1.5", "volume_currency": "157.5", "volume_quote": None,
        "confirm": True,
    }

    t5 = T0_MS + 5 * MINUTE_MS
    write(row("BTC-USDT", "1m", t5, close="106.1", confirmed=False, version=2_000))
    write(row("BTC-USDT", "1m", t5, close="106.2", confirmed=False, version=3_000))
    write(row("BTC-USDT", "1m", t5, close="106.3", confirmed=True, version=4_000))
    client.wait_for(lambda f: len(client.candles("BTC-USDT", "1m")) == 7, what="three live versions")
    assert closes(client.candles("BTC-USDT", "1m")[4:]) == [
        (t5, "106.1", False), (t5, "106.2", False), (t5, "106.3", True)]


def test_an_older_or_equal_version_is_never_pushed_and_a_confirmed_candle_stays_final(btc, stream_client):
    t0 = T0_MS
    write(row("BTC-USDT", "1m", t0, close="101", confirmed=False, version=5_000))
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT", "timeframe": "1m", "since": t0})
    client.wait_for(lambda f: client.candles("BTC-USDT", "1m"), what="the replay")
    write(row("BTC-USDT", "1m", t0, close="99", confirmed=False, version=4_000))  # older: the database refuses it
    write(row("BTC-USDT", "1m", t0, close="102", confirmed=True, version=6_000))
    write(row("BTC-USDT", "1m", t0, close="103", confirmed=False, version=7_000))  # after confirm: refused
    write(row("BTC-USDT", "1m", t0 + MINUTE_MS, close="104", confirmed=False, version=8_000))  # a marker
    client.wait_for(lambda f: any(c["close"] == "104" for c in client.candles("BTC-USDT", "1m")), what="the marker")
    assert closes(client.candles("BTC-USDT", "1m")) == [
        (t0, "101", False), (t0, "102", True), (t0 + MINUTE_MS, "104", False)]


def test_without_since_the_newest_stored_candle_comes_first(btc, stream_client):
    write(*(row("BTC-USDT", "1m", T0_MS + k * MINUTE_MS, close=f"10{k}") for k in range(3)))
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT", "timeframe": "1m"})
    client.wait_for(lambda f: client.candles("BTC-USDT", "1m"), what="the newest candle")
    assert closes(client.candles("BTC-USDT", "1m")) == [(T0_MS + 2 * MINUTE_MS, "102", True)]


def test_handover_under_concurrent_writes_loses_nothing_and_never_goes_back(btc, stream_client):
    """Versions are written without pause while the client subscribes and replays 2,000 candles: every candle's
    received closes only rise, and the last one received is the stored one."""
    start = RECENT_MS
    write(*(row("BTC-USDT", "1s", start + k * SECOND_MS, close="100.0", confirmed=False) for k in range(2_000)))
    stop = threading.Event()
    written: dict[int, str] = {}

    def writer() -> None:
        version = 10_000
        try:
            while not stop.is_set():
                version += 1
                batch = []
                for k in (1_990, 1_995, 1_999, 2_000 + version % 7):
                    close = f"{100 + (version - 10_000) / 1000:.3f}"
                    batch.append(row("BTC-USDT", "1s", start + k * SECOND_MS, close=close, confirmed=False,
                                     version=version, high="200"))
                    written[start + k * SECOND_MS] = close
                write(*batch)
                time.sleep(0.005)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        client = stream_client()
        client.subscribe({"symbol": "BTC-USDT", "timeframe": "1s", "since": start})
        client.wait_for(lambda f: len(client.candles("BTC-USDT", "1s")) >= 2_100, timeout=30, what="replay + live")
    finally:
        stop.set()
        thread.join()
    write(row("BTC-USDT", "1s", start + 3_000 * SECOND_MS, close="999", high="999", confirmed=False,
              version=10**9))  # a marker
    client.wait_for(lambda f: any(c["close"] == "999" for c in client.candles("BTC-USDT", "1s")), what="the marker")

    received: dict[int, list[str]] = {}
    for candle in client.candles("BTC-USDT", "1s"):
        received.setdefault(candle["open_time_ms"], []).append(candle["close"])
    assert set(range(start, start + 2_000 * SECOND_MS, SECOND_MS)) <= set(received)
    for open_time, seen in received.items():
        assert seen == sorted(seen, key=float), f"{open_time}: went back: {seen}"
        assert len(seen) == len(set(seen)), f"{open_time}: a version twice: {seen}"
    for open_time, close in written.items():
        assert received[open_time][-1] == close


def test_a_reconnect_with_since_gets_what_a_rest_repair_filled_meanwhile(settings, stream_client):
    from candles.bars import ms_to_datetime
    from candles.models import Gap, Instrument, Subscription, Timeframe
    from collectors import tasks
    from collectors.simulator import SimulatorConfig, run_in_thread

    config = SimulatorConfig(seed=5, instruments=1, bars=("1m",), history_days=1)
    with run_in_thread(config, port=0) as sim:
        settings.OKX_REST_URL = sim.rest_url
        market = sim.simulator.market
        symbol = "BTC-USDT"
        first = market.list_time_ms + 60 * MINUTE_MS
        truth = {int(t[0]): t for t in market.truth_range(symbol, "1m", first, first + 29 * MINUTE_MS)}
        subscription = Subscription.objects.create(
            instrument=Instrument.objects.create(inst_id=symbol, inst_type="SPOT",
                                                 listed_at=ms_to_datetime(market.list_time_ms)),
            timeframe=Timeframe.objects.get(code="1m"))

        def truth_row(ms: int):
            t = truth[ms]
            return row(symbol, "1m", ms, close=t[4], high=t[2], version=1)._replace(
                open=t[1], low=t[3], vol=t[5], vol_ccy=t[6], vol_ccy_quote=t[7])

        # The collector stored the first ten minutes, then died; the client followed them.
        write(*(truth_row(first + k * MINUTE_MS) for k in range(10)))
        client = stream_client()
        client.subscribe({"symbol": symbol, "timeframe": "1m", "since": first})
        client.wait_for(lambda f: len(client.candles(symbol, "1m")) == 10, what="ten candles")
        last_closed = client.candles(symbol, "1m")[-1]["open_time_ms"]
        client.close()

        # While the client is away, REST repairs the twenty minutes the collector missed.
        Gap.objects.create(subscription=subscription, start=ms_to_datetime(first + 10 * MINUTE_MS),
                           end=ms_to_datetime(first + 29 * MINUTE_MS), missing=20)
        assert tasks.repair_candles.run() == 20

        again = stream_client()
        again.subscribe({"symbol": symbol, "timeframe": "1m", "since": last_closed})
        # since is inclusive: the last closed candle again, then the twenty repaired ones.
        again.wait_for(lambda f: len(again.candles(symbol, "1m")) == 21, what="the repaired candles")
        got = {c["open_time_ms"]: c for c in again.candles(symbol, "1m")}
        assert sorted(got) == list(range(last_closed, first + 30 * MINUTE_MS, MINUTE_MS))
        for ms, candle in got.items():
            t = truth[ms]
            assert (candle["open"], candle["high"], candle["low"], candle["close"], candle["volume"],
                    candle["confirm"]) == (t[1], t[2], t[3], t[4], t[5], True)


def test_a_repair_written_while_the_client_is_connected_is_pushed_live(btc, stream_client):
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT", "timeframe": "1m", "since": T0_MS})
    client.wait_for(lambda f: client.events("subscribe"), what="the ack")
    time.sleep(1.5)  # past the replay, which found nothing
    write(*(row("BTC-USDT", "1m", T0_MS + k * MINUTE_MS, close="105", source="rest") for k in range(3)))
    client.wait_for(lambda f: len(client.candles("BTC-USDT", "1m")) == 3, what="the repaired candles")


def test_missed_feed_entries_are_replayed_from_the_frontier(btc, stream_client, stream_prefix):
    """Entries the hub never read (trimmed, or never published while nobody seemed to listen) are read from the
    database: nothing the client should have is missing."""
    write(row("BTC-USDT", "1m", T0_MS, close="101"))
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT", "timeframe": "1m", "since": T0_MS})
    client.wait_for(lambda f: client.candles("BTC-USDT", "1m"), what="the replay")
    write(row("BTC-USDT", "1m", T0_MS + MINUTE_MS, close="102"))
    client.wait_for(lambda f: len(client.candles("BTC-USDT", "1m")) == 2, what="a live candle")
    # A candle the feed never carried (written with publication off), and a jump in the sequence, as if the
    # entries in between had been trimmed before the hub read them.
    feed.publish, original = (lambda rows_json: None), feed.publish
    try:
        write(row("BTC-USDT", "1m", T0_MS + 2 * MINUTE_MS, close="103"))
    finally:
        feed.publish = original
    redis = redis_lib.Redis.from_url(django_settings.REDIS_URL)
    redis.incrby(feed.feed_seq_key(), 5)
    write(row("BTC-USDT", "1m", T0_MS + 3 * MINUTE_MS, close="104"))
    client.wait_for(lambda f: len(client.candles("BTC-USDT", "1m")) >= 4, what="the replayed candle")
    time.sleep(0.3)
    assert closes(client.candles("BTC-USDT", "1m")) == [
        (T0_MS + k * MINUTE_MS, f"10{k + 1}", True) for k in range(4)]


def test_a_derived_bar_streams_its_bucket_again_when_a_constituent_changes(btc, stream_client):
    # 7m buckets open at epoch + k × 7 minutes.
    bucket = T0_MS - T0_MS % (7 * MINUTE_MS)
    write(row("BTC-USDT", "1m", bucket, close="101"), row("BTC-USDT", "1m", bucket + MINUTE_MS, close="102"))
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT", "timeframe": "7m", "since": bucket})
    client.wait_for(lambda f: client.candles("BTC-USDT", "7m"), what="the replay")
    write(row("BTC-USDT", "1m", bucket + 2 * MINUTE_MS, close="103", vol="2"))
    client.wait_for(lambda f: len(client.candles("BTC-USDT", "7m")) == 2, what="the bucket again")
    first, second = client.candles("BTC-USDT", "7m")
    assert (first["open_time_ms"], first["close"], first["volume"], first["constituents"], first["expected"],
            first["confirm"]) == (bucket, "102", "3.0", 2, 7, False)
    assert (second["open_time_ms"], second["close"], second["volume"], second["constituents"]) == (
        bucket, "103", "5.0", 3)


def test_unsubscribe_stops_the_pushes(btc, stream_client):
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT", "timeframe": "1m", "since": T0_MS})
    client.wait_for(lambda f: client.events("subscribe"), what="the ack")
    time.sleep(1.5)
    client.send({"op": "unsubscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m"}]})
    client.wait_for(lambda f: client.events("unsubscribe"), what="the unsubscribe ack")
    write(row("BTC-USDT", "1m", T0_MS, close="101"))
    client.send("ping")
    client.wait_for(lambda f: "pong" in f, what="pong")
    time.sleep(0.3)
    assert client.candles("BTC-USDT", "1m") == []


def test_bad_requests_get_error_events_and_the_connection_stays(btc, stream_client, settings):
    settings.STREAM_MAX_SUBSCRIPTIONS = 1
    client = stream_client()
    client.send("not json")
    client.send({"op": "subscribe", "args": [{"symbol": "NOPE-USDT", "timeframe": "1m"}]})
    client.send({"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "7x"}]})
    client.send({"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m", "since": "yesterday"}]})
    client.send({"op": "subscribe", "args": [{"symbol": "BTC-USDT", "timeframe": "1m"},
                                             {"symbol": "BTC-USDT", "timeframe": "5m"}]})
    client.send({"op": "publish", "args": []})
    errors = client.wait_for(lambda f: len(client.events("error")) == 6 and client.events("error"), what="errors")
    assert [e["error_code"] for e in errors] == [
        "INVALID_REQUEST", "SYMBOL_NOT_FOUND", "INVALID_TIMEFRAMES", "INVALID_SINCE", "TOO_MANY_SUBSCRIPTIONS",
        "INVALID_REQUEST"]
    assert errors[1]["arg"] == {"symbol": "NOPE-USDT", "timeframe": "1m"}
    assert "yesterday" in errors[3]["message"]
    assert client.events("subscribe") == [{"event": "subscribe", "arg": {"symbol": "BTC-USDT", "timeframe": "1m"}}]
    assert client.closed is None


def _raw_stream_socket(url: str) -> socket.socket:
    """A WebSocket opened by hand on a plain socket with a small receive buffer: after the handshake nothing reads
    it unless the test does, so the server meets real backpressure (a client library would read ahead into memory)."""
    host_port = url.split("/")[2]
    host, port = host_port.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/v1/stream HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def _send_text(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _read_frames(sock: socket.socket, timeout: float = 30.0):
    """(opcode, payload) of each frame the server sent, until its close frame."""
    sock.settimeout(timeout)
    buffer = b""

    def need(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the socket")
            buffer += chunk
        taken, buffer = buffer[:n], buffer[n:]
        return taken

    while True:
        first, second = need(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(need(2), "big")
        elif length == 127:
            length = int.from_bytes(need(8), "big")
        opcode, payload = first & 0x0F, need(length)
        yield opcode, payload
        if opcode == 0x8:
            return


def test_a_client_that_reads_too_slowly_is_closed_with_4008_and_the_writer_never_waits(btc, stream_server, settings):
    settings.STREAM_CLIENT_QUEUE = 4
    sock = _raw_stream_socket(stream_server.url)
    _send_text(sock, '{"op":"subscribe","args":[{"symbol":"BTC-USDT","timeframe":"1s"}]}')
    frames = _read_frames(sock)
    assert orjson.loads(next(frames)[1])["event"] == "subscribe"
    write(row("BTC-USDT", "1s", RECENT_MS - SECOND_MS))
    assert orjson.loads(next(frames)[1])["data"][0]["open_time_ms"] == RECENT_MS - SECOND_MS  # live from here
    # Then it stops reading. 100 frames of 500 candles (10 MB) follow.
    started = time.monotonic()
    for batch in range(100):
        base = RECENT_MS + batch * 500 * SECOND_MS
        write(*(row("BTC-USDT", "1s", base + k * SECOND_MS) for k in range(500)))
    writing_s = time.monotonic() - started
    received = list(frames)
    opcode, payload = received[-1]
    assert opcode == 0x8
    assert int.from_bytes(payload[:2], "big") == 4008
    assert payload[2:].startswith(b"slow consumer")
    assert len(received) - 1 < 100  # closed long before the client could have had everything
    assert writing_s < 30  # the write path never waited for the client
    sock.close()


def test_with_read_authentication_a_token_is_needed(btc, stream_client, stream_server, settings, django_user_model):
    from rest_framework.authtoken.models import Token

    settings.API_READ_AUTH = True
    anonymous = stream_client()
    assert anonymous.wait_closed() == (4401, "")
    assert anonymous.frames[0]["error_code"] == "AUTHENTICATION_REQUIRED"
    token = Token.objects.create(user=django_user_model.objects.create_user("reader", password="pw-for-tests"))
    with_header = stream_client(additional_headers={"Authorization": f"Token {token.key}"})
    with_header.send("ping")
    with_header.wait_for(lambda f: "pong" in f, what="pong")
    with_query = stream_client(stream_server.url + f"?token={token.key}")
    with_query.send("ping")
    with_query.wait_for(lambda f: "pong" in f, what="pong")
    wrong = stream_client(stream_server.url + "?token=not-a-token")
    assert wrong.wait_closed()[0] == 4401


def test_another_websocket_path_is_refused_clearly(stream_client, stream_server):
    other = stream_client(stream_server.url.replace("/api/v1/stream", "/api/v1/streams"))
    assert other.wait_closed()[0] == 4404
    assert other.frames[0]["error_code"] == "NOT_FOUND"


def test_mark_candles_stream_beside_trade_candles_and_never_mix_with_them(instrument, stream_client):
    instrument("BTC-USDT-SWAP", inst_type="SWAP")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    client = stream_client()
    client.subscribe({"symbol": "BTC-USDT-SWAP", "timeframe": "1m", "since": T0_MS, "price": "mark"},
                     {"symbol": "BTC-USDT-SWAP", "timeframe": "1s", "price": "mark"},
                     {"symbol": "BTC-USDT-SWAP", "timeframe": "1m", "price": "index"})
    errors = client.wait_for(lambda f: len(client.events("error")) == 2 and client.events("error"), what="errors")
    assert [e["error_code"] for e in errors] == ["INVALID_TIMEFRAMES", "INVALID_PRICE"]
    assert client.events("subscribe") == [
        {"event": "subscribe", "arg": {"symbol": "BTC-USDT-SWAP", "timeframe": "1m", "price": "mark"}}]
    time.sleep(1.5)
    write(row("BTC-USDT-SWAP", "1m", T0_MS, close="105"),  # a trade candle: not this subscription's
          row("BTC-USDT-SWAP", "1m", T0_MS, close="104.5")._replace(vol=None, vol_ccy=None, price="mark"))
    mark = {"symbol": "BTC-USDT-SWAP", "timeframe": "1m", "price": "mark"}
    client.wait_for(lambda f: any(x.get("arg") == mark and "data" in x for x in f), what="the mark candle")
    data = [c for x in client.frames if isinstance(x, dict) and x.get("arg") == mark for c in x.get("data", ())]
    assert [(c["close"], c["volume"]) for c in data] == [("104.5", None)]
