"""Two collectors of one shard (COLLECTOR_REPLICAS=2) write the same pushes, in any order, with two clocks.

The property: whatever the interleaving of the two replicas' writes and of the flushes between them, and however
far apart the two hosts' clocks are, the stored candle never goes back to an older state (the data orders the
states: cumulative volume only grows while a trade candle is open; a mark or index candle's high only rises and
its low only falls), its stored version only grows, a confirmed candle is final, and the end is exactly the
confirmed truth. Real Redis (the buffer's PUT_NEWEST_LUA) and real PostgreSQL (the flush's merge).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candles.models import Candle, Instrument
from collectors.live.flush import buffer_flush
from collectors.okx.candle_rows import CandleUpdate
from collectors.shared.connections import redis_client
from tests.support import T0_MS, LiveBuffer, exact, isolated_keys, stored_candles

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SWAP = "BTC-USDT-SWAP"


@dataclass(frozen=True)
class Push:
    update: CandleUpdate
    step: int  # its place in OKX's order of pushes


def _truth(price: str, moves: list[tuple[int, int]], final_move: int) -> list[Push]:
    """OKX's pushes of one candle: each move is (price change in ticks, trades); the last push is the confirm.

    A push without trades repeats the state before it (OKX re-sends a candle unchanged); for mark and index,
    whose candles have no volume, every push moves the price.
    """
    tick, cents = Decimal("0.5"), Decimal("0.25")
    level = high = low = open_ = Decimal(100)
    vol = Decimal(0)
    pushes = []
    for step, (change, trades) in enumerate([*moves, (final_move, 1)]):
        if price != "trade" or trades:
            level = max(Decimal(1), level + change * tick)
            high, low = max(high, level), min(low, level)
            vol += trades * cents
        last = step == len(moves)
        volumes = (vol, vol * 100, vol * 100) if price == "trade" else (None, None, None)
        pushes.append(Push(CandleUpdate(SWAP, "1m", T0_MS, open_, high, low, level, *volumes, last, price), step))
    return pushes


def _not_behind(row: tuple, before: tuple) -> bool:
    """Whether a stored state is at least as far on as an earlier one, by the data alone."""
    high, low, vol, confirmed = Decimal(row[1]), Decimal(row[2]), row[4], row[7]
    was_high, was_low, was_vol, was_confirmed = Decimal(before[1]), Decimal(before[2]), before[4], before[7]
    grew = vol is None or Decimal(vol) >= Decimal(was_vol)
    return confirmed >= was_confirmed and grew and high >= was_high and low <= was_low


moves = st.lists(st.tuples(st.integers(-4, 4), st.integers(0, 3)), min_size=1, max_size=8)


@st.composite
def replicated(draw, price: str):
    pushes = _truth(price, draw(moves), draw(st.integers(-4, 4)))
    confirm = pushes[-1]
    # Each replica misses pushes of its own (a reconnect, a slow link); at least one of them gets the confirm.
    got = [[p for p in pushes[:-1] if draw(st.booleans())] for _ in range(2)]
    confirm_to = draw(st.sampled_from([(0,), (1,), (0, 1)]))
    for replica in confirm_to:
        got[replica].append(confirm)
    # Each host's clock: up to ±5 s off, and each receipt some jitter later than OKX sent it.
    offsets = [draw(st.integers(-5_000_000, 5_000_000)) for _ in range(2)]
    stamped = [[(p, T0_MS * 1000 + offsets[r] + p.step * 100_000 + draw(st.integers(0, 90_000))) for p in got[r]]
               for r in range(2)]
    # Any interleaving of the two replicas' writes (each in its own order), and a flush after any write.
    events, cursors = [], [0, 0]
    while cursors[0] < len(stamped[0]) or cursors[1] < len(stamped[1]):
        choices = [r for r in range(2) if cursors[r] < len(stamped[r])]
        replica = draw(st.sampled_from(choices))
        events.append(("write", stamped[replica][cursors[replica]]))
        cursors[replica] += 1
        if draw(st.booleans()):
            events.append(("flush", None))
    return confirm.update, events


@pytest.fixture
def redis():
    return redis_client()


@pytest.fixture
def buffer(redis):
    with isolated_keys(redis) as keys:
        yield LiveBuffer(redis, keys)


@pytest.fixture
def swap(db):
    Instrument.objects.create(inst_id=SWAP, inst_type="SWAP")
    Instrument.objects.create(inst_id=SWAP, inst_type="SWAP", price="mark")


def _check_interleaving(buffer: LiveBuffer, final: CandleUpdate, events: list) -> None:
    Candle.objects.all().delete()
    buffer.redis.delete(buffer.keys.live, buffer.keys.taken)
    seen: list[tuple] = []
    for kind, item in [*events, ("flush", None)]:
        if kind == "write":
            push, version = item
            buffer.put(push.update, version)
            continue
        buffer_flush(redis=buffer.redis, keys=buffer.keys)
        rows = list(stored_candles().values())
        if not rows:
            continue
        (row,) = rows
        if seen:
            before = seen[-1]
            assert _not_behind(row, before), f"went back from {before} to {row}"
            assert row[-1] >= before[-1], "the stored version went back"
            if row[:-1] != before[:-1]:
                assert row[-1] > before[-1], "a changed row kept its version: the stream would not send it"
            if before[7]:
                assert row[:7] == before[:7], "a confirmed candle changed"
        seen.append(row)
    numbers = (final.open, final.high, final.low, final.close, final.vol, final.vol_ccy, final.vol_ccy_quote)
    assert seen[-1][:8] == (*map(exact, numbers), True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=replicated("trade"))
def test_two_replicas_of_a_trade_candle_in_any_order_never_regress_it(buffer, swap, case):
    _check_interleaving(buffer, *case)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=replicated("mark"))
def test_two_replicas_of_a_mark_candle_never_regress_its_range_and_end_exactly_confirmed(buffer, swap, case):
    _check_interleaving(buffer, *case)
