"""Every error a service answers is problem+json with the request id, never a trace."""

from __future__ import annotations

from http import HTTPStatus

from social_common.errors import Problem
from social_common.rest import Readiness, build_app
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient


async def _refuse(_request: Request) -> Response:
    raise Problem(
        422,
        "validation_failed",
        "The caption is too long.",
        errors=[{"field": "caption", "message": "at most 2200 characters"}],
    )


async def _crash(_request: Request) -> Response:
    raise RuntimeError("secret internal detail")


def _client() -> TestClient:
    app = build_app(
        "demo",
        [Route("/refuse", _refuse, methods=["POST"]), Route("/crash", _crash)],
        Readiness("demo", {}),
    )
    return TestClient(app, raise_server_exceptions=False)


def test_a_problem_becomes_an_rfc9457_document() -> None:
    response = _client().post("/refuse", headers={"x-request-id": "req-1"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "https://social.example/problems/validation_failed",
        "title": HTTPStatus(422).phrase,
        "status": 422,
        "code": "validation_failed",
        "detail": "The caption is too long.",
        "errors": [{"field": "caption", "message": "at most 2200 characters"}],
        "request_id": "req-1",
    }


def test_unknown_route_and_wrong_method_are_problems() -> None:
    client = _client()
    missing = client.get("/nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong = client.get("/refuse")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")
    assert wrong.headers["content-type"] == "application/problem+json"


def test_an_unexpected_error_is_a_500_problem_without_internals() -> None:
    response = _client().get("/crash", headers={"x-request-id": "req-2"})
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.json()["request_id"] == "req-2"
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


def test_metrics_are_labelled_by_route_template() -> None:
    client = _client()
    client.post("/refuse")
    client.get("/does/not/exist")
    metrics = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/refuse",status="422"}' in metrics
    assert 'route="<unmatched>",status="404"' in metrics
    assert "/does/not/exist" not in metrics


async def _redis_down(_request: Request) -> Response:
    import redis.exceptions

    raise redis.exceptions.ConnectionError("Error 111 connecting to 10.0.0.1:6379")


def test_an_unavailable_dependency_is_a_503_without_its_address() -> None:
    app = build_app("demo", [Route("/redis", _redis_down)], Readiness("demo", {}))
    response = TestClient(app, raise_server_exceptions=False).get("/redis")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response.headers["retry-after"] == "2"
    assert "10.0.0.1" not in response.text
