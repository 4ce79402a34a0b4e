"""Bad input on the collector's path, fuzzed: random and mutated OKX frames never crash the collector, every
frame that cannot be stored lands in the dead-letter list with its reason and raw text, and every candle that
is stored decodes back to exactly the strings OKX sent.

Frames go through the collector's own handler (`runtime._Handler`: `on_protocol_error`, and `on_candle`, which
is `Ingest.accept`), dispatched the way the WebSocket client's reader does it.
"""

from __future__ import annotations

import json
import random
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candles.models import Timeframe
from collectors.live.buffer import decode_entry
from collectors.live.ingest import Ingest
from collectors.live.runtime import _Handler
from collectors.okx.candle_rows import CandleText
from collectors.okx.messages import parse_message
from collectors.okx.protocol import ProtocolError
from okxproject.keys import Keys

SAMPLES = Path(__file__).resolve().parents[1] / "okx" / "samples" / "ws_frames.jsonl"
FRAMES = [json.dumps(json.loads(line)["frame"]) for line in SAMPLES.read_text().splitlines() if line.strip()]
NOW_MS = 1_795_482_000_000  # 2026-11-24T01:00:00Z: every sample candle is in the past

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.sampled_from(["NaN", "inf", "-1", "1e999", "0x10", "", " 1", "1_0", "١٢٣", "1E-8", "00.5", "9" * 40, "|"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


class Runtime:
    """What `_Handler` needs of the collector runtime."""

    def __init__(self, ingest: Ingest):
        self.ingest = ingest


@pytest.fixture(scope="module")
def specs(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return {tf.code: tf.spec for tf in Timeframe.objects.all()}


def feed(handler: _Handler, raw: str | bytes) -> None:
    """The WebSocket client's reader for one frame (collectors/okx/connection.py, `_read.receive`)."""
    try:
        events = parse_message(raw, text=True)
    except ProtocolError as error:
        handler.on_protocol_error(error)
        return
    for event in events:
        if event.__class__ is CandleText:
            handler.on_candle(event, raw)


def mutate(frame: str, rnd: random.Random, replacement: object) -> str | bytes:
    """One of: a character changed, a slice cut, text inserted, a JSON value replaced, bytes broken."""
    kind = rnd.randrange(6)
    if kind == 0 and frame:
        i = rnd.randrange(len(frame))
        return frame[:i] + rnd.choice('{}[]",:0123456789.-eE|\\ab') + frame[i + 1:]
    if kind == 1 and frame:
        i, j = sorted(rnd.randrange(len(frame) + 1) for _ in range(2))
        return frame[:i] + frame[j:]
    if kind == 2:
        i = rnd.randrange(len(frame) + 1)
        return frame[:i] + json.dumps(replacement) + frame[i:]
    if kind == 3:
        return frame.encode()[: rnd.randrange(len(frame) + 1)] + bytes([rnd.randrange(128, 256)])
    body = json.loads(frame)
    if "data" in body and body["data"] and isinstance(body["data"][0], list) and body["data"][0]:
        row = body["data"][0]
        row[rnd.randrange(len(row))] = replacement
    elif "arg" in body:
        body["arg"][rnd.choice(["channel", "instId"])] = replacement
    return json.dumps(body)


def check_frame(raw: str | bytes, specs) -> None:
    ingest = Ingest(keys=Keys(prefix="fuzz:"), specs=specs, clock_us=lambda: NOW_MS * 1000)
    handler = _Handler(Runtime(ingest))

    feed(handler, raw)  # must not raise, whatever the frame

    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for record in map(orjson.loads, ingest.dead):
        assert record["reason"], "a dead letter without a reason"
        assert record["raw"] == text
    for key, value in ingest.pending.items():
        row = decode_entry(key, value)  # what the flush will write
        stored = (row.inst_id, row.bar, row.open_time_ms)
        sent = next(c for c in parse_message(raw, text=True) if c.__class__ is CandleText
                    and (c.inst_id, c.bar, c.open_time_ms) == stored)
        assert [Decimal(x) for x in (row.open, row.high, row.low, row.close, row.vol, row.vol_ccy)] == [
            Decimal(x) for x in (sent.open, sent.high, sent.low, sent.close, sent.vol, sent.vol_ccy)]
        assert Decimal(row.high) >= max(Decimal(row.open), Decimal(row.close), Decimal(row.low))
        assert Decimal(row.low) <= min(Decimal(row.open), Decimal(row.close))
    candles = 0
    try:
        candles = sum(1 for e in parse_message(raw, text=True) if e.__class__ is CandleText)
    except ProtocolError:
        assert len(ingest.dead) == 1, "a frame that is not OKX must be dead-lettered exactly once"
        return
    # Each candle row of a valid frame is stored or dead-lettered, never silently dropped.
    assert len(ingest.pending) + len(ingest.dead) >= min(candles, 1)
    assert ingest.counters["messages"] == candles


@pytest.mark.django_db
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(FRAMES), st.randoms(use_true_random=False), JSON_VALUES)
def test_mutated_okx_frames_never_crash_and_every_bad_one_is_dead_lettered_with_a_reason(specs, frame, rnd,
                                                                                      replacement):
    check_frame(mutate(frame, rnd, replacement), specs)


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200) | JSON_VALUES.map(json.dumps))
def test_random_frames_never_crash_and_are_dead_lettered(specs, raw):
    check_frame(raw, specs)


@pytest.mark.django_db
def test_the_unmutated_samples_are_stored_or_refused_for_a_stated_reason(specs):
    started = time.monotonic()
    for frame in FRAMES:
        check_frame(frame, specs)
    assert time.monotonic() - started < 5
