"""OKX v5 REST client for candles and instruments: rate-limited, retried, exact.

Every request first takes a slot from a `RateLimiter` (OKX refuses over-limit requests rather than queueing
them), then runs with capped exponential backoff and jitter on the errors OKX documents as transient.
Candle rows are parsed by `candle_rows.parse_candle_row`, the same parser the WebSocket path uses.

Trade, mark-price and index candles (`price`, one of `protocol.PRICE_KINDS`) each have their own pair of
endpoints (latest 1,440 candles / older ones) and so their own rate budgets: the limiter key of a request is
its endpoint's path (`Endpoint.budget`), as OKX counts each endpoint apart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson

from collectors.okx.candle_rows import CandleText, CandleUpdate, parse_candle_row, parse_candle_text
from collectors.okx.instrument_rows import (
    IndexTicker,
    InstrumentInfo,
    decimal_field,
    epoch_ms_field,
    parse_instrument,
    text_field,
)
from collectors.okx.protocol import PRICE_KINDS, TRADE, TRADE_ONLY_BARS, ProtocolError
from collectors.okx.ratelimit import Admission, LocalRateLimiter, RateLimiter
from collectors.okx.rest_endpoints import (
    BAR_MS,
    CANDLE_ENDPOINTS,
    HISTORY_ONLY_BARS,
    INDEX_TICKERS,
    INSTRUMENTS,
    PERMANENT_CODES,
    RATE_LIMIT_CODE,
    RECENT_CANDLES,
    RECENT_MARGIN,
    RECENT_ONLY_PRICE_BARS,
    TRANSIENT_CODES,
    WEBSOCKET_ONLY_BARS,
    Endpoint,
    candle_endpoint,
)
from collectors.okx.tls import tls_context

logger = logging.getLogger(__name__)

# A candle as the client returns it: numbers as Decimals, or as exact text with `numbers_as_text`.
Candle = CandleUpdate | CandleText




class RestError(Exception):
    """A request OKX refused, or one that kept failing after every retry. `code` is OKX's, "" when none."""

    def __init__(self, code: str, msg: str, http_status: int | None = None):
        super().__init__(f"OKX REST error {code or '-'} (HTTP {http_status or '-'}): {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


class PermanentError(RestError):
    """An error that retrying cannot fix (bad parameter, unknown instrument)."""


class UnsupportedBar(ValueError):
    """A bar REST does not serve here (5D and 5Dutc are WebSocket-only; 1s is on history-candles only and has
    no mark-price or index candles; 3M and 3Mutc are not on the mark-price and index history endpoints)."""


@dataclass(frozen=True, slots=True)
class PageProgress:
    """Reported after each page of `candle_range`, so long backfills can show where they are."""

    endpoint: str
    pages: int
    rows: int  # rows in this page
    collected: int  # distinct candles in range so far
    oldest_ms: int | None  # oldest open time in this page


OnPage = Callable[[PageProgress], None]
Sleep = Callable[[float], Awaitable[None]]


class _Transient(Exception):
    """One failed attempt that a retry may fix; carries the error to raise when retries run out."""

    def __init__(self, error: RestError):
        super().__init__(str(error))
        self.error = error


class OkxRestClient:
    """Async OKX REST client. Use as `async with OkxRestClient(url) as client:`.

    Without `http`, the client owns an httpx client created on first use and closed on exit, so the same
    object can be entered again later, even from another event loop.
    """

    def __init__(
        self,
        base_url: str,
        *,
        limiter: RateLimiter | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        page_limit: int = 300,
        rate_margin_s: float = 0.1,
        now_ms: Callable[[], int] | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        numbers_as_text: bool = False,
    ):
        if page_limit < 1:
            raise ValueError("page_limit must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter if limiter is not None else LocalRateLimiter()
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.page_limit = page_limit
        # OKX counts requests when they arrive. The limiter stamps a request when it completed, which is after
        # its arrival, so arrivals cannot bunch up closer than the stamps; the margin is for what is left (OKX's
        # clock and window edges are its own).
        self.rate_margin_s = rate_margin_s
        # How long a request can be on its way (httpx's timeout bounds each of connect, write, read and the
        # pool wait): the limiter counts it as reaching OKX at any moment until it completes.
        self._longest_request_s = 4 * timeout
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "rate_limited": 0}
        # Requests (retries included) by endpoint path: each endpoint has its own budget, and callers that spend
        # several (the repair, over trade, mark-price and index candles) report each apart.
        self.requests_by_endpoint: Counter[str] = Counter()
        self._http = http
        self._owns_http = http is None
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        # Callers that only store candles take the numbers as OKX's exact text (`CandleText`): no Decimal is
        # made per field only to be written back out as text.
        self._parse_row = parse_candle_text if numbers_as_text else parse_candle_row

    async def __aenter__(self) -> OkxRestClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    # --- candles ---------------------------------------------------------------------------------

    async def candles(
        self,
        inst_id: str,
        bar: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        history: bool = False,
        price: str = TRADE,
    ) -> list[Candle]:
        """One page of candles, newest first as OKX returns it. `after`/`before` are exclusive bounds.

        `price` "mark" or "index" reads mark-price or index candles (six-field rows, volumes None) from their own
        endpoints; `limit` is then capped at their 100 rows.
        """
        endpoint = candle_endpoint(price, history=history)
        _check_bar(bar, history=history, price=price)
        rows = limit or self.page_limit
        if endpoint.max_rows is not None:
            rows = min(rows, endpoint.max_rows)
        params = {"instId": inst_id, "bar": bar, "limit": str(rows)}
        if after is not None:
            params["after"] = str(after)
        if before is not None:
            params["before"] = str(before)
        data, raw = await self._get(endpoint, params, endpoint.budget)
        if type(data) is not list:
            raise ProtocolError("candle data is not a list", raw)
        parse = self._parse_row
        if price == TRADE:
            return [parse(inst_id, bar, row, raw) for row in data]
        return [parse(inst_id, bar, row, raw, price) for row in data]

    async def candle_range(
        self, inst_id: str, bar: str, start_ms: int, end_ms: int, *, on_page: OnPage | None = None,
        price: str = TRADE,
    ) -> list[Candle]:
        """Every candle with start ≤ open time ≤ end, once each, oldest first.

        Walks back from `end_ms` page by page (`after` = oldest open time of the previous page). A short page
        is not the end (page caps differ between OKX versions and caches): only an empty page, or a page
        reaching `start_ms`, ends the walk. The newest row may be the open candle (`confirmed` False).
        `price` "mark" or "index" walks the mark-price or index candles the same way, on their endpoints.
        """
        recent_endpoint, history_endpoint = CANDLE_ENDPOINTS.get(price, (None, None))
        if recent_endpoint is None:
            raise ValueError(f"price must be one of {', '.join(PRICE_KINDS)}, not {price!r}")
        _check_range_bar(bar, price)
        if end_ms < start_ms:
            return []
        page_limit = min(self.page_limit, recent_endpoint.max_rows or self.page_limit)
        # Bars the history endpoint does not serve: /candles holds all there is of them.
        has_history = price == TRADE or bar not in RECENT_ONLY_PRICE_BARS
        found: dict[int, Candle] = {}
        after, pages = end_ms + 1, 0
        while True:
            history = has_history and self._needs_history(bar, start_ms, after, page_limit)
            limit = self._page_size(bar, start_ms, after, page_limit)
            page = await self.candles(inst_id, bar, after=after, history=history, limit=limit, price=price)
            if not page and not history and has_history:
                # /candles may hold fewer candles than promised; an empty page there is not proof of the end.
                history = True
                page = await self.candles(inst_id, bar, after=after, history=True, limit=limit, price=price)
            pages += 1
            oldest = _merge_page(found, page, start_ms, after)
            if on_page is not None:
                endpoint = history_endpoint.path if history else recent_endpoint.path
                on_page(PageProgress(endpoint, pages, len(page), len(found), oldest))
            if oldest is None or oldest <= start_ms:
                return [found[ts] for ts in sorted(found)]
            after = oldest

    def _page_size(self, bar: str, start_ms: int, after: int, page_limit: int | None = None) -> int:
        """Rows to ask for below `after`: the open times down to `start_ms`, and one more so that the page reaches
        past it even when `start_ms` is not an open time (a page that stops short costs a second request).

        A repair of one candle then reads two rows, not a full page: OKX sends, and this client parses, only
        what the range holds. Calendar bars count with their shortest length, so never too few."""
        page_limit = page_limit or self.page_limit
        length = BAR_MS.get(bar)
        if length is None:
            return page_limit
        return min(page_limit, (after - start_ms + length - 1) // length + 1)

    def _needs_history(self, bar: str, start_ms: int, after: int, page_limit: int | None = None) -> bool:
        """Whether the page below `after` reaches past what /candles serves."""
        length = BAR_MS.get(bar)
        if bar in HISTORY_ONLY_BARS or length is None:
            return True
        lowest_needed = max(start_ms, after - (page_limit or self.page_limit) * length)
        horizon = self._now_ms() - (RECENT_CANDLES - RECENT_MARGIN) * length
        return lowest_needed < horizon

    # --- instruments -----------------------------------------------------------------------------

    async def instruments(self, inst_type: str, inst_family: str | None = None) -> list[InstrumentInfo]:
        """Instruments of one type (OPTION needs `inst_family`). Rows without an instId are skipped."""
        params = {"instType": inst_type}
        if inst_family:
            params["instFamily"] = inst_family
        data, raw = await self._get(INSTRUMENTS, params, f"{INSTRUMENTS.path}:{inst_type}")
        if type(data) is not list:
            raise ProtocolError("instrument data is not a list", raw)
        infos = (parse_instrument(row, inst_type) for row in data if type(row) is dict)
        return [info for info in infos if info is not None]

    # --- indices -----------------------------------------------------------------------------------

    async def index_tickers(self, quote_ccy: str) -> list[IndexTicker]:
        """The indices quoted in `quote_ccy` (OKX has USD, USDT, USDC and BTC ones), each with its latest price:
        the `instId`s index candles take. Rows without an instId are skipped."""
        data, raw = await self._get(INDEX_TICKERS, {"quoteCcy": quote_ccy}, INDEX_TICKERS.budget)
        if type(data) is not list:
            raise ProtocolError("index ticker data is not a list", raw)
        tickers = []
        for row in data:
            if type(row) is not dict:
                continue
            inst_id = text_field(row, "instId")
            if inst_id is None:
                continue
            tickers.append(IndexTicker(inst_id, decimal_field(row, "idxPx"), epoch_ms_field(row, "ts")))
        return tickers

    # --- requests --------------------------------------------------------------------------------

    async def _get(self, endpoint: Endpoint, params: dict[str, str], limit_key: str) -> tuple[Any, bytes]:
        """`data` of a successful response (and the raw body), retrying transient failures."""
        for attempt in range(self.max_retries + 1):
            admission = await self.limiter.acquire(limit_key, endpoint.limit, endpoint.period_s + self.rate_margin_s,
                                                   longest_s=self._longest_request_s)
            self.stats["requests"] += 1
            self.requests_by_endpoint[endpoint.path] += 1
            try:
                return await self._attempt(endpoint.path, params)
            except _Transient as failure:
                if attempt == self.max_retries:
                    raise failure.error from None
                logger.info("retrying %s after %s", endpoint.path, failure.error)
            finally:
                await self._request_done(admission)
            self.stats["retries"] += 1
            await self._backoff(attempt)
        raise AssertionError("unreachable")

    async def _request_done(self, admission: Admission) -> None:
        try:
            await self.limiter.done(admission)
        except Exception as exc:  # the budget's store is away: the request keeps counting until `longest_s`
            logger.debug("rate limiter could not record a completed request: %r", exc)

    async def _attempt(self, path: str, params: dict[str, str]) -> tuple[Any, bytes]:
        try:
            response = await self._client().get(self.base_url + path, params=params, timeout=self.timeout)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise PermanentError("", f"bad URL {self.base_url + path!r}: {exc}", None) from exc
        except httpx.TransportError as exc:  # timeouts, refused and dropped connections
            raise _Transient(RestError("", f"{type(exc).__name__}: {exc}".rstrip(": "), None)) from exc
        return self._evaluate(response), response.content

    def _evaluate(self, response: httpx.Response) -> Any:
        status = response.status_code
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if type(body) is not dict:
            error = RestError("", f"response is not a JSON object: {response.text[:200]!r}", status)
            if status == 429 or status >= 500:
                self._count_rate_limit(status, "")
                raise _Transient(error)
            raise error
        code, msg = str(body.get("code", "")), str(body.get("msg", ""))
        if code in PERMANENT_CODES:
            raise PermanentError(code, msg, status)
        if status == 429 or status >= 500 or code in TRANSIENT_CODES:
            self._count_rate_limit(status, code)
            raise _Transient(RestError(code, msg, status))
        if status != 200 or code != "0":
            raise RestError(code, msg, status)
        return body.get("data")

    def _count_rate_limit(self, status: int, code: str) -> None:
        if status == 429 or code == RATE_LIMIT_CODE:
            self.stats["rate_limited"] += 1

    async def _backoff(self, attempt: int) -> None:
        # Half fixed, half random: spreads retries of many workers while still backing off.
        ceiling = min(self.backoff_cap, self.backoff_base * 2**attempt)
        delay = ceiling / 2 + self._rng.random() * ceiling / 2
        await self._sleep(delay)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, headers={"Accept": "application/json"},
                                           verify=tls_context())
        return self._http


def _check_bar(bar: str, *, history: bool, price: str = TRADE) -> None:
    _check_range_bar(bar, price)
    if price == TRADE and bar in HISTORY_ONLY_BARS and not history:
        raise UnsupportedBar(f"{bar} candles are served by history-candles only")
    if price != TRADE and bar in RECENT_ONLY_PRICE_BARS and history:
        endpoint = candle_endpoint(price, history=True).path.rsplit("/", 1)[1]
        raise UnsupportedBar(f"{bar} candles are not served by {endpoint}")


def _check_range_bar(bar: str, price: str) -> None:
    if bar in WEBSOCKET_ONLY_BARS:
        raise UnsupportedBar(f"{bar} candles are WebSocket-only; REST does not serve them")
    if price != TRADE and bar in TRADE_ONLY_BARS:
        raise UnsupportedBar(f"{bar} candles exist for trade prices only, not {price}")


def _merge_page(found: dict[int, Candle], page: list[Candle], start_ms: int, after: int) -> int | None:
    """Add the page's in-range rows to `found`; return the page's oldest open time (None when empty)."""
    if not page:
        return None
    oldest = min(row.open_time_ms for row in page)
    if oldest >= after:
        # The server ignored the cursor; walking on would request the same page forever.
        raise RestError("", f"page did not move past after={after} (oldest row {oldest})", 200)
    for row in page:
        if row.open_time_ms < start_ms or row.open_time_ms >= after:
            continue
        known = found.get(row.open_time_ms)
        # Pages may overlap and come from different caches: a closed row beats an open one; otherwise the
        # first seen (from the request closest to `end`) stays.
        if known is None or (row.confirmed and not known.confirmed):
            found[row.open_time_ms] = row
    return oldest


