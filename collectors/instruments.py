"""Keep the Instrument table in step with OKX's instrument list.

`instruments_sync` fetches each instrument type over REST, then upserts in one transaction: new instruments
are created, changed ones updated, and instruments of a synced type that OKX no longer lists are marked
delisted (their candles stay). One that comes back is undelisted. Running it twice changes nothing.

In the same transaction the subscriptions follow: those of expired or delisted instruments end, and the
subscription rules are materialized, so a new listing is collected and a gone one stops with one sync.
`instruments_refresh` is the whole job against settings.OKX_REST_URL, for the beat task and the admin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from candles.bars import ms_to_datetime
from candles.models import Instrument, PriceKind
from candles.rules import MaterializeResult, rules_materialize
from collectors.okx.instrument_rows import InstrumentInfo
from collectors.okx.protocol import ProtocolError as OkxProtocolError
from collectors.okx.rest import OkxRestClient, RestError

logger = logging.getLogger(__name__)

# Fields OKX owns; everything else on an Instrument row is ours.
SYNCED_FIELDS = (
    "inst_type", "base_ccy", "quote_ccy", "settle_ccy", "inst_family", "state", "tick_size", "lot_size",
    "listed_at", "expires_at",
)
# Serialises concurrent syncs (start-up `--if-empty` and a periodic run) without locking the table for reads.
_ADVISORY_LOCK_KEY = 0x6F6B785F696E7374  # "okx_inst"
# Synced by default (command, beat task, admin). OPTION is left out: OKX lists options only per instrument
# family. MARGIN adds nothing: margin pairs are the SPOT instruments.
DEFAULT_INST_TYPES = ("SPOT", "SWAP", "FUTURES")
SYNCABLE_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES")


# Every derivative's mark-price series mirrors its instrument (OKX publishes mark-price candles for SWAP, FUTURES
# and OPTION): one statement keeps the mark rows in step with the trade rows (created, updated, delisted alike),
# touching only rows that differ. docs/price-kinds.md.
_MIRROR_FIELDS = (*SYNCED_FIELDS, "delisted_at")
_MIRROR_MARKS = f"""
WITH mirrored AS (
    INSERT INTO candles_instrument AS m (inst_id, price, {", ".join(_MIRROR_FIELDS)}, created_at, updated_at)
    SELECT inst_id, 'mark', {", ".join(_MIRROR_FIELDS)}, %(now)s, %(now)s
    FROM candles_instrument
    WHERE price = 'trade' AND inst_type IN ('SWAP', 'FUTURES', 'OPTION')
    ON CONFLICT (inst_id, price) DO UPDATE SET
        {", ".join(f"{name} = EXCLUDED.{name}" for name in _MIRROR_FIELDS)}, updated_at = EXCLUDED.updated_at
    WHERE ({", ".join(f"m.{name}" for name in _MIRROR_FIELDS)})
          IS DISTINCT FROM ({", ".join(f"EXCLUDED.{name}" for name in _MIRROR_FIELDS)})
    RETURNING 1
)
SELECT count(*) FROM mirrored
"""


def mark_series_mirror(*, now: datetime) -> int:
    """Create or update the mark-price rows of every derivative; how many changed."""
    with connection.cursor() as cursor:
        cursor.execute(_MIRROR_MARKS, {"now": now})
        return cursor.fetchone()[0]


@dataclass(frozen=True, slots=True)
class SyncResult:
    created: int = 0
    updated: int = 0
    delisted: int = 0
    unchanged: int = 0
    # What the sync did to subscriptions (ended, created by rules); not part of equality, which is about
    # instruments.
    subscriptions: MaterializeResult = field(default_factory=MaterializeResult, compare=False)

    def __str__(self) -> str:
        return (f"{self.created} created, {self.updated} updated, {self.delisted} delisted, "
                f"{self.unchanged} unchanged")


# A client, or what makes one when entered (collectors.shared.rest.okx_rest(), the access point every production
# caller uses): either is entered inside the sync's own event loop.
RestSource = OkxRestClient | AbstractAsyncContextManager[OkxRestClient]


def instruments_sync(
    *, inst_types: list[str], client: RestSource, on_fetched: Callable[[str, int], None] | None = None
) -> SyncResult:
    """Fetch `inst_types` from OKX and upsert them. Raises the client's errors; writes nothing then.

    Synchronous (for commands and tasks): the REST calls run in their own event loop. `on_fetched(type, count)`
    reports each fetched list.
    """
    listed = asyncio.run(_fetch(client, inst_types, on_fetched))
    return instruments_apply(listed=listed)


async def _fetch(
    source: RestSource, inst_types: Iterable[str], on_fetched: Callable[[str, int], None] | None
) -> dict[str, list[InstrumentInfo]]:
    listed = {}
    async with source as client:
        for inst_type in inst_types:
            listed[inst_type] = await client.instruments(inst_type)
            if on_fetched is not None:
                on_fetched(inst_type, len(listed[inst_type]))
    return listed


def instruments_apply(*, listed: dict[str, list[InstrumentInfo]]) -> SyncResult:
    """Upsert the instruments OKX lists, per type; mark those of a listed type that it no longer lists."""
    now = timezone.now()
    wanted: dict[str, dict[str, Any]] = {}
    for infos in listed.values():
        for info in infos:
            # An instId may be listed under several types (a spot pair is also a MARGIN instrument): the first
            # type asked for wins.
            wanted.setdefault(info.inst_id, _fields(info))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
        existing = {
            row.inst_id: row
            # The traded instruments' rows; their mark-price and index rows are kept by their own sync.
            for row in Instrument.objects.filter(Q(inst_id__in=list(wanted)) | Q(inst_type__in=list(listed)),
                                                 price=PriceKind.TRADE)
        }
        to_create = [Instrument(inst_id=inst_id, **fields) for inst_id, fields in wanted.items()
                     if inst_id not in existing]
        to_update = [row for inst_id, row in existing.items()
                     if inst_id in wanted and _refresh(row, wanted[inst_id], now)]
        to_delist = [row for inst_id, row in existing.items()
                     if inst_id not in wanted and row.delisted_at is None and _may_delist(row, listed)]
        for row in to_delist:
            row.delisted_at = now
            row.updated_at = now
        Instrument.objects.bulk_create(to_create, batch_size=500)
        Instrument.objects.bulk_update(to_update + to_delist, [*SYNCED_FIELDS, "delisted_at", "updated_at"],
                                       batch_size=500)
        marks = mark_series_mirror(now=now)
        if marks:
            logger.info("mark-price series: %d created or updated", marks)
        subscriptions = rules_materialize(now=now)
    return SyncResult(
        created=len(to_create), updated=len(to_update), delisted=len(to_delist),
        unchanged=len(wanted) - len(to_create) - len(to_update), subscriptions=subscriptions,
    )


# The quote currencies OKX lists indices in (/market/index-tickers?quoteCcy=…).
INDEX_QUOTES = ("USD", "USDT", "USDC", "BTC")


@dataclass(frozen=True, slots=True)
class IndexSyncResult:
    created: int = 0
    delisted: int = 0
    relisted: int = 0
    unchanged: int = 0
    # What index rules did with the change (docs/price-kinds.md); not part of equality, as in SyncResult.
    subscriptions: MaterializeResult = field(default_factory=MaterializeResult, compare=False)

    def __str__(self) -> str:
        return (f"{self.created} created, {self.delisted} delisted, {self.relisted} listed again, "
                f"{self.unchanged} unchanged")


def indices_sync(*, client: RestSource, quotes: Iterable[str] = INDEX_QUOTES) -> IndexSyncResult:
    """Keep the INDEX rows (the ids index candles take) in step with OKX's index list. Raises the client's errors;
    writes nothing then."""

    async def fetch() -> dict[str, str]:
        found: dict[str, str] = {}
        async with client as rest:
            for quote in quotes:
                for ticker in await rest.index_tickers(quote):
                    found.setdefault(ticker.inst_id, quote)
        return found

    return indices_apply(listed=asyncio.run(fetch()))


def indices_apply(*, listed: dict[str, str]) -> IndexSyncResult:
    """Create the indices OKX lists (index id → its quote currency), delist the ones it no longer lists; when any
    came or went, the subscription rules follow in the same transaction (a new USD index joins "every USD index")."""
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
        existing = {row.inst_id: row for row in Instrument.objects.filter(price=PriceKind.INDEX)}
        to_create = [
            Instrument(inst_id=inst_id, price=PriceKind.INDEX, inst_type="INDEX", quote_ccy=quote,
                       base_ccy=inst_id.split("-")[0], state="live")
            for inst_id, quote in listed.items() if inst_id not in existing
        ]
        gone = [row for inst_id, row in existing.items() if inst_id not in listed and row.delisted_at is None]
        back = [row for inst_id, row in existing.items() if inst_id in listed and row.delisted_at is not None]
        for row in gone:
            row.delisted_at, row.updated_at = now, now
        for row in back:
            row.delisted_at, row.updated_at = None, now
        Instrument.objects.bulk_create(to_create, batch_size=500)
        Instrument.objects.bulk_update(gone + back, ["delisted_at", "updated_at"], batch_size=500)
        subscriptions = rules_materialize(now=now) if to_create or gone or back else MaterializeResult()
    return IndexSyncResult(created=len(to_create), delisted=len(gone), relisted=len(back),
                           unchanged=len(listed) - len(to_create) - len(back), subscriptions=subscriptions)


def instruments_refresh(*, inst_types: Iterable[str] = DEFAULT_INST_TYPES, retries: int | None = None) -> SyncResult:
    """Sync `inst_types` from settings.OKX_REST_URL (the beat task's and the admin's job).

    Its requests count against the same OKX budget as the workers' and show in /metrics.
    """
    from collectors.shared.rest import okx_rest

    options = {} if retries is None else {"max_retries": max(0, retries)}
    result = instruments_sync(inst_types=list(dict.fromkeys(inst_types)), client=okx_rest(**options))
    logger.info("instruments synced from OKX: %s; subscriptions: %s", result, result.subscriptions)
    try:
        # The instruments are synced and committed whatever happens here: a failed index list waits for the next
        # run, and says so.
        logger.info("indices synced from OKX: %s", indices_sync(client=okx_rest(**options)))
    except (RestError, OkxProtocolError) as exc:
        logger.error("index sync from OKX failed, retried with the next instrument sync: %s", exc)
    return result


def _may_delist(row: Instrument, listed: dict[str, list[InstrumentInfo]]) -> bool:
    infos = listed.get(row.inst_type)
    if infos is None:
        return False  # a type that was not synced says nothing about its instruments
    if not infos:
        # OKX never lists zero instruments of a type it trades; an empty answer is a glitch, not a delisting.
        logger.warning("OKX listed no %s instruments; not marking any delisted", row.inst_type)
        return False
    return True


def _fields(info: InstrumentInfo) -> dict[str, Any]:
    return {
        "inst_type": info.inst_type,
        "base_ccy": info.base_ccy or "",
        "quote_ccy": info.quote_ccy or "",
        "settle_ccy": info.settle_ccy or "",
        "inst_family": info.inst_family or "",
        "state": info.state,
        "tick_size": info.tick_size,
        "lot_size": info.lot_size,
        "listed_at": _datetime(info.list_time_ms),
        "expires_at": _datetime(info.exp_time_ms),
    }


def _datetime(ms: int | None) -> datetime | None:
    return None if ms is None else ms_to_datetime(ms)


def _refresh(row: Instrument, fields: dict[str, Any], now: datetime) -> bool:
    """Copy `fields` onto `row` and undelist it; whether anything changed."""
    changed = row.delisted_at is not None
    for name, value in fields.items():
        if name == "inst_type" and row.inst_type == "SPOT" and value == "MARGIN":
            continue  # margin trading on a spot pair does not make it another instrument
        if not _same(getattr(row, name), value):
            setattr(row, name, value)
            changed = True
    row.delisted_at = None
    if changed:
        row.updated_at = now
    return changed


def _same(old: Any, new: Any) -> bool:
    # Decimal("0.10") == Decimal("0.1"), but the stored value must read back exactly as OKX wrote it.
    if isinstance(old, Decimal) and isinstance(new, Decimal):
        return str(old) == str(new)
    return old == new
