"""Webhook jobs and deliveries, against a real HTTP receiver on 127.0.0.1 and the real PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from candles.models import Subscription
from collectors.delivery import webhooks
from collectors.delivery.webhooks import WebhookJob, webhook_deliver, webhook_jobs_for, webhook_signature
from tests.conftest import build_row, utc
from tests.support.ports import free_port

SECRET = "receiver-and-sender-share-this"


@dataclass
class Receiver:
    """A webhook receiver that checks signatures like a real one would."""

    url: str
    secret: str = SECRET
    statuses: list[int] = field(default_factory=list)  # responses to give, in order; then 200
    delay_s: float = 0.0
    requests: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(state.secret.encode(), body, hashlib.sha256).hexdigest()
            signed = hmac.compare_digest(expected, self.headers.get("X-OKX-Candles-Signature", ""))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                   "signed": signed})
            if state.delay_s:
                state.release.wait(state.delay_s)
            status = state.statuses.pop(0) if state.statuses else (200 if signed else 401)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def webhook_settings(settings):
    settings.WEBHOOK_SECRET = SECRET
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    settings.WEBHOOK_TIMEOUT_S = 0.3
    return settings


@pytest.fixture
def subscribe(btc, tf):
    def make(bar: str = "1m", inst=None, **fields) -> Subscription:
        return Subscription.objects.create(instrument=inst or btc, timeframe=tf(bar), **fields)

    return make


# --- signatures and bodies -------------------------------------------------------------------------------


def test_the_signature_is_a_hex_hmac_sha256_of_the_body():
    body = b'{"symbol":"BTC-USDT"}'

    signature = webhook_signature(body, "k")

    assert signature == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature != webhook_signature(body + b" ", "k")
    assert signature != webhook_signature(body, "other")


def test_jobs_carry_exact_decimal_strings_in_compact_json(webhook_settings, subscribe):
    sub = subscribe("1m", webhook_url="https://example.test/hook")
    row = build_row(utc(2024, 1, 16, 19, 0), open="42150.10", high="42200.00", low="1E-8", close="0.000000010",
                    vol="123456789012345678.123456789", vol_ccy="0", vol_ccy_quote=None)

    [job] = webhook_jobs_for([row])

    assert job.subscription_id == sub.pk
    assert job.url == "https://example.test/hook"
    assert job.body == (
        b'{"symbol":"BTC-USDT","timeframe":"1m","timestamp":"2024-01-16T19:00:00Z","open_time_ms":1705431600000,'
        b'"open":"42150.10","high":"42200.00","low":"0.00000001","close":"0.000000010",'
        b'"volume":"123456789012345678.123456789","volume_currency":"0","volume_quote":null,"confirm":true}'
    )


def test_jobs_only_for_confirmed_rows_of_active_subscriptions_with_a_url_in_one_query(
    webhook_settings, subscribe, instrument, django_assert_num_queries
):
    eth = instrument("ETH-USDT")
    sol = instrument("SOL-USDT")
    hooked = subscribe("1m", webhook_url="https://a.test/1m")
    subscribe("1H")  # no webhook
    subscribe("1m", inst=eth, webhook_url="https://a.test/eth", is_active=False)  # paused
    sol_sub = subscribe("5m", inst=sol, webhook_url="https://a.test/sol")
    rows = [
        build_row(utc(2024, 1, 1, 0, 0), bar="1m"),
        build_row(utc(2024, 1, 1, 0, 1), bar="1m", confirmed=False),
        build_row(utc(2024, 1, 1, 0, 2), bar="1m"),
        build_row(utc(2024, 1, 1, 0, 0), bar="1H"),
        build_row(utc(2024, 1, 1, 0, 0), inst_id="ETH-USDT", bar="1m"),
        build_row(utc(2024, 1, 1, 0, 0), inst_id="SOL-USDT", bar="5m", source="rest"),
        build_row(utc(2024, 1, 1, 0, 0), inst_id="SOL-USDT", bar="1m"),  # no such subscription
    ]

    with django_assert_num_queries(1):
        jobs = webhook_jobs_for(rows)

    assert [(j.subscription_id, orjson.loads(j.body)["timestamp"]) for j in jobs] == [
        (hooked.pk, "2024-01-01T00:00:00Z"), (hooked.pk, "2024-01-01T00:02:00Z"), (sol_sub.pk, "2024-01-01T00:00:00Z"),
    ]
    assert webhook_jobs_for([rows[1]]) == []


def test_a_row_that_is_not_exact_is_logged_and_left_out(webhook_settings, subscribe, caplog):
    subscribe("1m", webhook_url="https://a.test/1m")
    rows = [build_row(utc(2024, 1, 1, 0, 0), close=105.5), build_row(utc(2024, 1, 1, 0, 1), high="NaN"),
            build_row(utc(2024, 1, 1, 0, 2))]

    with caplog.at_level(logging.ERROR, logger="collectors.delivery.webhooks"):
        jobs = webhook_jobs_for(rows)

    assert len(jobs) == 1
    assert "close is not an exact decimal" in caplog.text
    assert "high is not finite" in caplog.text


def test_a_mark_candle_goes_to_the_mark_subscription_and_its_body_says_price_mark(
    webhook_settings, subscribe, instrument, django_assert_num_queries
):
    swap = instrument("BTC-USDT-SWAP", inst_type="SWAP")
    mark = instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    index = instrument("BTC-USD", inst_type="INDEX", price="index")
    trade_sub = subscribe("1m", inst=swap, webhook_url="https://a.test/trade")
    mark_sub = subscribe("1m", inst=mark, webhook_url="https://a.test/mark")
    index_sub = subscribe("1m", inst=index, webhook_url="https://a.test/index")
    none = {"vol": None, "vol_ccy": None, "vol_ccy_quote": None}
    rows = [build_row(utc(2024, 1, 16, 19, 0), inst_id="BTC-USDT-SWAP", close="105.25", price="mark", **none),
            build_row(utc(2024, 1, 16, 19, 0), inst_id="BTC-USDT-SWAP", close="105"),
            build_row(utc(2024, 1, 16, 19, 0), inst_id="BTC-USD", close="104.5", price="index", **none)]

    with django_assert_num_queries(1):
        jobs = webhook_jobs_for(rows)

    assert [(job.subscription_id, job.url) for job in jobs] == [
        (mark_sub.pk, "https://a.test/mark"), (trade_sub.pk, "https://a.test/trade"),
        (index_sub.pk, "https://a.test/index")]
    assert jobs[0].body == (
        b'{"symbol":"BTC-USDT-SWAP","timeframe":"1m","price":"mark","timestamp":"2024-01-16T19:00:00Z",'
        b'"open_time_ms":1705431600000,"open":"100","high":"110","low":"90","close":"105.25","volume":null,'
        b'"volume_currency":null,"volume_quote":null,"confirm":true}'
    )
    assert "price" not in orjson.loads(jobs[1].body)  # a trade body is the seed's, byte for byte
    assert orjson.loads(jobs[2].body)["price"] == "index"


def test_a_mark_candle_without_a_mark_subscription_sends_nothing(webhook_settings, subscribe, instrument):
    subscribe("1m", inst=instrument("BTC-USDT-SWAP", inst_type="SWAP"), webhook_url="https://a.test/trade")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    mark_row = build_row(inst_id="BTC-USDT-SWAP", price="mark", vol=None, vol_ccy=None, vol_ccy_quote=None)

    assert webhook_jobs_for([mark_row]) == []


def test_a_trade_candle_without_volumes_is_not_exact_and_left_out(webhook_settings, subscribe, caplog):
    subscribe("1m", webhook_url="https://a.test/1m")

    with caplog.at_level(logging.ERROR, logger="collectors.delivery.webhooks"):
        assert webhook_jobs_for([build_row(vol=None)]) == []
    assert "volume is not an exact decimal" in caplog.text


def test_webhooks_are_off_without_a_secret_and_say_so_once(settings, subscribe, caplog, monkeypatch):
    settings.WEBHOOK_SECRET = ""
    monkeypatch.setattr(webhooks, "_disabled_logged", False)
    sub = subscribe("1m", webhook_url="https://a.test/1m")

    with caplog.at_level(logging.WARNING, logger="collectors.delivery.webhooks"):
        assert webhook_jobs_for([build_row()]) == []
        assert webhook_jobs_for([build_row()]) == []
        outcome = webhook_deliver(subscription_id=sub.pk, url=sub.webhook_url, body=b"{}", attempt=1)

    assert outcome.result == "skipped"
    assert caplog.text.count("webhooks are disabled") == 1


# --- deliveries ------------------------------------------------------------------------------------------


def test_a_delivery_is_signed_so_the_receiver_can_verify_it(webhook_settings, subscribe, receiver):
    subscribe("1m", webhook_url=receiver.url)
    [job] = webhook_jobs_for([build_row(close="105.50")])

    outcome = webhook_deliver(**job.as_task_kwargs(), attempt=1)

    assert (outcome.result, outcome.ok, outcome.status_code) == ("ok", True, 200)
    [request] = receiver.requests
    assert request["signed"]
    assert request["path"] == "/hook"
    assert request["body"] == job.body
    assert orjson.loads(request["body"])["close"] == "105.50"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-OKX-Candles-Attempt"] == "1"


def test_a_mark_candle_is_delivered_signed_like_a_trade_one(webhook_settings, subscribe, instrument, receiver):
    mark = instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    subscribe("1m", inst=mark, webhook_url=receiver.url)
    [job] = webhook_jobs_for([build_row(inst_id="BTC-USDT-SWAP", price="mark", vol=None, vol_ccy=None,
                                        vol_ccy_quote=None)])

    assert webhook_deliver(**job.as_task_kwargs(), attempt=1).ok
    [request] = receiver.requests
    assert request["signed"]
    assert orjson.loads(request["body"])["price"] == "mark"


def test_a_receiver_with_another_secret_refuses_and_the_delivery_retries(webhook_settings, subscribe, receiver):
    receiver.secret = "not-the-same"
    sub = subscribe("1m", webhook_url=receiver.url)

    outcome = webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b'{"a":1}', attempt=1)

    assert (outcome.result, outcome.status_code, outcome.error) == ("retry", 401, "HTTP 401")
    assert not receiver.requests[0]["signed"]


def test_a_server_error_asks_for_a_retry_without_recording_a_failure(webhook_settings, subscribe, receiver):
    sub = subscribe("1m", webhook_url=receiver.url)
    receiver.statuses = [500]

    outcome = webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b"{}", attempt=2)

    assert (outcome.result, outcome.should_retry, outcome.status_code) == ("retry", True, 500)
    assert receiver.requests[0]["headers"]["X-OKX-Candles-Attempt"] == "2"
    sub.refresh_from_db()
    assert (sub.webhook_failures, sub.webhook_last_error) == (0, "")


def test_a_timeout_asks_for_a_retry(webhook_settings, subscribe, receiver):
    sub = subscribe("1m", webhook_url=receiver.url)
    receiver.delay_s = 3

    outcome = webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b"{}", attempt=1)

    assert outcome.result == "retry"
    assert outcome.status_code is None
    assert outcome.error.startswith("timeout after 0.3 s")


def test_a_refused_connection_asks_for_a_retry(webhook_settings, subscribe):
    url = f"http://127.0.0.1:{free_port()}/hook"
    sub = subscribe("1m", webhook_url=url)

    outcome = webhook_deliver(subscription_id=sub.pk, url=url, body=b"{}", attempt=1)

    assert outcome.result == "retry"
    assert outcome.error.startswith("ConnectError")


def test_the_last_failed_attempt_is_recorded_on_the_subscription(webhook_settings, subscribe, receiver):
    sub = subscribe("1m", webhook_url=receiver.url)
    receiver.statuses = [503, 500]

    first = webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b"{}", attempt=3)
    sub.refresh_from_db()
    assert first.result == "failed"
    assert not first.should_retry
    assert sub.webhook_failures == 1
    assert sub.webhook_last_error.endswith("attempt 3: HTTP 503")

    webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b"{}", attempt=3)
    sub.refresh_from_db()
    assert sub.webhook_failures == 2
    assert sub.webhook_last_error.endswith("attempt 3: HTTP 500")


def test_a_timeout_on_the_last_attempt_is_recorded(webhook_settings, subscribe, receiver):
    sub = subscribe("1m", webhook_url=receiver.url)
    receiver.delay_s = 3

    outcome = webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b"{}", attempt=3)

    sub.refresh_from_db()
    assert outcome.result == "failed"
    assert sub.webhook_failures == 1
    assert "timeout after 0.3 s" in sub.webhook_last_error


def test_a_success_resets_the_failure_streak(webhook_settings, subscribe, receiver):
    sub = subscribe("1m", webhook_url=receiver.url, webhook_failures=4, webhook_last_error="old: HTTP 500")

    outcome = webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b"{}", attempt=2)

    sub.refresh_from_db()
    assert outcome.ok
    assert (sub.webhook_failures, sub.webhook_last_error) == (0, "")


@pytest.mark.parametrize("change", [{"is_active": False}, {"webhook_url": "https://elsewhere.test/"}])
def test_a_delivery_for_a_paused_subscription_or_a_changed_url_is_skipped(
    webhook_settings, subscribe, receiver, change
):
    sub = subscribe("1m", webhook_url=receiver.url)
    Subscription.objects.filter(pk=sub.pk).update(**change)

    outcome = webhook_deliver(subscription_id=sub.pk, url=receiver.url, body=b"{}", attempt=1)

    assert outcome.result == "skipped"
    assert receiver.requests == []


def test_a_job_travels_through_json_as_task_kwargs():
    job = WebhookJob(subscription_id=7, url="https://a.test/", body=b'{"open":"1.10"}')

    kwargs = orjson.loads(orjson.dumps(job.as_task_kwargs()))

    assert kwargs == {"subscription_id": 7, "url": "https://a.test/", "body": '{"open":"1.10"}'}


def test_the_same_confirmed_candle_from_two_replicas_or_flushes_is_queued_once_and_a_correction_again(
    webhook_settings, subscribe
):
    from collectors.delivery.webhooks import webhook_jobs_unsent
    from collectors.shared.connections import redis_client
    from tests.support import isolated_keys

    subscribe("1m", webhook_url="http://127.0.0.1:9/hook")
    row = build_row(utc(2024, 1, 16, 19, 0), close="105")
    redis = redis_client()
    with isolated_keys(redis) as keys:
        first = webhook_jobs_unsent(redis, keys, webhook_jobs_for([row]))
        again = webhook_jobs_unsent(redis, keys, webhook_jobs_for([row]))  # the standby's copy, a later flush
        corrected = webhook_jobs_unsent(redis, keys, webhook_jobs_for([build_row(utc(2024, 1, 16, 19, 0),
                                                                                 close="104")]))

    assert (len(first), again, len(corrected)) == (1, [], 1)
    assert orjson.loads(corrected[0].body)["close"] == "104"
