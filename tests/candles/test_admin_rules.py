"""The admin's rules screen: a saved rule materializes at once, a bad one is a form error, deleting ends it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.urls import reverse

from candles.models import Subscription, SubscriptionRule

pytestmark = pytest.mark.django_db

ADD = "admin:candles_subscriptionrule_add"


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests"))
    return client


@pytest.fixture
def market(instrument):
    instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT")
    instrument("ETH-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT")


def form(**fields) -> dict:
    # What a browser posts for the untouched form: the price select's default, trade, included.
    return {"name": "swaps", "description": "", "is_active": "on", "price": "trade", "inst_type": "", "quote_ccy": "",
            "settle_ccy": "", "inst_id_pattern": "", "backfill_from_0": "", "backfill_from_1": "",
            "webhook_url": "", **fields}


def active() -> set[tuple[str, str]]:
    return set(Subscription.objects.filter(is_active=True).values_list("instrument__inst_id", "timeframe__code"))


def test_the_add_form_and_the_list_render(staff_client, market):
    page = staff_client.get(reverse(ADD))
    assert page.status_code == 200
    assert 'value="1M"' in page.content.decode()
    assert staff_client.get(reverse("admin:candles_subscriptionrule_changelist")).status_code == 200


def test_saving_a_rule_subscribes_what_it_matches_and_says_so(staff_client, market):
    response = staff_client.post(reverse(ADD), form(inst_type="SWAP", bars=["1m", "1H"]), follow=True)

    assert response.status_code == 200
    assert active() == {(i, b) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP") for b in ("1m", "1H")}
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("matches 2 instruments (4 pairs); subscriptions: 4 created" in t for t in texts), texts
    changelist = staff_client.get(reverse("admin:candles_subscriptionrule_changelist")).content.decode()
    assert "type SWAP" in changelist


@pytest.mark.parametrize(("fields", "field_name"), [
    ({"bars": []}, "bars"),
    ({"bars": ["1h"]}, "bars"),  # not a choice: 1H is an hour, 1h does not exist
    ({"bars": ["1m"], "inst_id_pattern": "BTC-%"}, "inst_id_pattern"),
    ({"bars": ["1m"], "webhook_url": "nope"}, "webhook_url"),
    ({"bars": ["1s"], "price": "mark"}, "bars"),  # mark and index candles start at 1m
    ({"bars": ["1m"], "price": "index", "inst_type": "SWAP"}, "inst_type"),
    ({"bars": ["1m"], "price": "bogus"}, "price"),
])
def test_a_bad_rule_is_a_form_error(staff_client, market, fields, field_name):
    response = staff_client.post(reverse(ADD), form(**fields))
    assert response.status_code == 200  # the form again, with its errors
    assert field_name in response.context["adminform"].form.errors
    assert not SubscriptionRule.objects.exists()
    assert not Subscription.objects.exists()


def test_a_mark_rule_subscribes_the_mark_series_and_the_list_shows_its_price(staff_client, market, instrument):
    instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT", price="mark")
    staff_client.post(reverse(ADD), form(price="mark", inst_type="SWAP", bars=["1m"]))

    assert set(Subscription.objects.values_list("instrument__inst_id", "instrument__price", "timeframe__code")) == {
        ("BTC-USDT-SWAP", "mark", "1m")}
    changelist = reverse("admin:candles_subscriptionrule_changelist")
    assert [staff_client.get(changelist, {"price__exact": price}).context["cl"].result_count
            for price in ("mark", "trade")] == [1, 0]


def test_a_rule_matching_nothing_is_saved_with_a_warning(staff_client, market):
    response = staff_client.post(reverse(ADD), form(inst_id_pattern="SOL-*", all_bars="on"), follow=True)
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("matches no collectable instrument" in t for t in texts), texts
    assert SubscriptionRule.objects.get().all_bars


def test_deleting_a_rule_in_the_admin_ends_its_subscriptions(staff_client, market):
    staff_client.post(reverse(ADD), form(inst_type="SWAP", bars=["1m"]))
    rule = SubscriptionRule.objects.get()
    response = staff_client.post(reverse("admin:candles_subscriptionrule_delete", args=[rule.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not SubscriptionRule.objects.exists()
    assert not active()


def test_the_deactivate_action_ends_and_activate_resumes(staff_client, market):
    staff_client.post(reverse(ADD), form(inst_type="SWAP", bars=["1m"]))
    rule = SubscriptionRule.objects.get()
    url = reverse("admin:candles_subscriptionrule_changelist")
    staff_client.post(url, {"action": "deactivate", "_selected_action": [rule.pk]})
    assert not active()
    staff_client.post(url, {"action": "activate", "_selected_action": [rule.pk]})
    assert len(active()) == 2
