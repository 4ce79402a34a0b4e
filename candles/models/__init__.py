"""The data okx-candles keeps: instruments, bars, subscriptions, candles and the gaps between them.

One module per kind of record; Django finds every model through this package, and the rest of the project
imports them from here (`from candles.models import Candle`).
"""

from candles.models.archive import ArchiveFile, ArchiveStatus
from candles.models.candle import Candle, CandleRecord, CandleSource
from candles.models.gaps import Gap, GapState, RepairPriority
from candles.models.instruments import MARK_PRICE_TYPES, Instrument, InstrumentType, PriceKind
from candles.models.subscriptions import INST_ID_PATTERN_RE, Subscription, SubscriptionRule, SubscriptionStatus
from candles.models.timeframes import Alignment, Timeframe

__all__ = [
    "INST_ID_PATTERN_RE",
    "MARK_PRICE_TYPES",
    "Alignment",
    "ArchiveFile",
    "ArchiveStatus",
    "Candle",
    "CandleRecord",
    "CandleSource",
    "Gap",
    "GapState",
    "Instrument",
    "InstrumentType",
    "PriceKind",
    "RepairPriority",
    "Subscription",
    "SubscriptionRule",
    "SubscriptionStatus",
    "Timeframe",
]
