"""Every route under /api/ answers every HTTP method properly, never 500.

The routes are those of the OpenAPI schema (one test per route) plus the schema and docs pages. For each:
OPTIONS is 200 JSON metadata with an `Allow` header, whatever the view renders (text for /metrics, CSV on
request for /data); HEAD answers as GET does; every method the route does not take is 405 in the error envelope
with an `Allow` header that does not list it. The methods the schema lists are exercised by schemathesis
(test_schemathesis.py).
"""

from __future__ import annotations

import re

import pytest
from drf_spectacular.generators import SchemaGenerator

from candles.subscriptions import subscriptions_create
from tests.candles.api.fixtures import envelope_of

pytestmark = pytest.mark.django_db

# PROPFIND: a method no view knows (WebDAV) is refused the same way.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND")
# Path parameters that name existing things, so that the reads behind HEAD answer with data.
PATH_VALUES = {"symbol": "BTC-USDT", "timeframe": "1m"}


def _routes() -> list[tuple[str, frozenset[str]]]:
    """(path template, methods the schema lists) of every route, read at collection."""
    raw = SchemaGenerator().get_schema(request=None, public=True)
    routes = [(path, frozenset(m.upper() for m in item)) for path, item in raw["paths"].items()]
    return [*routes, ("/api/schema/", frozenset({"GET"})), ("/api/docs/", frozenset({"GET"}))]


ROUTES = _routes()


@pytest.fixture
def seeded(btc, stored_candles):
    subscriptions_create(inst_ids=["BTC-USDT"], bars=["1m"])
    stored_candles(btc, "1m", [1_705_431_600_000])


def url_of(template: str, subscription_id: int) -> str:
    values = {**PATH_VALUES, "id": str(subscription_id)}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), template)


def allowed(response) -> set[str]:
    return {m.strip() for m in response["Allow"].split(",")}


@pytest.fixture
def url(seeded, request):
    from candles.models import Subscription

    return url_of(request.param, Subscription.objects.get().pk)


@pytest.mark.parametrize(("url", "listed"), ROUTES, ids=[path for path, _ in ROUTES], indirect=["url"])
def test_options_is_json_metadata_with_allow_whatever_the_view_renders(api, url, listed):
    for query, accept in (("", "*/*"), ("?format=csv", "text/csv"), ("", "text/plain")):
        response = api.options(url + query, HTTP_ACCEPT=accept)

        assert response.status_code == 200, (query, accept, response.content)
        assert response["Content-Type"] == "application/json"
        assert allowed(response) >= listed | {"OPTIONS"}
        assert response.json()["name"]


@pytest.mark.parametrize(("url", "listed"), ROUTES, ids=[path for path, _ in ROUTES], indirect=["url"])
def test_head_answers_as_get_does(api, url, listed):
    head = api.head(url)

    assert head.status_code != 500
    if "GET" in listed:
        assert head.status_code == api.get(url).status_code
    else:
        assert head.status_code == 405
        assert "HEAD" not in allowed(head)


@pytest.mark.parametrize(("url", "listed"), ROUTES, ids=[path for path, _ in ROUTES], indirect=["url"])
def test_a_method_the_route_does_not_take_is_405_in_the_envelope_with_allow(api, url, listed):
    for method in set(METHODS) - listed:
        response = api.generic(method, url)

        assert response.status_code == 405, (method, response.content)
        assert envelope_of(response)["error_code"] == "METHOD_NOT_ALLOWED"
        assert method not in allowed(response)
        assert allowed(response) >= listed
