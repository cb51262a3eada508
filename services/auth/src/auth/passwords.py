"""Passwords: argon2id in worker threads, length and common-password rules."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn.frequency_lists import FREQUENCY_LISTS

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
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> tuple[bool, str | None]:
        """Whether ``password`` matches, and a fresh hash when the stored one
        was made with weaker parameters than today's.

        With no hash (an unknown account) it verifies against a dummy hash
        all the same, so that unknown accounts cost what known ones do.
        """
        if password_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash("dummy password for unknown accounts")
            await self._run_verify(self._dummy_hash, password)
            return False, None
        if not await self._run_verify(password_hash, password):
            return False, None
        if self._hasher.check_needs_rehash(password_hash):
            return True, await self.hash(password)
        return True, None

    async def _run_verify(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, self._hasher.verify, password_hash, password
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
