"""Helpers for the long-running loops of background tasks."""

from __future__ import annotations

import asyncio


def cancel_requested() -> bool:
    """Whether the current task has been asked to stop.

    A loop checks this besides catching CancelledError: a cancellation that
    lands just as an awaited operation completes can be swallowed on the way
    (Python 3.11's wait_for, libraries' retry wrappers), and a loop that never
    looks would then run on and hold the process at shutdown."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
