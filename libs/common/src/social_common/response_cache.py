"""Responses to anonymous reads, answered again while nothing they show changed.

A service's read handlers :meth:`~ResponseCache.keep` what they sent to a
reader without a token; the cache's ASGI middleware answers the next GET of
the same path and query from it, without routing, parsing or handler, until
the service's generation moves (every change the process learns of moves it)
or ``ttl_ms`` passes. ``If-None-Match`` is honoured with a 304, as the
handler would. Requests that carry a token always reach the handler: what
they see depends on who asks.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from social_common.cache import REQUESTS, LocalCache
from social_common.rest import etag_matches

# Headers a kept response is sent again with (the rest are per request).
_KEPT_HEADERS = (b"content-type", b"etag", b"cache-control", b"vary", b"link")


class ResponseCache:
    def __init__(
        self, name: str, generation: Callable[[], int], ttl_ms: int, max_entries: int
    ) -> None:
        self.generation = generation
        self.entries = LocalCache(ttl_ms, max_entries)
        self._hit = REQUESTS.labels(name, "response", "hit")
        self._miss = REQUESTS.labels(name, "response", "miss")

    @staticmethod
    def _key(scope: Scope) -> str:
        return f"{scope['path']}?{scope['query_string'].decode('latin-1')}"

    def keep(self, request: Request, response: Response, generation: int) -> None:
        """Keeps ``response`` to an anonymous GET, rendered at ``generation``."""
        if response.status_code != 200 or request.method != "GET":
            return
        headers = [(k, v) for k, v in response.raw_headers if k in _KEPT_HEADERS]
        etag = response.headers.get("etag", "")
        self.entries.put(
            self._key(request.scope),
            generation,
            (request.scope.get("route"), response.body, etag, headers),
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def answer_kept(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] != "GET":
                await app(scope, receive, send)
                return
            if_none_match = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    await app(scope, receive, send)
                    return
                if name == b"if-none-match":
                    if_none_match = value.decode("latin-1")
            kept = self.entries.get(self._key(scope))
            if kept is None or kept[0] != self.generation():
                self._miss.inc()
                await app(scope, receive, send)
                return
            self._hit.inc()
            route, body, etag, headers = kept[1]
            scope["route"] = route  # for the metrics' route label
            if etag_matches(if_none_match, etag):
                await send({"type": "http.response.start", "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*headers, (b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})

        return answer_kept
