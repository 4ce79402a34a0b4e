"""The instrument universe follows OKX: each sync brings rules' subscriptions to new listings and ends the ones of
expired or delisted instruments; the health check raises no alarm for them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from candles.bars import datetime_to_ms
from candles.models import Instrument, Subscription, SubscriptionStatus
from candles.rules import rule_create
from candles.subscriptions import subscriptions_create, subscriptions_end_finished
from collectors import tasks
from collectors.instruments import DEFAULT_INST_TYPES, instruments_apply
from collectors.management.commands.setup_periodic_tasks import declared_schedule
from collectors.monitoring.health import health_check
from collectors.okx.instrument_rows import InstrumentInfo

pytestmark = pytest.mark.django_db


def swap(inst_id: str, *, expires_at=None) -> InstrumentInfo:
    return InstrumentInfo(
        inst_type="FUTURES" if expires_at else "SWAP", inst_id=inst_id, base_ccy=None, quote_ccy=None,
        settle_ccy="USDT", inst_family="-".join(inst_id.split("-")[:2]), tick_size=None, lot_size=None,
        list_time_ms=None, exp_time_ms=None if expires_at is None else datetime_to_ms(expires_at), state="live",
    )


def active() -> set[tuple[str, str]]:
    return set(Subscription.objects.filter(is_active=True).values_list("instrument__inst_id", "timeframe__code"))


def test_a_rule_follows_a_new_listing_and_a_delisting():
    instruments_apply(listed={"SWAP": [swap("BTC-USDT-SWAP")]})
    rule_create(name="swaps", inst_type="SWAP", bars=["1m", "1H"])
    assert active() == {("BTC-USDT-SWAP", "1m"), ("BTC-USDT-SWAP", "1H")}

    listed = instruments_apply(listed={"SWAP": [swap("BTC-USDT-SWAP"), swap("NEW-USDT-SWAP")]})

    assert listed.subscriptions.created == 2
    assert active() == {(i, b) for i in ("BTC-USDT-SWAP", "NEW-USDT-SWAP") for b in ("1m", "1H")}

    gone = instruments_apply(listed={"SWAP": [swap("NEW-USDT-SWAP")]})

    assert (gone.delisted, gone.subscriptions.finished) == (1, 2)
    assert active() == {("NEW-USDT-SWAP", "1m"), ("NEW-USDT-SWAP", "1H")}
    ended = Subscription.objects.get(instrument__inst_id="BTC-USDT-SWAP", timeframe__code="1m")
    assert ended.status_message.startswith("delisted ")
    assert ended.ended_at is not None

    back = instruments_apply(listed={"SWAP": [swap("NEW-USDT-SWAP"), swap("BTC-USDT-SWAP")]})
    assert back.subscriptions.updated == 2  # relisted: the rule resumes what the delisting ended
    assert len(active()) == 4


def test_a_future_that_expires_ends_its_subscriptions_at_the_next_check_with_the_reason():
    soon = timezone.now().replace(microsecond=0) + timedelta(hours=1)
    instruments_apply(listed={"FUTURES": [swap("BTC-USDT-261225", expires_at=soon)]})
    rule_create(name="futures", inst_type="FUTURES", bars=["1m"])
    explicit = subscriptions_create(inst_ids=["BTC-USDT-261225"], bars=["5m"]).created[0]
    assert active() == {("BTC-USDT-261225", "1m"), ("BTC-USDT-261225", "5m")}

    ended = subscriptions_end_finished(now=soon + timedelta(seconds=1))

    assert ended == 2  # the rule's and the explicit one
    assert not active()
    explicit.refresh_from_db()
    assert explicit.status_message == f"expired {soon:%Y-%m-%d %H:%M} UTC"


def test_health_raises_no_alarm_for_subscriptions_of_expired_or_delisted_instruments(redis, keys):
    past = timezone.now() - timedelta(minutes=5)
    instruments_apply(listed={"FUTURES": [swap("BTC-USDT-261225", expires_at=past + timedelta(days=1)),
                                          swap("ETH-USDT-261225", expires_at=past + timedelta(days=1))]})
    subscriptions_create(inst_ids=["BTC-USDT-261225", "ETH-USDT-261225"], bars=["1m"])
    # Expired (not yet ended by anything), and delisted, both still active rows.
    Subscription.objects.filter(instrument__inst_id="BTC-USDT-261225").update(status=SubscriptionStatus.LIVE)
    Instrument.objects.filter(inst_id="BTC-USDT-261225").update(expires_at=past)
    Instrument.objects.filter(inst_id="ETH-USDT-261225").update(delisted_at=past)

    result = health_check(redis=redis, keys=keys)

    assert (result.checked, result.stale, result.error) == (0, 0, 0)
    assert set(Subscription.objects.values_list("status", flat=True)) == {"live", "pending"}


def test_the_health_task_ends_subscriptions_of_expired_instruments_first(keys):
    past = timezone.now() - timedelta(minutes=5)
    instruments_apply(listed={"FUTURES": [swap("BTC-USDT-261225", expires_at=past + timedelta(days=1))]})
    subscriptions_create(inst_ids=["BTC-USDT-261225"], bars=["1m"])
    Instrument.objects.filter(inst_id="BTC-USDT-261225").update(expires_at=past)

    tasks.check_health()

    assert not active()


def test_futures_are_synced_by_default_by_the_command_the_task_and_the_admin():
    from collectors.admin import SYNC_DEFAULT_TYPES
    from collectors.management.commands.sync_instruments import Command

    assert DEFAULT_INST_TYPES == ("SPOT", "SWAP", "FUTURES")
    assert SYNC_DEFAULT_TYPES == DEFAULT_INST_TYPES
    assert "(default: SPOT, SWAP, FUTURES)" in Command().create_parser("manage.py", "sync_instruments").format_help()
    sync = {p.task: p for p in declared_schedule()}["collectors.tasks.sync_instruments"]
    assert (sync.every_s, sync.queue) == (600, "default")


def test_the_sync_task_syncs_the_default_types(monkeypatch):
    asked = []
    monkeypatch.setattr("collectors.instruments.instruments_sync",
                        lambda *, inst_types, client: asked.append(inst_types) or instruments_apply(listed={}))
    monkeypatch.setattr("collectors.instruments.indices_sync", lambda *, client: asked.append("indices"))
    tasks.sync_instruments()
    assert asked == [["SPOT", "SWAP", "FUTURES"], "indices"]
