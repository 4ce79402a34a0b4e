"""Webhooks: a POST of every confirmed candle to the URL of its subscription, signed with HMAC-SHA256.

The flush builds jobs for the confirmed rows it wrote (`webhook_jobs_for`, one query for the whole batch)
and enqueues one delivery task per job on the "webhooks" queue after commit, once per body
(`webhook_jobs_unsent`: the two collectors of a hot standby, and a retried flush, send the same confirm twice).
Each delivery (`webhook_deliver`) POSTs once and says what to do next: the task retries with backoff while the outcome
says retry, up to WEBHOOK_MAX_ATTEMPTS; a failure of the last attempt is recorded on the subscription
(`webhook_failures`, `webhook_last_error`) and a later success resets the streak.

Receivers verify `X-OKX-Candles-Signature: sha256=<hex HMAC-SHA256 of the raw body with the shared secret>`.
A retried delivery carries the same body, so (symbol, price, timeframe, open_time_ms) identifies duplicates.
A mark-price or index candle's body names its kind (`"price": "mark"`) and has null volumes; a trade candle's
body is the seed's, without `price` (docs/price-kinds.md).
Webhooks are off while WEBHOOK_SECRET is empty: no unsigned request ever leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import orjson
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from candles.models import PriceKind, Subscription
from candles.storage import CandleRow
from collectors.okx.tls import tls_context
from okxproject.keys import Keys

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-OKX-Candles-Signature"
ATTEMPT_HEADER = "X-OKX-Candles-Attempt"
USER_AGENT = "okx-candles-webhooks/1"
# The body's name of each exact number (candles.candle_shape, as in the API and CSV) and the row's attribute.
NUMBER_FIELDS = (("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"), ("volume", "vol"),
                 ("volume_currency", "vol_ccy"), ("volume_quote", "vol_ccy_quote"))
MAX_ERROR_LENGTH = 1000

_disabled_logged = False


@dataclass(frozen=True, slots=True)
class WebhookJob:
    subscription_id: int
    url: str
    body: bytes

    def as_task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a JSON-serialized Celery task (the body travels as text)."""
        return {"subscription_id": self.subscription_id, "url": self.url, "body": self.body.decode()}


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    result: str  # "ok", "retry", "failed" (last attempt failed, recorded) or "skipped"
    attempt: int
    status_code: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    @property
    def should_retry(self) -> bool:
        return self.result == "retry"


def webhooks_enabled() -> bool:
    """False while WEBHOOK_SECRET is empty (logged once per process)."""
    global _disabled_logged
    if settings.WEBHOOK_SECRET:
        return True
    if not _disabled_logged:
        _disabled_logged = True
        logger.warning("webhooks are disabled: WEBHOOK_SECRET is empty")
    return False


def webhook_signature(body: bytes, secret: str) -> str:
    """"sha256=" + hex HMAC-SHA256 of the body: the value of X-OKX-Candles-Signature."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _decimal_text(value: Any, name: str) -> str:
    """An exact decimal as a plain string ("0.00000001", never "1E-8"); floats are refused."""
    if isinstance(value, bool | float) or not isinstance(value, Decimal | str | int):
        raise ValueError(f"{name} is not an exact decimal: {value!r}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name} is not a decimal: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} is not finite: {value!r}")
    return format(number, "f")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_utc(open_time_ms: int) -> str:
    """ISO-8601 in UTC with a Z: "2024-01-16T19:00:00Z" (milliseconds only when there are any)."""
    moment = _EPOCH + timedelta(milliseconds=open_time_ms)
    return moment.isoformat(timespec="milliseconds" if open_time_ms % 1000 else "seconds").replace("+00:00", "Z")


def webhook_body(row: CandleRow) -> bytes:
    """The compact JSON body of one confirmed candle: symbol, timeframe, the price kind unless trade, and the
    candle in the API's shape (candles.candle_shape). Raises ValueError for a row that is not exact."""
    payload: dict[str, Any] = {"symbol": row.inst_id, "timeframe": row.bar}
    if row.price != PriceKind.TRADE:
        # As the API's pages: only a mark or index body adds it, so a trade body stays byte for byte the seed's.
        payload["price"] = row.price
    payload |= {"timestamp": _iso_utc(row.open_time_ms), "open_time_ms": row.open_time_ms}
    # Mark-price and index candles carry no volumes; trade candles always have vol and vol_ccy.
    optional = {"volume_quote"} if row.price == PriceKind.TRADE else {"volume", "volume_currency", "volume_quote"}
    for name, attribute in NUMBER_FIELDS:
        value = getattr(row, attribute)
        payload[name] = None if value is None and name in optional else _decimal_text(value, name)
    payload["confirm"] = True
    return orjson.dumps(payload)


def webhook_jobs_for(rows: Iterable[CandleRow]) -> list[WebhookJob]:
    """One job per confirmed row and active subscription with a webhook URL, of every price kind (a row's series
    is its instrument id, price kind and bar); one query for all rows."""
    confirmed = [row for row in rows if row.confirmed is True]
    if not confirmed or not webhooks_enabled():
        return []
    inst_ids = {row.inst_id for row in confirmed}
    bars = {row.bar for row in confirmed}
    prices = {row.price for row in confirmed}
    targets = {
        (inst_id, price, bar): (sub_id, url)
        for sub_id, inst_id, price, bar, url in Subscription.objects.filter(
            is_active=True, instrument__inst_id__in=inst_ids, instrument__price__in=prices,
            timeframe__code__in=bars,
        ).exclude(webhook_url="").values_list("id", "instrument__inst_id", "instrument__price", "timeframe__code",
                                              "webhook_url")
    }
    jobs: list[WebhookJob] = []
    for row in confirmed:
        target = targets.get((row.inst_id, row.price, row.bar))
        if target is None:
            continue
        try:
            body = webhook_body(row)
        except ValueError as exc:
            logger.error("webhook for %s %s %s %s not sent: %s", row.inst_id, row.price, row.bar, row.open_time_ms,
                         exc)
            continue
        jobs.append(WebhookJob(subscription_id=target[0], url=target[1], body=body))
    return jobs


# How long a delivered body is remembered: longer than any flush retry or replica lag, short enough to stay small.
SENT_TTL_S = 6 * 3600


def webhook_jobs_unsent(redis: Any, keys: Keys, jobs: list[WebhookJob], ttl_s: int = SENT_TTL_S) -> list[WebhookJob]:
    """The jobs whose (subscription, body) was not queued before: a claim per job, SET NX with a TTL.

    With a hot standby (COLLECTOR_REPLICAS=2) both collectors deliver each confirm push, and their copies can
    reach two flushes; a flush retried after a failure carries its confirmed rows again. The same candle's same
    body then goes once. A changed body (a REST correction of a confirmed candle) is a new delivery."""
    if not jobs:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.set(keys.webhook_sent(job.subscription_id, hashlib.sha256(job.body).hexdigest()[:32]), 1,
                     nx=True, ex=ttl_s)
        claimed = pipe.execute()
    return [job for job, fresh in zip(jobs, claimed, strict=True) if fresh]


def _post(url: str, body: bytes, attempt: int) -> int:
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: webhook_signature(body, settings.WEBHOOK_SECRET),
        ATTEMPT_HEADER: str(attempt),
        "User-Agent": USER_AGENT,
    }
    # Streamed and closed without reading: a receiver's response body is of no interest.
    with (
        httpx.Client(timeout=settings.WEBHOOK_TIMEOUT_S, follow_redirects=False, verify=tls_context()) as client,
        client.stream("POST", url, content=body, headers=headers) as response,
    ):
        return response.status_code


def webhook_deliver(*, subscription_id: int, url: str, body: bytes | str, attempt: int) -> DeliveryOutcome:
    """POST one job (attempt 1, 2, ...). 2xx: ok and the failure streak is reset. Anything else: retry, or
    after attempt WEBHOOK_MAX_ATTEMPTS, failed and recorded on the subscription. Skipped when webhooks are
    disabled or the subscription no longer sends to `url` (paused, deleted, URL changed)."""
    if isinstance(body, str):
        body = body.encode()
    if not webhooks_enabled():
        return DeliveryOutcome("skipped", attempt, error="webhooks are disabled")
    if not Subscription.objects.filter(pk=subscription_id, is_active=True, webhook_url=url).exists():
        logger.info("webhook to %s for subscription %s dropped: no longer its active webhook", url, subscription_id)
        return DeliveryOutcome("skipped", attempt, error="subscription inactive or webhook URL changed")
    status_code: int | None = None
    try:
        status_code = _post(url, body, attempt)
    except httpx.TimeoutException as exc:
        error = f"timeout after {settings.WEBHOOK_TIMEOUT_S:g} s ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        if 200 <= status_code < 300:
            Subscription.objects.filter(pk=subscription_id).exclude(webhook_failures=0, webhook_last_error="") \
                .update(webhook_failures=0, webhook_last_error="", updated_at=timezone.now())
            return DeliveryOutcome("ok", attempt, status_code)
        error = f"HTTP {status_code}"
    if attempt < settings.WEBHOOK_MAX_ATTEMPTS:
        logger.warning("webhook to %s for subscription %s failed (attempt %d of %d): %s; will retry",
                       url, subscription_id, attempt, settings.WEBHOOK_MAX_ATTEMPTS, error)
        return DeliveryOutcome("retry", attempt, status_code, error)
    now = timezone.now()
    message = f"{now.isoformat(timespec='seconds')} attempt {attempt}: {error}"[:MAX_ERROR_LENGTH]
    Subscription.objects.filter(pk=subscription_id).update(
        webhook_failures=F("webhook_failures") + 1, webhook_last_error=message, updated_at=now
    )
    logger.error("webhook to %s for subscription %s failed after %d attempts: %s",
                 url, subscription_id, attempt, error)
    return DeliveryOutcome("failed", attempt, status_code, error)
