"""The Redis live buffer between the collectors and PostgreSQL.

One entry per (instrument, bar, open time) in a hash; a version further on replaces the older one (a confirmed
version is final; between open versions the data decides: see PUT_NEWEST_LUA), the rule the database applies, so the
buffer's size is bounded by the number of candles open in a flush interval, not by the push rate.

A flush *takes* the whole hash by renaming it (atomic), writes it, and deletes the taken copy only after
its rows are committed. A flush that dies in between leaves the taken copy behind, and the next flush
writes it first: nothing is lost, and the database's version rule makes the retry harmless.

Values are `"<version>|<confirmed>|<json row>"` so the Lua rule can compare versions without decoding
JSON. The JSON row is OKX's strings: `[o, h, l, c, vol, volCcy, volCcyQuote|null]`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from candles.storage import CandleRow
from collectors.okx.candle_rows import CandleText, CandleUpdate
from okxproject.keys import Keys, candle_field, split_candle_field, split_priced_bar

# KEYS[1] = live hash; ARGV[1] = the entries packed by `pack_entries`. Returns how many entries were written.
# One argument rather than two per entry: redis-py's packing of thousands of arguments was a tenth of the
# collector's time; Redis parses the lengths for less than that.
#
# Which of two versions of a candle to keep is the database's rule (candles/storage.py, `_ON_CONFLICT`): a
# confirmed version is final, a confirmed one replaces an open one, and between two open versions the data
# decides (cumulative volume, then high, then low), the version (a receipt time, from the clock of whichever
# collector of the shard received it) only where the data cannot; a re-sent identical state writes nothing.
# Numbers are compared exactly as decimal text (`dec_cmp`); OKX's are plain non-negative decimals, anything else
# is compared as a Lua number. The JSON row's first fields are always quoted strings or null (encode_entry).
PUT_NEWEST_LUA = """
local find, sub, match, rep = string.find, string.sub, string.match, string.rep
local function dec_cmp(a, b)
  if a == b then return 0 end
  local ai, af = match(a, "^0*(%d*)%.?(%d*)$")
  local bi, bf = match(b, "^0*(%d*)%.?(%d*)$")
  if not ai or not bi then
    local x, y = tonumber(a), tonumber(b)
    if x == nil or y == nil or x == y then return 0 end
    return x < y and -1 or 1
  end
  if #ai ~= #bi then return #ai < #bi and -1 or 1 end
  if ai ~= bi then return ai < bi and -1 or 1 end
  if #af < #bf then af = af .. rep("0", #bf - #af) else bf = bf .. rep("0", #af - #bf) end
  if af == bf then return 0 end
  return af < bf and -1 or 1
end
local ROW = '^%d+|%d|%["[^"]*","([^"]*)","([^"]*)","[^"]*",([^,]*),'
local function replaces(new, old)
  local new_v, new_c, new_row = match(new, "^(%d+)|(%d)|(.*)$")
  local old_v, old_c, old_row = match(old, "^(%d+)|(%d)|(.*)$")
  if new_c == old_c and new_row == old_row then return false end
  if old_c == "1" then return new_c == "1" and tonumber(new_v) > tonumber(old_v) end
  if new_c == "1" then return true end
  local new_h, new_l, new_vol = match(new, ROW)
  local old_h, old_l, old_vol = match(old, ROW)
  if new_h and old_h then
    if new_vol ~= "null" and old_vol ~= "null" then
      local d = dec_cmp(sub(new_vol, 2, -2), sub(old_vol, 2, -2))
      if d ~= 0 then return d > 0 end
    end
    local d = dec_cmp(new_h, old_h)
    if d ~= 0 then return d > 0 end
    d = dec_cmp(new_l, old_l)
    if d ~= 0 then return d < 0 end
  end
  return tonumber(new_v) > tonumber(old_v)
end
local data, pos, written = ARGV[1], 1, 0
while pos <= #data do
  local colon = find(data, ":", pos, true)
  local stop = colon + tonumber(sub(data, pos, colon - 1))
  local field = sub(data, colon + 1, stop)
  colon = find(data, ":", stop + 1, true)
  pos = colon + tonumber(sub(data, stop + 1, colon - 1)) + 1
  local value = sub(data, colon + 1, pos - 1)
  local old = redis.call("HGET", KEYS[1], field)
  if not old or replaces(value, old) then
    redis.call("HSET", KEYS[1], field, value)
    written = written + 1
  end
end
return written
"""


def receipt_version() -> int:
    """The version stamped on a candle when it is received: microseconds since the epoch."""
    return time.time_ns() // 1000


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def encode_entry(update: CandleUpdate, version: int) -> tuple[str, str]:
    """The buffer field and value of a candle update (volumes null for mark-price and index candles)."""
    row = orjson.dumps([str(update.open), str(update.high), str(update.low), str(update.close),
                        _text(update.vol), _text(update.vol_ccy), _text(update.vol_ccy_quote)]).decode()
    value = f"{version}|{1 if update.confirmed else 0}|{row}"
    return candle_field(update.inst_id, update.bar, update.open_time_ms, update.price), value


def encode_text_entry(candle: CandleText, version: int) -> tuple[str, str]:
    """`encode_entry` of a CandleText: its strings go in as they are (the collector's hot path).

    The JSON is written by hand: CandleText numbers hold only digits, ".", "-", "+", "e" and "E", none of
    which JSON escapes, so this is the text orjson would write, at a third of the cost.
    """
    quote = "null" if candle.vol_ccy_quote is None else f'"{candle.vol_ccy_quote}"'
    if candle.vol is None:  # a mark-price or index candle: no volumes
        value = (f'{version}|{1 if candle.confirmed else 0}|["{candle.open}","{candle.high}","{candle.low}",'
                 f'"{candle.close}",null,null,null]')
        return candle_field(candle.inst_id, candle.bar, candle.open_time_ms, candle.price), value
    value = (f'{version}|{1 if candle.confirmed else 0}|["{candle.open}","{candle.high}","{candle.low}",'
             f'"{candle.close}","{candle.vol}","{candle.vol_ccy}",{quote}]')
    if len(candle) > 11:  # a kind other than trade (the hot trade path never gets here)
        return candle_field(candle.inst_id, candle.bar, candle.open_time_ms, candle.price), value
    return f"{candle.inst_id}|{candle.bar}|{candle.open_time_ms}", value


def decode_entry(field: str | bytes, value: str | bytes) -> CandleRow:
    """A buffer entry as the row `candles_upsert` takes (source "ws")."""
    if isinstance(field, bytes):
        field = field.decode()
    if isinstance(value, bytes):
        value = value.decode()
    inst_id, bar, open_ms = split_candle_field(field)
    version, confirmed, row = value.split("|", 2)
    o, h, low, c, vol, vol_ccy, quote = orjson.loads(row)
    if ":" not in bar:
        return CandleRow(inst_id, bar, open_ms, o, h, low, c, vol, vol_ccy, quote, confirmed == "1", "ws",
                         int(version))
    bar, price = split_priced_bar(bar)
    return CandleRow(inst_id, bar, open_ms, o, h, low, c, vol, vol_ccy, quote, confirmed == "1", "ws", int(version),
                     price)


def pack_entries(entries: Iterable[tuple[str, str]]) -> str:
    """Buffer entries as the one argument of PUT_NEWEST_LUA: `<bytes>:<field><bytes>:<value>` each.

    Lengths are in UTF-8 bytes (what Lua counts); entries are ASCII but for an odd instId, measured apart.
    """
    return "".join(
        f"{len(field)}:{field}{len(value)}:{value}" if field.isascii() and value.isascii()
        else f"{len(field.encode())}:{field}{len(value.encode())}:{value}"
        for field, value in entries
    )


# --- the flush side (synchronous redis client) ------------------------------------------------------


def buffer_take(redis: Any, keys: Keys) -> dict[bytes, bytes]:
    """The batch to write: a batch left by a failed flush first, else everything buffered now."""
    taken = redis.hgetall(keys.taken)
    if taken:
        return taken
    try:
        if not redis.renamenx(keys.live, keys.taken):
            return redis.hgetall(keys.taken)
    except Exception as exc:  # redis-py raises ResponseError("no such key") for an empty buffer
        if "no such key" in str(exc).lower():
            return {}
        raise
    return redis.hgetall(keys.taken)


def buffer_commit(redis: Any, keys: Keys) -> None:
    """Drop the taken batch: call only after its rows are committed to PostgreSQL."""
    redis.delete(keys.taken)


def buffer_depth(redis: Any, keys: Keys) -> int:
    return int(redis.hlen(keys.live)) + int(redis.hlen(keys.taken))


def dead_letter_record(reason: str, raw: str | bytes | None, channel: str | None = None) -> bytes:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return orjson.dumps({"at": time.time(), "reason": reason, "raw": raw, "channel": channel})
