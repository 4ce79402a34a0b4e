"""/api/schema/ is a valid OpenAPI 3 document describing every endpoint and its errors; /api/docs/ works offline."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

ENDPOINTS = {
    ("post", "/api/v1/subscribe"), ("delete", "/api/v1/subscribe/{symbol}"), ("get", "/api/v1/subscriptions"),
    ("get", "/api/v1/subscriptions/{id}"), ("patch", "/api/v1/subscriptions/{id}"),
    ("delete", "/api/v1/subscriptions/{id}"), ("get", "/api/v1/data/{symbol}/{timeframe}"),
    ("get", "/api/v1/data/{symbol}/{timeframe}/latest"), ("get", "/api/v1/statistics/{symbol}"),
    ("get", "/api/v1/market/overview"), ("get", "/api/v1/instruments"), ("get", "/api/v1/timeframes"),
}


@pytest.fixture
def schema(api) -> dict:
    response = api.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_the_schema_is_yaml_by_default_for_tools(api):
    response = api.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")


def test_every_endpoint_of_the_candles_side_is_described(schema):
    described = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert described >= ENDPOINTS


def test_errors_are_documented_as_the_envelope_where_they_can_happen(schema):
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    data = schema["paths"]["/api/v1/data/{symbol}/{timeframe}"]["get"]["responses"]
    assert set(data) == {"200", "400", "401", "404", "406", "410", "429"}  # 410: behind the retention horizon
    assert data["410"]["content"]["application/json"]["schema"] == envelope
    assert data["404"]["content"]["application/json"]["schema"] == envelope
    assert set(data["200"]["content"]) == {"application/json", "text/csv", "application/vnd.apache.parquet"}
    subscribe = schema["paths"]["/api/v1/subscribe"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "415", "429"} <= set(subscribe)
    assert "X-Request-ID" in data["200"]["headers"]
    assert set(schema["components"]["schemas"]["ErrorEnvelope"]["properties"]) == {
        "status", "error_code", "message", "details", "request_id", "timestamp"}


def test_reads_are_documented_as_open_and_writes_as_needing_a_token(schema):
    assert {} in schema["paths"]["/api/v1/timeframes"]["get"]["security"]
    assert {} not in schema["paths"]["/api/v1/subscribe"]["post"]["security"]
    assert {"tokenAuth": []} in schema["paths"]["/api/v1/subscribe"]["post"]["security"]


def test_the_docs_page_lists_every_operation_without_loading_anything_from_elsewhere(api):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    for _method, path in ENDPOINTS:
        assert path in page
    assert "ErrorEnvelope" in page
    assert not re.search(r"(src|href)=\"https?://", page)


@override_settings(API_DOCS_SWAGGER_UI_DIST="/static/swagger-ui")
def test_the_docs_page_is_swagger_ui_when_its_files_are_configured(api, monkeypatch):
    from drf_spectacular.settings import spectacular_settings

    # What settings.py derives from API_DOCS_SWAGGER_UI_DIST at start (drf-spectacular reads it once).
    monkeypatch.setattr(spectacular_settings, "SWAGGER_UI_DIST", "/static/swagger-ui")
    page = api.get("/api/docs/").content.decode()
    assert "/static/swagger-ui/swagger-ui-bundle.js" in page
    assert "/api/schema/" in page
