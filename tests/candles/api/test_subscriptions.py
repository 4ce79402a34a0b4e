"""POST /subscribe, DELETE /subscribe/{symbol}, GET /subscriptions, GET/PATCH/DELETE /subscriptions/{id}."""

from __future__ import annotations

import pytest
from django.test import override_settings

from candles.models import Subscription, SubscriptionStatus
from candles.signals import subscriptions_changed
from tests.candles.api.fixtures import envelope_of

pytestmark = pytest.mark.django_db

SUBSCRIBE = "/api/v1/subscribe"


@pytest.fixture
def market(instrument):
    """Three live instruments and a delisted one."""
    for inst_id in ("BTC-USDT", "ETH-USDT", "SOL-USDT"):
        instrument(inst_id)
    instrument("OLD-USDT", state="suspend")


@pytest.fixture
def nudges():
    """Bulk-change signals sent to the collectors."""
    sent = []

    def receiver(sender, **kwargs):
        sent.append(sender)

    subscriptions_changed.connect(receiver)
    yield sent
    subscriptions_changed.disconnect(receiver)


def pairs() -> set[tuple[str, str, bool]]:
    return {(s.instrument.inst_id, s.timeframe.code, s.is_active)
            for s in Subscription.objects.select_related("instrument", "timeframe")}


# --- POST /subscribe ------------------------------------------------------------------------------------


def test_subscribing_needs_authentication(api, market):
    response = api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1m"]}, format="json")
    assert response.status_code == 401
    assert envelope_of(response)["error_code"] == "NOT_AUTHENTICATED"
    assert not Subscription.objects.exists()


def test_subscribing_creates_every_pair_and_answers_201_with_them(token_api, market):
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT", "ETH-USDT"], "timeframes": ["1m", "1H"]},
                              format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["created"], body["reactivated"], body["unchanged"]) == (4, 0, 0)
    assert {(s["symbol"], s["timeframe"], s["status"]) for s in body["subscriptions"]} == {
        ("BTC-USDT", "1m", "pending"), ("BTC-USDT", "1H", "pending"),
        ("ETH-USDT", "1m", "pending"), ("ETH-USDT", "1H", "pending"),
    }
    assert pairs() == {("BTC-USDT", "1m", True), ("BTC-USDT", "1H", True), ("ETH-USDT", "1m", True),
                       ("ETH-USDT", "1H", True)}


def test_subscribing_again_is_idempotent_and_answers_200(token_api, market):
    request = {"symbols": ["BTC-USDT"], "timeframes": ["1m"]}
    first = token_api.post(SUBSCRIBE, request, format="json").json()
    again = token_api.post(SUBSCRIBE, request, format="json")
    assert again.status_code == 200
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 1)
    assert again.json()["subscriptions"][0]["id"] == first["subscriptions"][0]["id"]
    assert Subscription.objects.count() == 1


def test_subscribing_resumes_a_paused_pair(token_api, market):
    token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1m"]}, format="json")
    Subscription.objects.update(is_active=False, status=SubscriptionStatus.STALE)
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1m", "5m"]}, format="json")
    assert response.status_code == 201
    assert (response.json()["created"], response.json()["reactivated"]) == (1, 1)
    assert pairs() == {("BTC-USDT", "1m", True), ("BTC-USDT", "5m", True)}
    assert set(Subscription.objects.values_list("status", flat=True)) == {"pending"}


def test_webhook_and_history_start_are_stored_with_new_pairs(token_api, market):
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1m"],
                                          "webhook_url": "https://hooks.example.com/candles",
                                          "backfill_from": 1705431600000}, format="json")
    (sub,) = response.json()["subscriptions"]
    assert sub["webhook_url"] == "https://hooks.example.com/candles"
    assert sub["backfill_from"] == "2024-01-16T19:00:00Z"


def test_unknown_symbols_and_timeframes_are_400_listing_every_bad_one(token_api, market):
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT", "NOPE-USDT", "OLD-USDT", "btc-usdt"],
                                          "timeframes": ["1m", "1h", "7m"]}, format="json")
    assert response.status_code == 400
    body = envelope_of(response)
    assert body["error_code"] == "INVALID_SYMBOLS"
    assert body["details"] == {"invalid_symbols": ["NOPE-USDT", "OLD-USDT", "btc-usdt"],
                               "invalid_timeframes": ["1h", "7m"]}
    assert not Subscription.objects.exists()


def test_only_bad_timeframes_are_400_invalid_timeframes(token_api, market):
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1D", "1d"]}, format="json")
    body = envelope_of(response)
    assert (response.status_code, body["error_code"]) == (400, "INVALID_TIMEFRAMES")
    assert body["details"]["invalid_timeframes"] == ["1d"]


def test_timeframes_are_case_sensitive_1M_is_a_month(token_api, market):
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1M"]}, format="json")
    assert response.status_code == 201
    assert pairs() == {("BTC-USDT", "1M", True)}


def test_an_inactive_timeframe_cannot_be_subscribed(token_api, market, tf):
    tf("3m").__class__.objects.filter(code="3m").update(is_active=False)
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["3m"]}, format="json")
    assert envelope_of(response)["error_code"] == "INVALID_TIMEFRAMES"


@override_settings(API_MAX_SYMBOLS=2, API_MAX_TIMEFRAMES=1)
def test_too_many_symbols_or_timeframes_is_a_validation_error(token_api, market):
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT", "ETH-USDT", "SOL-USDT"],
                                          "timeframes": ["1m", "5m"]}, format="json")
    body = envelope_of(response)
    assert (response.status_code, body["error_code"]) == (400, "VALIDATION_ERROR")
    assert set(body["details"]) == {"symbols", "timeframes"}


@pytest.mark.parametrize("payload", [
    {},
    {"symbols": "BTC-USDT", "timeframes": ["1m"]},
    {"symbols": [["BTC-USDT"]], "timeframes": ["1m"]},
    {"symbols": [], "timeframes": ["1m"]},
    {"symbols": ["BTC-USDT"], "timeframes": [None]},
    {"symbols": ["BTC\x00USDT"], "timeframes": ["1m"]},
    {"symbols": ["x" * 65], "timeframes": ["1m"]},
    {"symbols": ["BTC-USDT"], "timeframes": ["1m"], "webhook_url": "ftp://x"},
    {"symbols": ["BTC-USDT"], "timeframes": ["1m"], "backfill_from": "yesterday"},
    {"symbols": ["BTC-USDT"], "timeframes": ["1m"], "backfill_from": True},
    {"symbols": ["BTC-USDT"], "timeframes": ["1m"], "backfill_from": 10**30},
    {"symbols": ["BTC-USDT"], "timeframes": ["1m"], "backfill_from": "2999-01-01T00:00:00Z"},
    ["BTC-USDT"],
], ids=lambda p: str(p)[:40])
def test_malformed_bodies_are_400_validation_error(token_api, market, payload):
    response = token_api.post(SUBSCRIBE, payload, format="json")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "VALIDATION_ERROR"
    assert not Subscription.objects.exists()


# --- DELETE /subscribe/{symbol} ----------------------------------------------------------------------------


@pytest.fixture
def subscribed(token_api, market):
    token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT", "ETH-USDT"], "timeframes": ["1m", "1H"]}, format="json")


def test_unsubscribing_pauses_every_timeframe_of_the_symbol_and_nudges_once(
        token_api, subscribed, nudges, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = token_api.delete("/api/v1/subscribe/BTC-USDT")
    assert response.status_code == 200
    body = response.json()
    assert (body["symbol"], body["paused"]) == ("BTC-USDT", 2)
    assert {s["timeframe"] for s in body["subscriptions"]} == {"1m", "1H"}
    assert not any(s["is_active"] for s in body["subscriptions"])
    assert pairs() == {("BTC-USDT", "1m", False), ("BTC-USDT", "1H", False), ("ETH-USDT", "1m", True),
                       ("ETH-USDT", "1H", True)}
    assert nudges == [Subscription]


def test_unsubscribing_one_timeframe_leaves_the_others(token_api, subscribed):
    response = token_api.delete("/api/v1/subscribe/BTC-USDT?timeframe=1H")
    assert response.json()["paused"] == 1
    assert ("BTC-USDT", "1m", True) in pairs()
    assert ("BTC-USDT", "1H", False) in pairs()


def test_unsubscribing_what_is_not_active_is_404_subscription_not_found(token_api, subscribed):
    token_api.delete("/api/v1/subscribe/BTC-USDT")
    for url in ("/api/v1/subscribe/BTC-USDT", "/api/v1/subscribe/NOPE-USDT", "/api/v1/subscribe/ETH-USDT?timeframe=5m",
                "/api/v1/subscribe/%E2%82%AC"):
        response = token_api.delete(url)
        assert response.status_code == 404, url
        assert envelope_of(response)["error_code"] == "SUBSCRIPTION_NOT_FOUND"


def test_unsubscribing_an_unknown_timeframe_is_400_invalid_timeframes(token_api, subscribed):
    response = token_api.delete("/api/v1/subscribe/BTC-USDT?timeframe=1h")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "INVALID_TIMEFRAMES"
    assert ("BTC-USDT", "1H", True) in pairs()


def test_unsubscribing_needs_authentication(api, subscribed):
    assert api.delete("/api/v1/subscribe/BTC-USDT").status_code == 401
    assert ("BTC-USDT", "1m", True) in pairs()


def test_subscribing_after_unsubscribing_resumes_the_same_rows(token_api, subscribed):
    ids = set(Subscription.objects.values_list("id", flat=True))
    token_api.delete("/api/v1/subscribe/BTC-USDT")
    response = token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1m", "1H"]}, format="json")
    assert response.json()["reactivated"] == 2
    assert set(Subscription.objects.values_list("id", flat=True)) == ids


# --- GET /subscriptions -------------------------------------------------------------------------------------


def test_the_list_filters_by_status_activity_symbol_and_timeframe(api, token_api, subscribed):
    token_api.delete("/api/v1/subscribe/ETH-USDT?timeframe=1m")
    Subscription.objects.filter(instrument__inst_id="BTC-USDT", timeframe__code="1m").update(status="live")

    def listed(**params) -> list[tuple[str, str]]:
        response = api.get("/api/v1/subscriptions", params)
        assert response.status_code == 200
        return [(s["symbol"], s["timeframe"]) for s in response.json()["results"]]

    assert listed() == [("BTC-USDT", "1m"), ("BTC-USDT", "1H"), ("ETH-USDT", "1m"), ("ETH-USDT", "1H")]
    assert listed(status="live") == [("BTC-USDT", "1m")]
    assert listed(active="false") == [("ETH-USDT", "1m")]
    assert listed(symbol="ETH-USDT", active="true") == [("ETH-USDT", "1H")]
    assert listed(timeframe="1H") == [("BTC-USDT", "1H"), ("ETH-USDT", "1H")]
    assert listed(timeframe="1h") == []


def test_the_list_is_paged_with_next_and_previous_links(api, subscribed):
    first = api.get("/api/v1/subscriptions", {"limit": 3}).json()
    assert first["count"] == 4
    assert len(first["results"]) == 3
    assert first["previous"] is None
    second = api.get(first["next"]).json()
    assert [s["id"] for s in second["results"]] not in [s["id"] for s in first["results"]]
    assert len(second["results"]) == 1
    assert second["next"] is None
    assert api.get(second["previous"]).json()["results"] == first["results"]


@pytest.mark.parametrize("query", ["status=paused", "active=yes", "limit=0", "limit=1001", "offset=-1",
                                   "limit=ten", "symbol=" + "x" * 65])
def test_bad_list_parameters_are_400_validation_error(api, query):
    response = api.get(f"/api/v1/subscriptions?{query}")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "VALIDATION_ERROR"


# --- /subscriptions/{id} ---------------------------------------------------------------------------------


@pytest.fixture
def sub(subscribed) -> Subscription:
    return Subscription.objects.get(instrument__inst_id="BTC-USDT", timeframe__code="1m")


def test_one_subscription_reads_by_id(api, sub):
    response = api.get(f"/api/v1/subscriptions/{sub.pk}")
    assert response.status_code == 200
    assert response.json() | {"created_at": None, "updated_at": None} == {
        "id": sub.pk, "symbol": "BTC-USDT", "timeframe": "1m", "price": "trade", "is_active": True, "status": "pending",
        "status_message": "", "backfill_from": None, "webhook_url": "", "webhook_failures": 0,
        "webhook_last_error": "", "rule": None, "created_at": None, "updated_at": None,
    }


@pytest.mark.parametrize("pk", ["0", "999999", str(2**63), "9" * 40])
def test_an_unknown_id_is_404_subscription_not_found(api, token_api, db, pk):
    for response in (api.get(f"/api/v1/subscriptions/{pk}"),
                     token_api.patch(f"/api/v1/subscriptions/{pk}", {}, format="json"),
                     token_api.delete(f"/api/v1/subscriptions/{pk}")):
        assert response.status_code == 404
        assert envelope_of(response)["error_code"] == "SUBSCRIPTION_NOT_FOUND"


def test_an_id_that_is_not_a_number_is_404_not_found(api):
    response = api.get("/api/v1/subscriptions/abc")
    assert envelope_of(response)["error_code"] == "NOT_FOUND"


def test_patch_pauses_and_resumes_and_resuming_makes_it_pending(token_api, sub):
    Subscription.objects.filter(pk=sub.pk).update(status="live")
    paused = token_api.patch(f"/api/v1/subscriptions/{sub.pk}", {"is_active": False}, format="json")
    assert (paused.status_code, paused.json()["is_active"], paused.json()["status"]) == (200, False, "live")
    resumed = token_api.patch(f"/api/v1/subscriptions/{sub.pk}", {"is_active": True}, format="json").json()
    assert (resumed["is_active"], resumed["status"]) == (True, "pending")


def test_patch_changes_the_webhook_and_the_history_start(token_api, sub):
    response = token_api.patch(f"/api/v1/subscriptions/{sub.pk}", {
        "webhook_url": "https://hooks.example.com/x", "backfill_from": "2024-01-16T19:00:00+08:00"}, format="json")
    assert response.json()["webhook_url"] == "https://hooks.example.com/x"
    assert response.json()["backfill_from"] == "2024-01-16T11:00:00Z"
    cleared = token_api.patch(f"/api/v1/subscriptions/{sub.pk}", {"webhook_url": "", "backfill_from": None},
                              format="json").json()
    assert (cleared["webhook_url"], cleared["backfill_from"]) == ("", None)


@pytest.mark.parametrize("payload", [{"is_active": "maybe"}, {"webhook_url": 5}, {"backfill_from": "soon"}, [1]])
def test_a_bad_patch_is_400_and_changes_nothing(token_api, sub, payload):
    response = token_api.patch(f"/api/v1/subscriptions/{sub.pk}", payload, format="json")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "VALIDATION_ERROR"
    sub.refresh_from_db()
    assert (sub.is_active, sub.webhook_url, sub.backfill_from) == (True, "", None)


def test_patch_and_delete_need_authentication(api, sub):
    assert api.patch(f"/api/v1/subscriptions/{sub.pk}", {"is_active": False}, format="json").status_code == 401
    assert api.delete(f"/api/v1/subscriptions/{sub.pk}").status_code == 401
    assert Subscription.objects.filter(pk=sub.pk, is_active=True).exists()


def test_delete_removes_the_subscription(token_api, sub):
    response = token_api.delete(f"/api/v1/subscriptions/{sub.pk}")
    assert response.status_code == 204
    assert response.content == b""
    assert not Subscription.objects.filter(pk=sub.pk).exists()
    assert token_api.delete(f"/api/v1/subscriptions/{sub.pk}").status_code == 404


def test_the_subscribe_response_rows_are_exactly_what_the_subscription_serializer_writes(token_api, market):
    from candles.api.serializers import SubscriptionSerializer
    from candles.api.views_subscriptions import subscription_rows

    token_api.post(SUBSCRIBE, {"symbols": ["BTC-USDT"], "timeframes": ["1m", "1H"], "webhook_url": "https://h.example",
                               "backfill_from": "2024-01-01T00:00:00.123456+02:00"}, format="json")
    Subscription.objects.filter(timeframe__code="1H").update(webhook_failures=2, webhook_last_error="timeout")
    subs = list(Subscription.objects.select_related("instrument", "timeframe"))
    assert subscription_rows(subs) == SubscriptionSerializer(subs, many=True).data
