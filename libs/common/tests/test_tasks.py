"""Background loops: ``every`` runs its job at once and then on its interval,
survives the failures it is told of, and ends when its task is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest
from social_common.tasks import cancel_requested, every
from structlog.testing import capture_logs

# Long enough that a test waiting for it would time out: what must happen
# without waiting out the interval.
FOREVER = 3600.0


async def _ends_soon(task: asyncio.Task[None], within: float = 1.0) -> None:
    """Waits for ``task`` to finish; the test fails if it runs on past ``within`` seconds."""
    await asyncio.wait({task}, timeout=within)
    assert task.done(), "the loop still runs"


def test_the_job_runs_at_once_and_a_cancel_during_the_wait_ends_the_loop() -> None:
    async def main() -> int:
        calls = 0
        ran = asyncio.Event()

        async def job() -> None:
            nonlocal calls
            calls += 1
            ran.set()

        task = asyncio.create_task(every(FOREVER, job, what="job"))
        await asyncio.wait_for(ran.wait(), 1.0)
        task.cancel()
        await _ends_soon(task)
        assert task.cancelled()
        return calls

    assert asyncio.run(main()) == 1


def test_rounds_follow_each_other_after_the_interval() -> None:
    interval = 0.05

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []
        enough = asyncio.Event()

        async def job() -> None:
            times.append(loop.time())
            if len(times) == 3:
                enough.set()

        task = asyncio.create_task(every(interval, job, what="job"))
        await asyncio.wait_for(enough.wait(), 2.0)
        task.cancel()
        await _ends_soon(task)
        return times

    times = asyncio.run(main())
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) >= 2
    assert all(gap >= interval * 0.95 for gap in gaps), gaps


def test_a_failure_of_a_listed_kind_is_logged_and_the_next_round_runs() -> None:
    async def main() -> int:
        calls = 0
        second = asyncio.Event()

        async def job() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("database restarting")
            second.set()

        task = asyncio.create_task(every(0, job, what="token_purge", failures=(ConnectionError,)))
        await asyncio.wait_for(second.wait(), 1.0)
        task.cancel()
        await _ends_soon(task)
        return calls

    with capture_logs() as logs:
        assert asyncio.run(main()) >= 2
    failed = [entry for entry in logs if entry["event"] == "token_purge_failed"]
    assert failed == [
        {"event": "token_purge_failed", "error": "database restarting", "log_level": "warning"}
    ]


def test_a_failure_of_another_kind_ends_the_loop_with_it() -> None:
    async def main() -> int:
        calls = 0

        async def job() -> None:
            nonlocal calls
            calls += 1
            raise ValueError("a bug, not an outage")

        task = asyncio.create_task(every(0, job, what="job", failures=(ConnectionError,)))
        with pytest.raises(ValueError, match="a bug"):
            await asyncio.wait_for(task, 1.0)
        return calls

    assert asyncio.run(main()) == 1


def test_cancel_requested_stays_true_after_a_swallowed_cancellation() -> None:
    async def main() -> list[bool]:
        seen: list[bool] = []
        waiting = asyncio.Event()

        async def worker() -> None:
            seen.append(cancel_requested())
            waiting.set()
            # Swallowed, as a library's retry wrapper may.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(FOREVER)
            seen.append(cancel_requested())

        task = asyncio.create_task(worker())
        await waiting.wait()
        task.cancel()
        await _ends_soon(task)
        return seen

    assert asyncio.run(main()) == [False, True]


def test_a_cancellation_the_job_swallowed_still_ends_the_loop_at_once() -> None:
    async def main() -> None:
        running = asyncio.Event()

        async def job() -> None:
            running.set()
            # Swallowed, as a library's retry wrapper may.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(FOREVER)

        task = asyncio.create_task(every(FOREVER, job, what="job"))
        await running.wait()
        task.cancel()
        try:
            await _ends_soon(task, within=0.3)
        finally:
            task.cancel()  # a second cancel lands in the sleep: the test cleans up
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
