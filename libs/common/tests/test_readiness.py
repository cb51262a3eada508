"""Readiness: dependency checks are shared and cached, draining shows at once."""

from __future__ import annotations

import asyncio

from social_common.rest import Readiness


def test_checks_run_once_for_concurrent_and_repeated_asks() -> None:
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)

    async def scenario() -> list[bool]:
        readiness = Readiness("demo", {"dep": counted}, cache_seconds=60)
        first = await asyncio.gather(*(readiness.report() for _ in range(20)))
        again = await readiness.report()
        return [ready for ready, _ in [*first, again]]

    assert all(asyncio.run(scenario()))
    assert calls == 1


def test_a_failing_dependency_makes_it_not_ready_with_the_reason() -> None:
    async def broken() -> None:
        raise ConnectionError("refused")

    ready, checks = asyncio.run(Readiness("demo", {"postgres": broken}).report())
    assert not ready
    assert checks == {"postgres": "failing: ConnectionError: refused"}


def test_draining_is_not_ready_even_with_a_fresh_cache() -> None:
    async def ok() -> None:
        return None

    async def scenario() -> tuple[bool, bool]:
        readiness = Readiness("demo", {"dep": ok}, cache_seconds=60)
        before, _ = await readiness.report()
        readiness.draining = True
        after, _ = await readiness.report()
        return before, after

    assert asyncio.run(scenario()) == (True, False)
