"""/api/docs/: the API reference for people, from the same OpenAPI schema as /api/schema/.

Swagger UI needs its JavaScript bundle, which no package installed here ships (drf-spectacular's sidecar is
not installed) and no CDN is reachable from where this runs. So by default the page is rendered on the
server from the schema, with no script at all: every operation with its parameters, body and responses,
and every component. An operator who has Swagger UI's files (the npm package swagger-ui-dist, copied under
static files or served elsewhere) sets API_DOCS_SWAGGER_UI_DIST to their URL, and the page becomes
drf-spectacular's Swagger UI.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularSwaggerView

from okxproject.api_errors import error_response, json_bytes

_METHODS = ("get", "post", "put", "patch", "delete")


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "allOf" in schema:
        return " & ".join(_type_of(s) for s in schema["allOf"])
    if "oneOf" in schema:
        return " | ".join(_type_of(s) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        kind = f"array of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        kind += " (" + ", ".join(str(v) for v in schema["enum"] if v is not None) + ")"
    if schema.get("format"):
        kind += f" [{schema['format']}]"
    if schema.get("nullable"):
        kind += ", nullable"
    return kind


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    operations = []
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {})
            operations.append({
                "method": method.upper(),
                "path": path,
                "anchor": op.get("operationId", f"{method}-{path}"),
                "summary": op.get("summary", ""),
                "description": op.get("description", ""),
                "parameters": [
                    {"name": p["name"], "in": p["in"], "required": p.get("required", False),
                     "type": _type_of(p.get("schema", {})), "description": p.get("description", "")}
                    for p in op.get("parameters", [])
                ],
                "body": [(media, _type_of(content.get("schema", {}))) for media, content in body.items()],
                "responses": [
                    {"code": code, "description": response.get("description", ""),
                     "content": [(media, _type_of(c.get("schema", {})))
                                 for media, c in response.get("content", {}).items()]}
                    for code, response in op.get("responses", {}).items()
                ],
            })
    return operations


def _components(schema: dict[str, Any]) -> list[dict[str, Any]]:
    components = []
    for name, component in sorted(schema.get("components", {}).get("schemas", {}).items()):
        required = set(component.get("required", []))
        components.append({
            "name": name,
            "description": component.get("description", ""),
            "type": _type_of(component) if "properties" not in component else "object",
            "properties": [
                {"name": prop, "type": _type_of(spec), "required": prop in required,
                 "read_only": spec.get("readOnly", False), "description": spec.get("description", "")}
                for prop, spec in component.get("properties", {}).items()
            ],
        })
    return components


# Exempt from CSRF because it changes nothing: a POST (or any write) is then 405 like on every other route
# under /api/, rather than a CSRF failure.
@method_decorator(csrf_exempt, name="dispatch")
class ApiDocsView(View):
    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Django's own 405 is an empty text/html answer; under /api/ every error is the envelope.
        return error_response(405, "METHOD_NOT_ALLOWED", f'Method "{request.method}" not allowed.',
                              headers={"Allow": ", ".join(self._allowed_methods())})

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # As the DRF views under /api/ answer OPTIONS: JSON metadata and Allow (Django's own is an empty body).
        response = HttpResponse(json_bytes({"name": "API reference", "description": "The OpenAPI schema for people.",
                                            "renders": ["text/html"], "parses": []}),
                                content_type="application/json")
        response["Allow"] = ", ".join(self._allowed_methods())
        return response

    def get(self, request: HttpRequest) -> HttpResponse:
        if settings.API_DOCS_SWAGGER_UI_DIST:
            return SpectacularSwaggerView.as_view(url_name="api-schema")(request)
        schema = SchemaGenerator().get_schema(request=None, public=True)
        return render(request, "api/docs.html", {
            "info": schema.get("info", {}),
            "operations": _operations(schema),
            "components": _components(schema),
        })
