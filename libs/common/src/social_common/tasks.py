"""Helpers for the long-running loops of background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from social_common.logging import get_logger

log = get_logger(__name__)


def cancel_requested() -> bool:
    """Whether the current task has been asked to stop.

    A loop checks this besides catching CancelledError: a cancellation that
    lands just as an awaited operation completes can be swallowed on the way
    (Python 3.11's wait_for, libraries' retry wrappers), and a loop that never
    looks would then run on and hold the process at shutdown."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def every(
    interval: float,
    job: Callable[[], Awaitable[None]],
    *,
    what: str,
    failures: tuple[type[Exception], ...] = (Exception,),
) -> None:
    """Runs ``job`` now and then every ``interval`` seconds until cancelled
    (a background task). A failure of the kinds listed is logged as
    ``<what>_failed`` and the next round tries again."""
    while True:
        try:
            await job()
        except failures as exc:
            log.warning(f"{what}_failed", error=str(exc))
        # After the job, not before it alone: a job that swallowed the
        # cancellation must not hold the shutdown for a whole interval.
        if cancel_requested():
            return
        await asyncio.sleep(interval)
