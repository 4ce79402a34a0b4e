"""The dead-letter list: reading it, and feeding entries that have become valid back into the live buffer.

Every frame or candle refused on the way in is a JSON record `{"at", "reason", "raw", "channel"}` at the head
of `keys.dead_letters` (newest first). A record is identified by a digest of its exact bytes, so a page
drawn a minute ago still names the same records after new ones were pushed in front of them.

Re-ingesting a record parses its raw text again and sends every candle through the collectors' own checks
(`ingest.candle_problem`) and buffer encoding (`buffer.encode_entry`, written with `PUT_NEWEST_LUA`), so a
re-ingested candle obeys the buffer's rules: newest version wins, a confirmed version is never replaced by an
unconfirmed one. Its version is the time it was first received (the record's `at`), not now, so an old
frame cannot override a newer push of the same candle. Raw texts understood:

* an OKX WebSocket frame (collectors refused it or one of its candles), parsed by `okx.messages`;
* a row the database refused at flush time (a JSON object of `CandleRow` fields), which becomes valid when,
  for example, its instrument has been synced since.

Only a record whose every candle is now valid leaves the list, and only after its candles are in the buffer:
a crash in between leaves the record, and re-ingesting it again rewrites the same versions, which changes
nothing. A record that is still invalid stays, with the reason it is still refused reported.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from candles.bars import BarSpec
from candles.models import Instrument, PriceKind, Timeframe
from collectors.live.buffer import PUT_NEWEST_LUA, encode_entry, pack_entries, receipt_version
from collectors.live.ingest import candle_problem
from collectors.okx.candle_rows import CandleUpdate
from collectors.okx.messages import parse_message
from collectors.okx.protocol import ProtocolError
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

# Records read per LRANGE while looking for the ones asked for (the list holds up to DEAD_LETTER_MAX).
SCAN_CHUNK = 1_000
_ROW_FIELDS = ("inst_id", "bar", "open_time_ms", "open", "high", "low", "close", "vol", "vol_ccy",
               "vol_ccy_quote", "confirmed")


def record_id(record: bytes) -> str:
    return hashlib.blake2b(record, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    at: float | None  # epoch seconds when the frame or row was refused
    reason: str
    raw: str | None
    channel: str | None
    record: bytes  # the exact list element, to remove it by value

    @property
    def at_datetime(self) -> datetime | None:
        return None if self.at is None else datetime.fromtimestamp(self.at, UTC)

    @classmethod
    def parse(cls, record: bytes) -> DeadLetter:
        """A record as stored; one that is not the expected JSON is shown as it is, never raised."""
        try:
            data = orjson.loads(record)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            text = record.decode("utf-8", "replace")
            return cls(record_id(record), None, "garbled dead-letter record", text, None, record)
        at = data.get("at")
        raw = data.get("raw")
        channel = data.get("channel")
        return cls(
            id=record_id(record),
            at=float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
            reason=str(data.get("reason") or ""),
            raw=raw if isinstance(raw, str) else None if raw is None else orjson.dumps(raw).decode(),
            channel=channel if isinstance(channel, str) else None,
            record=record,
        )


def dead_letters_newest(redis: Any, keys: Keys, *, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
    """The newest dead letters (the head of the list), skipping `offset`."""
    if limit <= 0:
        return []
    return [DeadLetter.parse(record) for record in redis.lrange(keys.dead_letters, offset, offset + limit - 1)]


def dead_letters_count(redis: Any, keys: Keys) -> int:
    return int(redis.llen(keys.dead_letters))


def _find(redis: Any, keys: Keys, ids: Collection[str]) -> Iterator[DeadLetter]:
    """The records with these ids, scanning from the newest until all are found or the list ends."""
    wanted, start = set(ids), 0
    while wanted:
        chunk = redis.lrange(keys.dead_letters, start, start + SCAN_CHUNK - 1)
        if not chunk:
            return
        for record in chunk:
            letter_id = record_id(record)
            if letter_id in wanted:
                wanted.discard(letter_id)
                yield DeadLetter.parse(record)
        start += SCAN_CHUNK


class StillInvalid(ValueError):
    """A dead letter that cannot be re-ingested (yet)."""


def _decimal(value: Any, name: str) -> Decimal:
    if not isinstance(value, str):
        raise StillInvalid(f"{name} is not a decimal string: {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise StillInvalid(f"{name} is not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise StillInvalid(f"{name} is not finite: {value!r}")
    return number


def _from_refused_row(raw: str) -> tuple[CandleUpdate, int] | None:
    """A row the flush dead-lettered (JSON of `CandleRow` fields) as a candle update and its version; None if
    `raw` is not such a row."""
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(row, dict) or not all(name in row for name in _ROW_FIELDS):
        return None
    if row.get("source", "ws") != "ws":
        raise StillInvalid("only WebSocket rows go through the live buffer")
    inst_id, bar, open_ms, confirmed, version = (row["inst_id"], row["bar"], row["open_time_ms"],
                                                 row["confirmed"], row.get("version"))
    if not isinstance(inst_id, str) or not isinstance(bar, str):
        raise StillInvalid("the row has no instrument or bar")
    if not isinstance(open_ms, int) or isinstance(open_ms, bool) or not isinstance(confirmed, bool):
        raise StillInvalid("the row's open time or confirmed flag is malformed")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StillInvalid("the row has no version")
    quote = row["vol_ccy_quote"]
    update = CandleUpdate(
        inst_id, bar, open_ms, *(_decimal(row[name], name) for name in ("open", "high", "low", "close", "vol",
                                                                       "vol_ccy")),
        None if quote is None else _decimal(quote, "vol_ccy_quote"), confirmed,
    )
    return update, version


def _candles_of(letter: DeadLetter) -> tuple[list[CandleUpdate], int]:
    """The candles a dead letter holds and the version to write them with. Raises StillInvalid."""
    if not letter.raw:
        raise StillInvalid("the record kept no raw text")
    # The receipt time of the original frame, in the buffer's unit (µs): the version rule then orders the
    # re-ingested candle among the pushes received around it.
    version = round(letter.at * 1_000_000) if letter.at is not None else receipt_version()
    try:
        events = parse_message(letter.raw)
    except ProtocolError as exc:
        refused_row = _from_refused_row(letter.raw)
        if refused_row is None:
            raise StillInvalid(exc.reason) from None
        update, row_version = refused_row
        return [update], row_version
    candles = [event for event in events if isinstance(event, CandleUpdate)]
    if not candles:
        raise StillInvalid("the frame holds no candle")
    return candles, version


@dataclass(slots=True)
class ReingestResult:
    reingested: int = 0  # records whose candles all went to the buffer; removed from the list
    candles: int = 0  # candle entries written to the buffer
    still_invalid: list[tuple[str, str]] = field(default_factory=list)  # (id, why), records kept
    not_found: int = 0  # ids no longer in the list (trimmed, or re-ingested by someone else)

    def __str__(self) -> str:
        kept = f", {len(self.still_invalid)} still invalid (kept)" if self.still_invalid else ""
        gone = f", {self.not_found} no longer listed" if self.not_found else ""
        return f"{self.reingested} re-ingested ({self.candles} candles to the buffer){kept}{gone}"


def _specs() -> dict[str, BarSpec]:
    return {tf.code: tf.spec for tf in Timeframe.objects.all()}


def dead_letters_reingest(
    *, redis: Any, keys: Keys, ids: Iterable[str], now_ms: int | None = None
) -> ReingestResult:
    """Parse the dead letters `ids` again; send the valid candles to the live buffer and drop those records.

    `redis` is a synchronous client. Safe to run twice: a second run finds the records gone (or still
    invalid), and candles already buffered or stored are not changed by the same version again.
    """
    ids = list(dict.fromkeys(ids))
    result = ReingestResult()
    letters = list(_find(redis, keys, ids))
    result.not_found = len(ids) - len(letters)
    if not letters:
        return result
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    specs = _specs()
    parsed: list[tuple[DeadLetter, list[CandleUpdate], int]] = []
    for letter in letters:
        try:
            candles, version = _candles_of(letter)
        except StillInvalid as exc:
            result.still_invalid.append((letter.id, str(exc)))
            continue
        parsed.append((letter, candles, version))
    known = set(Instrument.objects.filter(
        inst_id__in={c.inst_id for _, candles, _ in parsed for c in candles}, price=PriceKind.TRADE,
    ).values_list("inst_id", flat=True))

    entries: list[tuple[str, str]] = []
    done: list[DeadLetter] = []
    for letter, candles, version in parsed:
        problems = []
        for candle in candles:
            problem = candle_problem(candle, specs.get(candle.bar), now_ms)
            if problem is None and candle.inst_id not in known:
                problem = f"unknown instrument {candle.inst_id!r}"
            if problem is None:
                entries.append(encode_entry(candle, version))
            else:
                problems.append(problem)
        if problems:
            # Its valid candles are buffered all the same; the record stays for the ones still refused.
            result.still_invalid.append((letter.id, "; ".join(dict.fromkeys(problems))))
        else:
            done.append(letter)

    if entries:
        put_newest = redis.register_script(PUT_NEWEST_LUA)
        put_newest(keys=[keys.live], args=[pack_entries(entries)])
        result.candles = len(entries)
    if done:
        pipe = redis.pipeline(transaction=True)
        for letter in done:
            pipe.lrem(keys.dead_letters, 0, letter.record)
        pipe.hincrby(keys.counters, "dead_letters_reingested", len(done))
        pipe.execute()
        result.reingested = len(done)
    logger.info("dead letters: %s", result)
    return result
