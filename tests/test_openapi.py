"""The OpenAPI document and the services' public routes describe the same API."""

from __future__ import annotations

import asyncio

from openapi_spec_validator import validate
from social_common.fleet import roster
from social_common.rest import PLATFORM_PATHS, Readiness, build_app
from social_stack.gateway import openapi_document
from social_stack.openapi import DOCUMENT, generated_schemas, render_openapi
from social_stack.testing import wire_offline
from starlette.routing import Route, WebSocketRoute

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
# Served by the gateway itself, not by a service.
GATEWAY_ROUTES = {("GET", "/api/v1/openapi.json")}


def _service_routes() -> set[tuple[str, str]]:
    # Wiring runs inside the event loop, as in the runner (gRPC channels need one).
    return asyncio.run(_wired_routes())


async def _wired_routes() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for name in roster().names:
        app = build_app(name, (await wire_offline(name)).routes, Readiness(name, {}))
        for route in app.routes:
            if isinstance(route, WebSocketRoute):
                found.add(("GET", route.path))  # the upgrade request
                continue
            assert isinstance(route, Route), f"{name}: document {route!r} by hand"
            if route.path in PLATFORM_PATHS:
                continue
            methods = (route.methods or set()) - {"HEAD"}
            found |= {(method, route.path) for method in methods}
    return found


def _documented_routes() -> set[tuple[str, str]]:
    document = openapi_document()
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    served = _service_routes() | GATEWAY_ROUTES
    documented = _documented_routes()
    assert served - documented == set(), "served but not in gateway/openapi.yaml"
    assert documented - served == set(), "documented but served by no service"


def test_the_document_is_valid_openapi_3_1_with_unique_operation_ids() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)
    ids = [
        operation["operationId"]
        for operations in document["paths"].values()
        for method, operation in operations.items()
        if method in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids))


def test_the_committed_document_is_generated_from_its_source_and_the_views() -> None:
    assert DOCUMENT.read_text() == render_openapi(), "stale: run `make openapi`"


def test_every_json_request_body_is_a_typed_body_of_a_service() -> None:
    document = openapi_document()
    generated = generated_schemas()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody") if method in HTTP_METHODS else None
            if body is None:
                continue
            if "$ref" in body:
                body = document["components"]["requestBodies"][body["$ref"].split("/")[-1]]
            schema = body["content"].get("application/json", {}).get("schema")
            if schema is not None:  # multipart uploads are described by hand
                name = schema.get("$ref", "").removeprefix("#/components/schemas/")
                assert name in generated, f"{method} {path}: body not from a service's views"


def test_every_required_member_of_a_schema_is_one_of_its_properties() -> None:
    for name, schema in openapi_document()["components"]["schemas"].items():
        missing = set(schema.get("required", [])) - set(schema.get("properties", {}))
        assert missing == set(), f"{name} requires what it does not describe"
