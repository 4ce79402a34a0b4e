"""How much of each shared OKX REST budget is in use right now, read from the limiter's sorted sets.

Every REST client comes from collectors.shared.rest and draws on these budgets, so the figures are the whole
deployment's use: the admin's budget bars and the console's status line show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collectors.instruments import SYNCABLE_TYPES
from collectors.okx.rest_endpoints import CANDLE_BUDGETS, INDEX_TICKERS, INSTRUMENTS, Endpoint
from okxproject.keys import Keys


@dataclass(frozen=True, slots=True)
class BudgetUse:
    name: str
    used: int
    limit: int
    period_s: float

    @property
    def percent(self) -> int:
        return round(100 * self.used / self.limit) if self.limit else 0


def _budget_endpoints() -> list[tuple[str, Endpoint, str]]:
    """(label, endpoint, limiter key) of every REST budget the client keeps (see OkxRestClient._get)."""
    # Every candle endpoint (trade, mark-price and index; latest and older candles) keeps a budget of its own.
    budgets = [(name, endpoint, endpoint.budget) for name, endpoint in CANDLE_BUDGETS.items()]
    budgets.append(("index-tickers", INDEX_TICKERS, INDEX_TICKERS.budget))
    budgets += [(f"instruments {t}", INSTRUMENTS, f"{INSTRUMENTS.path}:{t}") for t in SYNCABLE_TYPES]
    return budgets


def rest_budget_use(redis: Any, keys: Keys) -> list[BudgetUse]:
    """Requests admitted in the current window of each shared REST budget (the limiter's sorted sets)."""
    seconds, micros = redis.time()  # the limiter's clock
    now_us = int(seconds) * 1_000_000 + int(micros)
    budgets = _budget_endpoints()
    pipe = redis.pipeline(transaction=False)
    for _name, endpoint, limit_key in budgets:
        pipe.zcount(keys.rate_limit(limit_key), now_us - int(endpoint.period_s * 1_000_000), "+inf")
    return [BudgetUse(name, int(used), endpoint.limit, endpoint.period_s)
            for (name, endpoint, _key), used in zip(budgets, pipe.execute(), strict=True)]
