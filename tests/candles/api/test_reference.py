"""GET /instruments (filters, pages) and GET /timeframes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from candles.models import Timeframe
from tests.candles.api.fixtures import envelope_of
from tests.conftest import SEEDED_CODES

pytestmark = pytest.mark.django_db


@pytest.fixture
def instruments(instrument):
    instrument("BTC-USDT", base_ccy="BTC", quote_ccy="USDT", tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"))
    instrument("ETH-USDT")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", settle_ccy="USDT", inst_family="BTC-USDT")
    instrument("LUNA-USDT", state="suspend")


def symbols(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [i["symbol"] for i in response.json()["results"]]


def test_instruments_come_in_id_order_with_exact_sizes(api, instruments):
    response = api.get("/api/v1/instruments")
    assert symbols(response) == ["BTC-USDT", "BTC-USDT-SWAP", "ETH-USDT", "LUNA-USDT"]
    first = response.json()["results"][0]
    assert first | {"listed_at": None} == {
        "symbol": "BTC-USDT", "type": "SPOT", "prices": ["trade"], "base_ccy": "BTC", "quote_ccy": "USDT",
        "settle_ccy": "",
        "inst_family": "", "state": "live", "tick_size": "0.1", "lot_size": "0.00000001", "listed_at": None,
        "expires_at": None, "delisted_at": None,
    }


def test_instruments_filter_by_type_state_and_search(api, instruments):
    assert symbols(api.get("/api/v1/instruments", {"type": "SWAP"})) == ["BTC-USDT-SWAP"]
    assert symbols(api.get("/api/v1/instruments", {"state": "suspend"})) == ["LUNA-USDT"]
    assert symbols(api.get("/api/v1/instruments", {"search": "btc", "type": "SPOT"})) == ["BTC-USDT"]
    assert symbols(api.get("/api/v1/instruments", {"search": "%_"})) == []


def test_instruments_are_paged(api, instruments):
    page = api.get("/api/v1/instruments", {"limit": 3}).json()
    assert page["count"] == 4
    assert symbols(api.get(page["next"])) == ["LUNA-USDT"]


@pytest.mark.parametrize("query", ["type=spot", "state=LIVE", "state=a%00", "search=" + "b" * 65, "offset=x"])
def test_bad_instrument_filters_are_400(api, instruments, query):
    response = api.get(f"/api/v1/instruments?{query}")
    assert response.status_code == 400
    assert envelope_of(response)["error_code"] == "VALIDATION_ERROR"


def test_timeframes_list_every_bar_in_display_order_with_alignment(api, db):
    Timeframe.objects.filter(code="5D").update(is_active=False)
    body = api.get("/api/v1/timeframes").json()
    assert body["count"] == len(SEEDED_CODES)
    assert [t["code"] for t in body["results"]] == list(SEEDED_CODES)
    by_code = {t["code"]: t for t in body["results"]}
    assert by_code["1m"] == {"code": "1m", "seconds": 60, "months": 0, "alignment": "UTC", "is_active": True}
    assert by_code["1M"] == {"code": "1M", "seconds": 0, "months": 1, "alignment": "UTC+8", "is_active": True}
    assert by_code["5D"]["is_active"] is False


def test_an_instrument_lists_its_price_kinds_once_and_an_index_is_an_entry_of_its_own(api, instrument):
    instrument("BTC-USDT-SWAP", inst_type="SWAP")
    instrument("BTC-USDT-SWAP", inst_type="SWAP", price="mark")
    instrument("ETH-USDT-SWAP", inst_type="SWAP")
    instrument("BTC-USDT")
    instrument("BTC-USDT", inst_type="INDEX", price="index")
    results = api.get("/api/v1/instruments").json()["results"]
    assert [(r["symbol"], r["type"], r["prices"]) for r in results] == [
        ("BTC-USDT", "INDEX", ["index"]), ("BTC-USDT", "SPOT", ["trade"]),
        ("BTC-USDT-SWAP", "SWAP", ["trade", "mark"]), ("ETH-USDT-SWAP", "SWAP", ["trade"]),
    ]
    indices = api.get("/api/v1/instruments", {"type": "INDEX"}).json()["results"]
    assert [r["symbol"] for r in indices] == ["BTC-USDT"]
