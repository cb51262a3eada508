"""Anonymous reads answered again from what was sent, until something changes."""

from __future__ import annotations

from social_common.response_cache import ResponseCache
from social_common.rest import conditional_json, etag_of
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient


def test_kept_responses_last_until_the_generation_moves() -> None:
    state = {"generation": 0, "handled": 0}
    cache = ResponseCache("things", lambda: state["generation"], ttl_ms=60_000, max_entries=10)

    async def read(request: Request) -> Response:
        state["handled"] += 1
        body = b'{"n": %d}' % state["handled"]
        response = conditional_json(request, body, etag_of(body), {"Link": "</next>"})
        if "authorization" not in request.headers:
            cache.keep(request, response, state["generation"])
        return response

    app = Starlette(
        routes=[Route("/things", read, methods=["GET", "POST"])],
        middleware=[Middleware(cache.middleware)],
    )
    with TestClient(app) as http:
        first = http.get("/things?limit=2")
        again = http.get("/things?limit=2")
        assert again.content == first.content == b'{"n": 1}'
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["link"] == "</next>"
        assert again.headers["content-length"] == str(len(first.content))
        not_modified = http.get("/things?limit=2", headers={"If-None-Match": first.headers["etag"]})
        assert not_modified.status_code == 304
        assert state["handled"] == 1
        # Another query, a token, another method: all reach the handler.
        assert http.get("/things?limit=3").json() == {"n": 2}
        assert http.get("/things?limit=2", headers={"Authorization": "Bearer x"}).json() == {"n": 3}
        assert http.post("/things?limit=2").json() == {"n": 4}
        state["generation"] += 1  # something changed
        assert http.get("/things?limit=2").json() == {"n": 5}
        assert http.get("/things?limit=2").json() == {"n": 5}
