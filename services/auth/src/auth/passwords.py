"""Passwords: argon2id in worker threads, length and common-password rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from social_common.errors import Problem
from zxcvbn.frequency_lists import FREQUENCY_LISTS

T = TypeVar("T")

MIN_LENGTH = 10
MAX_LENGTH = 128


@cache
def _common_passwords() -> frozenset[str]:
    # The 30,000 most common passwords of the leaked sets zxcvbn ships.
    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str) -> str | None:
    """Why ``password`` is refused, or None. Checked before any hashing."""
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    if password.lower() in _common_passwords():
        return "too common: it is among the most used passwords"
    return None


class Passwords:
    """argon2id hashing off the event loop, in a bounded pool of threads
    (argon2-cffi releases the GIL while it hashes)."""

    def __init__(self, memory_kib: int, time_cost: int, parallelism: int, workers: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        # Hashes running or waiting; beyond that a flood of logins gets a 503
        # at once instead of a queue that grows without bound.
        self._slots = asyncio.Semaphore(workers * 8)
        # Made now, not at the first unknown login, which would then cost twice.
        self._dummy_hash = self._hasher.hash("dummy password for unknown accounts")

    async def _run(self, work: Callable[[], T]) -> T:
        if self._slots.locked():
            raise Problem(
                503,
                "busy",
                "Too many sign-ins at once; retry shortly.",
                headers={"Retry-After": "1"},
            )
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> tuple[bool, str | None]:
        """Whether ``password`` matches, and a fresh hash when the stored one
        was made with weaker parameters than today's.

        With no hash (an unknown account) it verifies against a dummy hash
        all the same, so that unknown accounts cost what known ones do.
        """
        if password_hash is None:
            await self._run_verify(self._dummy_hash, password)
            return False, None
        if not await self._run_verify(password_hash, password):
            return False, None
        if self._hasher.check_needs_rehash(password_hash):
            return True, await self.hash(password)
        return True, None

    async def _run_verify(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await self._run(verify)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
