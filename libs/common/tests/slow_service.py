"""A service with one slow route, and one that breaks its background task, run
as a script by test_runner.py."""

from __future__ import annotations

import asyncio

from social_common.runner import ServiceSpec, Wiring, run_service
from social_common.settings import Settings
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("seconds", "1")))
    return PlainTextResponse("finished")


broken = asyncio.Event()


async def break_background(request: Request) -> Response:
    broken.set()
    return PlainTextResponse("breaking")


async def background() -> None:
    await broken.wait()
    raise RuntimeError("the background task broke")


if __name__ == "__main__":
    run_service(
        ServiceSpec(
            name="slowpoke",
            settings_class=Settings,
            wire=lambda _resources: Wiring(
                routes=[Route("/slow", slow), Route("/break", break_background, methods=["POST"])],
                background=[background],
            ),
        )
    )
