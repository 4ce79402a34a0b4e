"""What the hot-standby tests share: collectors as `manage.py run_collector` processes, who holds each shard, and
the candles of a window compared with the simulator's truth."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collector_command(name: str) -> list[str]:
    # --skip-checks: the system checks are tested elsewhere and cost a second per start.
    return [sys.executable, str(ROOT / "manage.py"), "run_collector", "--id", name, "--skip-checks"]


def collector_env(*, database_url: str, redis_url: str, prefix: str, ws_url: str, replicas: int, shards: int,
                  ttl_s: float, host: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
            "OKX_WS_URL": ws_url, "COLLECTOR_REPLICAS": str(replicas), "COLLECTOR_SHARDS": str(shards),
            "COLLECTOR_LEASE_TTL_S": str(ttl_s), "COLLECTOR_RECONCILE_S": "0.5", "COLLECTOR_HOST": host,
            "LOG_LEVEL": "WARNING"}


def held_by(redis, keys, shards: int, replicas: int) -> list[set[str]]:
    """Per shard, the collectors holding one of its slots."""
    return [{v.decode() for v in redis.mget(keys.lease_slots(shard, replicas)) if v} for shard in range(shards)]


def wrong_candles(market, inst_ids: Sequence[str], bar: str, start_ms: int, end_ms: int) -> list[str]:
    """The closed candles of the window that are not the simulator's truth: missing, still open or different."""
    from candles.bars import datetime_to_ms, ms_to_datetime
    from candles.models import Candle

    wrong = []
    for inst_id in inst_ids:
        stored = {datetime_to_ms(c.open_time): c for c in Candle.objects.filter(
            instrument__inst_id=inst_id, instrument__price="trade", timeframe__code=bar,
            open_time__gte=ms_to_datetime(start_ms), open_time__lte=ms_to_datetime(end_ms))}
        for row in market.truth_range(inst_id, bar, start_ms, end_ms):
            c = stored.get(int(row[0]))
            numbers = None if c is None else [str(v) for v in (c.open, c.high, c.low, c.close, c.vol, c.vol_ccy,
                                                                  c.vol_ccy_quote)]
            if c is None or not c.confirmed or numbers != row[1:8]:
                wrong.append(f"{inst_id} {row[0]}: stored {numbers} confirmed {c and c.confirmed}, truth {row[1:8]}")
    return wrong
