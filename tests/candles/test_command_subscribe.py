"""`manage.py subscribe INST_ID … -t BAR [--price trade|mark|index]`."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from candles.models import Subscription

pytestmark = pytest.mark.django_db


@pytest.fixture
def market(instrument):
    instrument("BTC-USDT")
    instrument("BTC-USDT-SWAP", inst_type="SWAP")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")


def subscribe(*args: str) -> str:
    out = io.StringIO()
    call_command("subscribe", *args, stdout=out)
    return out.getvalue()


def test_subscribes_trade_series_by_default_and_mark_series_with_price_mark(market):
    assert subscribe("BTC-USDT-SWAP", "-t", "1m") == "1 created, 0 resumed, 0 already active\n"
    assert subscribe("BTC-USDT-SWAP", "-t", "1m", "--price", "mark") == "1 created, 0 resumed, 0 already active\n"

    assert set(Subscription.objects.values_list("instrument__price", "timeframe__code")) == {
        ("trade", "1m"), ("mark", "1m")}


@pytest.mark.parametrize(("args", "message"), [
    (["BTC-USDT", "-t", "1m", "--price", "mark"], "'BTC-USDT' is SPOT: OKX publishes mark prices"),
    (["BTC-USDT-SWAP", "-t", "1s", "--price", "mark"], "OKX has no 1s mark candles"),
    (["NOPE-USDT", "-t", "1m"], "unknown instruments: NOPE-USDT"),
])
def test_what_cannot_be_subscribed_is_a_clear_command_error(market, args, message):
    with pytest.raises(CommandError, match=message):
        subscribe(*args)
    assert not Subscription.objects.exists()
