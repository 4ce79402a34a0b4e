"""The admin: every model has a working screen for staff, candles are read-only, actions work."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.forms.models import model_to_dict
from django.urls import reverse

from candles.admin import TimeframeForm
from candles.models import CandleRecord, Gap, Instrument, Subscription, SubscriptionStatus, Timeframe
from candles.storage import CandleRow, candles_upsert

pytestmark = pytest.mark.django_db

H1_OPEN = 1705420800000  # 2024-01-16T16:00:00Z, a 1H boundary


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture
def btc() -> Instrument:
    return Instrument.objects.create(inst_id="BTC-USDT", inst_type="SPOT", base_ccy="BTC", quote_ccy="USDT")


@pytest.fixture
def stored_candle(btc) -> CandleRecord:
    result = candles_upsert(rows=[CandleRow(
        "BTC-USDT", "1H", H1_OPEN, "43253.6", "43440.2", "43000", "43250.9", "942.87870026",
        "40743115.773175484", "40743115.773175484", True, "ws", 1,
    )])
    assert result.inserted == 1
    return CandleRecord.objects.get()


@pytest.mark.parametrize("model", ["instrument", "timeframe", "subscription", "gap", "candlerecord"])
def test_every_changelist_renders_for_staff(staff_client, stored_candle, model):
    sub = Subscription.objects.create(instrument=stored_candle.instrument, timeframe=Timeframe.objects.get(code="1H"))
    Gap.objects.create(subscription=sub, start=stored_candle.open_time, end=stored_candle.open_time, missing=1)
    response = staff_client.get(reverse(f"admin:candles_{model}_changelist"))
    assert response.status_code == 200


def test_candle_list_shows_exact_values_and_filters_by_date(staff_client, stored_candle):
    url = reverse("admin:candles_candlerecord_changelist")
    response = staff_client.get(url, {"open_time__year": "2024", "open_time__month": "1"})
    assert response.status_code == 200
    assert "43440.2" in response.content.decode()
    assert staff_client.get(url, {"open_time__year": "2023"}).content.decode().count("43440.2") == 0


def test_a_candle_opens_read_only_by_its_key(staff_client, stored_candle):
    assert stored_candle.key == f"{stored_candle.instrument_id}.{stored_candle.timeframe_id}.{H1_OPEN}"
    response = staff_client.get(reverse("admin:candles_candlerecord_change", args=[stored_candle.key]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "40743115.773175484" in body
    assert 'name="_save"' not in body


def test_candles_cannot_be_added_or_deleted_in_the_admin(staff_client, stored_candle):
    assert staff_client.get(reverse("admin:candles_candlerecord_add")).status_code == 403
    delete = reverse("admin:candles_candlerecord_delete", args=[stored_candle.key])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert CandleRecord.objects.count() == 1


def test_an_unknown_candle_key_is_a_redirect_not_an_error(staff_client, stored_candle):
    response = staff_client.get(reverse("admin:candles_candlerecord_change", args=["not-a-key"]))
    assert response.status_code == 302


def test_pause_and_resume_actions_flip_active_subscriptions(staff_client, btc):
    sub = Subscription.objects.create(
        instrument=btc, timeframe=Timeframe.objects.get(code="1m"), status=SubscriptionStatus.LIVE,
    )
    url = reverse("admin:candles_subscription_changelist")
    staff_client.post(url, {"action": "pause", "_selected_action": [sub.pk]})
    sub.refresh_from_db()
    assert sub.is_active is False
    assert "paused" in staff_client.get(url).content.decode()
    staff_client.post(url, {"action": "resume", "_selected_action": [sub.pk]})
    sub.refresh_from_db()
    assert sub.is_active is True
    assert sub.status == SubscriptionStatus.PENDING


def test_a_timeframe_code_cannot_be_renamed_in_the_admin(staff_client):
    tf = Timeframe.objects.get(code="1m")
    response = staff_client.get(reverse("admin:candles_timeframe_change", args=[tf.pk]))
    assert response.status_code == 200
    assert 'name="code"' not in response.content.decode()


def timeframe_form(code: str, **changes) -> TimeframeForm:
    tf = Timeframe.objects.get(code=code)
    data = {**model_to_dict(tf), **changes}
    data = {name: ("" if value is None else value) for name, value in data.items()}
    return TimeframeForm(data=data, instance=tf)


def test_retention_and_archive_are_edited_per_timeframe(staff_client):
    form = timeframe_form("1m", retention="30 00:00:00", archive=True)

    assert form.is_valid(), form.errors
    form.save()

    tf = Timeframe.objects.get(code="1m")
    assert (tf.retention, tf.archive) == (timedelta(days=30), True)
    listing = staff_client.get(reverse("admin:candles_timeframe_changelist")).content.decode()
    assert "30 days" in listing
    assert "forever" in listing  # the bars without a retention


def test_an_empty_retention_keeps_candles_forever():
    form = timeframe_form("1s", retention="")

    assert form.is_valid(), form.errors
    assert form.cleaned_data["retention"] is None


@pytest.mark.parametrize(("code", "retention", "message"), [
    ("1m", "-1 00:00:00", "must be positive"),
    ("1m", "00:00:00", "must be positive"),
    ("1m", "36600000 00:00:00", "More than 100 years"),
    ("1H", "00:30:00", "Shorter than one bar"),
    ("1M", "20 00:00:00", "Shorter than one bar"),
])
def test_a_negative_absurd_or_too_short_retention_is_a_clear_form_error(code, retention, message):
    form = timeframe_form(code, retention=retention)

    assert not form.is_valid()
    assert message in " ".join(form.errors["retention"])


def test_the_timeframe_change_page_explains_retention(staff_client):
    tf = Timeframe.objects.get(code="1s")
    page = staff_client.get(reverse("admin:candles_timeframe_change", args=[tf.pk])).content.decode()

    assert 'name="retention"' in page
    assert 'name="archive"' in page
    assert "Empty keeps them forever" in page


def test_a_non_staff_user_gets_nothing(client, stored_candle):
    user = get_user_model().objects.create_user("quant", "q@example.com", "pw-for-tests")
    client.force_login(user)
    for name in ("admin:index", "admin:candles_candlerecord_changelist", "admin:candles_subscription_changelist"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


def test_pausing_in_the_admin_tells_the_collectors_at_once(staff_client, btc, django_capture_on_commit_callbacks):
    from candles.signals import subscriptions_changed

    received = []

    def listener(sender, **kwargs):
        received.append(sender)

    subscriptions_changed.connect(listener)
    try:
        sub = Subscription.objects.create(instrument=btc, timeframe=Timeframe.objects.get(code="1m"))
        url = reverse("admin:candles_subscription_changelist")
        with django_capture_on_commit_callbacks(execute=True):
            staff_client.post(url, {"action": "pause", "_selected_action": [sub.pk]})
        assert received == [Subscription]
    finally:
        subscriptions_changed.disconnect(listener)


def test_the_candles_admin_imports_nothing_from_collectors():
    # collectors depends on candles; the operational admin subclasses these screens from collectors/admin.py.
    import ast
    from pathlib import Path

    import candles.admin

    tree = ast.parse(Path(candles.admin.__file__).read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert imported
    assert [name for name in imported if name.split(".")[0] == "collectors"] == []
