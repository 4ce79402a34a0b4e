"""Property-based run of schemathesis against the project's own OpenAPI schema (every endpoint, both apps).

Requests go through Django's WSGI application in this process, on the real PostgreSQL test database, which
holds instruments, subscriptions and candles so that the happy paths answer with data. Writes carry a token.
Every response must be no server error, carry a documented status code and content type, and match its
documented schema. Bounded: a few dozen examples per operation, no deadline (the machine is shared).
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client, override_settings
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from candles.models import Subscription
from candles.subscriptions import subscriptions_create
from tests.conftest import utc


def no_undocumented_server_error(ctx, response, case):
    """not_a_server_error, except a 503 the operation documents (GET /health says "not ready" that way)."""
    if response.status_code == 503 and "503" in case.operation.definition.raw.get("responses", {}):
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_undocumented_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES_PER_OPERATION = 25

NO_THROTTLE = {"anon": None, "user": None}


@pytest.fixture
def seeded(db, instrument, stored_candles, django_user_model):
    """Instruments, live subscriptions and candles (open and closed), and a token for writes."""
    btc = instrument("BTC-USDT", base_ccy="BTC", quote_ccy="USDT", tick_size=Decimal("0.1"), listed_at=utc(2020, 1, 1))
    instrument("ETH-USDT")
    instrument("BTC-USDT-SWAP", inst_type="SWAP")
    subscriptions_create(inst_ids=["BTC-USDT", "ETH-USDT"], bars=["1m", "1H"])
    stored_candles(btc, "1m", [utc(2024, 1, 16, 19, i) for i in range(30)])
    stored_candles(btc, "1m", [utc(2024, 1, 16, 19, 30)], confirmed=False, vol_ccy_quote=None)
    stored_candles(btc, "1H", [utc(2024, 1, 16, h) for h in range(10)])
    user = django_user_model.objects.create_user("fuzzer")
    return Token.objects.create(user=user).key


# The schema as /api/schema/ served it to the first test: it depends on the code, not on the test's data, and
# generating it costs half a second per test.
_served_schema: dict[str, bytes] = {}


@pytest.fixture
def api_schema(seeded, settings_without_throttle):
    if "json" not in _served_schema:
        response = Client().get("/api/schema/?format=json")
        assert response.status_code == 200
        _served_schema["json"] = response.content
    raw = json.loads(_served_schema["json"])  # a copy of its own: the examples below differ per test
    # Path ids of real subscriptions as examples, so GET/PATCH/DELETE /subscriptions/{id} also hit rows.
    ids = list(Subscription.objects.values_list("id", flat=True))
    for item in raw["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter["in"] == "path" and parameter["name"] == "id":
                    parameter["examples"] = {str(i): {"value": i} for i in ids}
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = get_wsgi_application()
    # As Django's test client does: the WSGI handler must not close the test's connection (and transaction)
    # after each request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schema
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def settings_without_throttle():
    from django.conf import settings as django_settings

    with override_settings(REST_FRAMEWORK={**django_settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": NO_THROTTLE}):
        yield


# Every method an OpenAPI path item can hold: whatever the schema lists is run, HEAD and OPTIONS included if
# it ever lists them (it does not today; test_methods.py sends them, and unlisted methods, to every route).
OPENAPI_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _operation_labels() -> list[str]:
    """Every operation of the schema, read at collection (one test each; the run needs the database)."""
    raw = SchemaGenerator().get_schema(request=None, public=True)
    return [f"{method.upper()} {path}" for path, item in raw["paths"].items() for method in item
            if method in OPENAPI_METHODS]


def test_every_method_the_schema_lists_is_run():
    raw = SchemaGenerator().get_schema(request=None, public=True)
    listed = {(method.upper(), path) for path, item in raw["paths"].items() for method in item
              if method not in {"parameters", "summary", "description", "servers"}}
    assert {tuple(label.split(" ", 1)) for label in _operation_labels()} == listed


def _run(strategy, token: str) -> None:
    @given(case=strategy)
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        # Writes with a token (some reads too, to cover authenticated reads); the rest anonymous.
        authenticated = case.method.upper() != "GET" or hash(repr(case.query)) % 5 == 0
        case.call_and_validate(headers={"Authorization": f"Token {token}"} if authenticated else {}, checks=CHECKS)

    run()


@pytest.mark.parametrize("label", _operation_labels())
def test_no_input_makes_a_server_error_or_breaks_the_schema(api_schema, seeded, label):
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    for strategy in api_schema.get_strategies_from_examples(operation):  # the documented examples first
        _run(strategy, seeded)
    _run(operation.as_strategy(GenerationMode.POSITIVE), seeded)
    with contextlib.suppress(Unsatisfiable):  # raised when no input of the operation can be made invalid
        _run(operation.as_strategy(GenerationMode.NEGATIVE), seeded)
