"""The media service's rules: ingest, ownership, lifecycle."""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import secrets
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool
from social_common.errors import Problem
from social_common.ids import uuid7
from social_common.logging import get_logger
from social_common.tasks import every
from social_common.validation import clean_text

from media import imaging, store
from media.settings import MediaSettings
from media.storage import Storage, StorageError

log = get_logger(__name__)

UPLOADS = Counter("media_uploads_total", "Uploads by outcome", ["outcome"])
PROCESSING = Histogram(
    "media_processing_seconds",
    "Time to decode, clean and resize one upload",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
)
SWEPT = Counter("media_swept_total", "Media deleted by the sweeper")
# Uploads being processed or waiting for a worker, and how many may be.
QUEUE_IN_USE = Gauge("media_queue_in_use", "Uploads holding a processing slot")
QUEUE_CAPACITY = Gauge("media_queue_capacity", "Processing slots: workers plus queue")

MAX_DESCRIPTION = 1500
# Declared types a direct upload may be created for; what arrives is decoded all the same.
DIRECT_UPLOAD_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"}
)
_SWEEP_LOCK = 0x6D656469  # "medi": one sweeper at a time across pods


def _limit_worker_memory(megabytes: int) -> None:
    # A decoding that needs more than this fails in its own process.
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def busy() -> Problem:
    return Problem(
        503,
        "busy",
        "Too many images are being processed; retry shortly.",
        headers={"Retry-After": "2"},
    )


def storage_unavailable() -> Problem:
    return Problem(
        503, "storage_unavailable", "The image store is unavailable.", headers={"Retry-After": "5"}
    )


def check_description(description: str) -> str:
    return clean_text("description", description, MAX_DESCRIPTION, keep="\n\t")


@dataclass(frozen=True)
class Incoming:
    """An upload's bytes and its description, as they arrived."""

    data: bytes
    description: str


class MediaService:
    def __init__(
        self, pool: AsyncConnectionPool, storage: Storage, settings: MediaSettings
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.workers + settings.queue)
        QUEUE_CAPACITY.set(settings.workers + settings.queue)
        self._workers = self._new_workers()

    def _new_workers(self) -> ProcessPoolExecutor:
        # Spawned, not forked: a fork of this process would copy gRPC's threads.
        return ProcessPoolExecutor(
            max_workers=self.settings.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_worker_memory,
            initargs=(self.settings.worker_memory_mib,),
        )

    async def _process(self, data: bytes) -> imaging.ProcessedImage:
        """Runs imaging.process in a worker (the caller holds a slot)."""
        workers = self._workers
        loop = asyncio.get_running_loop()
        with PROCESSING.time():
            try:
                return await loop.run_in_executor(workers, imaging.process, data)
            except imaging.ImageRejected as rejected:
                UPLOADS.labels(rejected.code).inc()
                raise Problem(rejected.status, rejected.code, rejected.message) from None
            except BrokenProcessPool:
                # A worker died (out of memory, killed): every job of that pool
                # fails, and the first of them to get here starts a new pool.
                if self._workers is workers:
                    workers.shutdown(wait=False)
                    self._workers = self._new_workers()
                UPLOADS.labels("worker_failed").inc()
                raise Problem(422, "invalid_image", "The image could not be processed.") from None

    async def ingest(
        self, owner_id: uuid.UUID, read: Callable[[], Awaitable[Incoming]]
    ) -> store.Media:
        """Decodes, cleans and stores an upload: a row only when every object
        is stored, no object left behind when the row cannot be written.

        ``read`` fetches the upload once a processing slot is ours: when all
        are taken it is refused (503) before its body is even read, so a burst
        of uploads cannot pile up in memory.
        """
        if self._slots.locked():
            UPLOADS.labels("busy").inc()
            raise busy()
        async with self._slots:
            with QUEUE_IN_USE.track_inprogress():
                incoming = await read()
                description = check_description(incoming.description)
                processed = await self._process(incoming.data)
                return await self._store(owner_id, processed, description)

    async def _store(
        self, owner_id: uuid.UUID, processed: imaging.ProcessedImage, description: str
    ) -> store.Media:
        media_id = uuid7()
        renditions: list[dict[str, Any]] = [
            {
                "name": r.name,
                "width": r.width,
                "height": r.height,
                "content_type": r.content_type,
                # Random, never the client's file name.
                "key": f"{media_id.hex}/{secrets.token_urlsafe(12)}.{r.extension}",
            }
            for r in processed.renditions
        ]
        media = store.Media(
            id=media_id,
            owner_id=owner_id,
            state="processing",
            post_id=None,
            source_type=processed.source_type,
            width=processed.width,
            height=processed.height,
            blurhash=processed.blurhash,
            description=description,
            renditions=renditions,
            created_at=datetime.now(UTC),
        )
        try:
            async with self.pool.connection() as conn:
                await store.insert_processing(conn, media)
        except psycopg.Error as exc:
            UPLOADS.labels("database_unavailable").inc()
            raise Problem(503, "unavailable", "Try again shortly.") from exc
        try:
            await asyncio.gather(
                *(
                    self.storage.put(meta["key"], r.data, r.content_type)
                    for meta, r in zip(renditions, processed.renditions, strict=True)
                )
            )
        except StorageError as exc:
            log.warning("media_store_failed", media_id=str(media_id), error=str(exc))
            await self._abandon(media)
            UPLOADS.labels("storage_unavailable").inc()
            raise storage_unavailable() from exc
        try:
            async with self.pool.connection() as conn:
                stored = await store.mark_stored(conn, media_id)
        except psycopg.Error as exc:
            await self._abandon(media)
            UPLOADS.labels("database_unavailable").inc()
            raise Problem(503, "unavailable", "Try again shortly.") from exc
        assert stored is not None
        UPLOADS.labels("stored").inc()
        return stored

    async def _abandon(self, media: store.Media) -> None:
        """Removes a half-stored upload: the row always, its objects now or,
        when the store cannot delete them now, through the orphan list later.
        If the database fails too, the row stays 'processing' and the sweeper
        removes both after an hour."""
        try:
            await self.storage.delete(media.keys)
            deleted = True
        except StorageError:
            deleted = False
        try:
            async with self.pool.connection() as conn, conn.transaction():
                if not deleted:
                    await store.remember_orphans(conn, media.keys)
                await store.delete(conn, media.id)
        except psycopg.Error as exc:
            log.warning("media_cleanup_deferred", media_id=str(media.id), error=str(exc))

    async def get(self, media_id: uuid.UUID, owner_id: uuid.UUID) -> store.Media:
        async with self.pool.connection() as conn:
            media = await store.owned(conn, media_id, owner_id)
        if media is None:
            raise Problem(404, "media_not_found", "No such media.")
        return media

    async def describe(
        self, media_id: uuid.UUID, owner_id: uuid.UUID, description: str
    ) -> store.Media:
        description = check_description(description)
        async with self.pool.connection() as conn:
            media = await store.set_description(conn, media_id, owner_id, description)
        if media is None:
            raise Problem(404, "media_not_found", "No such media.")
        return media

    async def delete(self, media_id: uuid.UUID, owner_id: uuid.UUID) -> None:
        async with self.pool.connection() as conn:
            media = await store.delete_unattached(conn, media_id, owner_id)
            if media is None:
                if await store.owned(conn, media_id, owner_id) is None:
                    raise Problem(404, "media_not_found", "No such media.")
                raise Problem(409, "media_attached", "This media belongs to a post.")
        await self._delete_objects(media.keys)

    async def delete_post_media(self, post_id: uuid.UUID, owner_id: uuid.UUID) -> int:
        """Deletes the owner's media attached to a deleted post; returns how
        many (0 when they are gone already, so a repeated call is harmless)."""
        async with self.pool.connection() as conn:
            deleted = await store.delete_attached(conn, post_id, owner_id)
        await self._delete_objects([key for media in deleted for key in media.keys])
        return len(deleted)

    async def delete_owner_media(self, owner_id: uuid.UUID) -> int:
        """Deletes everything a (deleted) account uploaded, attached or not;
        returns how many media."""
        async with self.pool.connection() as conn, conn.transaction():
            media, uploads = await store.delete_owned(conn, owner_id)
        await self._delete_objects([key for m in media for key in m.keys] + uploads)
        return len(media)

    async def _delete_objects(self, keys: list[str]) -> None:
        """Deletes objects whose row is gone; what the store refuses now, the
        sweeper deletes later."""
        try:
            await self.storage.delete(keys)
        except StorageError as exc:
            log.warning("objects_not_deleted", count=len(keys), error=str(exc))
            async with self.pool.connection() as conn:
                await store.remember_orphans(conn, keys)

    async def many(self, ids: list[uuid.UUID], owner_id: uuid.UUID) -> list[store.Media]:
        async with self.pool.connection() as conn:
            return await store.many_owned(conn, ids, owner_id)

    async def attach(
        self, ids: list[uuid.UUID], owner_id: uuid.UUID, post_id: uuid.UUID
    ) -> list[store.Media] | None:
        """The media of ``ids`` (all ``owner_id``'s), in that order, now attached
        to ``post_id``; None when some could not be, and nothing changed."""
        async with self.pool.connection() as conn, conn.transaction():
            attached = {m.id: m for m in await store.attach(conn, ids, owner_id, post_id)}
            if len(attached) != len(set(ids)):
                raise psycopg.Rollback  # leaves the block, changing nothing
            return [attached[i] for i in ids]
        return None

    # -- direct uploads ------------------------------------------------------

    async def create_direct_upload(
        self, owner_id: uuid.UUID, content_type: str, description: str
    ) -> tuple[store.DirectUpload, dict[str, Any]]:
        if content_type not in DIRECT_UPLOAD_TYPES:
            raise Problem(
                415,
                "unsupported_type",
                f"content_type must be one of {', '.join(sorted(DIRECT_UPLOAD_TYPES))}.",
            )
        upload = store.DirectUpload(
            id=uuid7(),
            owner_id=owner_id,
            object_key=f"uploads/{secrets.token_urlsafe(18)}",
            content_type=content_type,
            description=check_description(description),
            expires_at=datetime.now(UTC)
            + timedelta(seconds=self.settings.direct_upload_ttl_seconds),
        )
        form = await self.storage.presigned_post(
            upload.object_key,
            content_type,
            imaging.MAX_BYTES,
            self.settings.direct_upload_ttl_seconds,
        )
        async with self.pool.connection() as conn:
            await store.insert_direct_upload(conn, upload)
        return upload, form

    async def complete_direct_upload(
        self, upload_id: uuid.UUID, owner_id: uuid.UUID
    ) -> store.Media:
        """Processes what arrived, exactly as an upload through the API. A
        failure the client can retry (busy, store down, nothing arrived yet)
        leaves the upload open; a refused image closes it."""
        async with self.pool.connection() as conn:
            upload = await store.claim_direct_upload(conn, upload_id, owner_id)
        if upload is None:
            raise Problem(404, "upload_not_found", "No such open upload, or it has expired.")

        async def read() -> Incoming:
            try:
                data = await self.storage.get(upload.object_key, imaging.MAX_BYTES)
            except StorageError as exc:
                raise storage_unavailable() from exc
            if data is None:
                raise Problem(
                    422, "upload_missing", "Nothing (or too much) has arrived for this upload."
                )
            return Incoming(data, upload.description)

        completed = False
        try:
            media = await self.ingest(owner_id, read)
        except Problem as problem:
            # The image itself was refused: no retry can change that.
            completed = problem.status in (413, 415) or problem.code == "invalid_image"
            raise
        else:
            completed = True
            return media
        finally:
            async with self.pool.connection() as conn:
                await store.finish_direct_upload(conn, upload.id, completed=completed)
            if completed:
                await self._delete_objects([upload.object_key])

    # -- lifecycle -------------------------------------------------------------

    async def sweep(self, batch: int = 100) -> int:
        """Deletes unattached media past its time, half-stored leftovers,
        expired direct uploads and orphaned objects, a batch at a time until
        none is left; returns how many media it deleted."""
        swept = 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                locked = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_SWEEP_LOCK,))
                row = await locked.fetchone()
                if not row or not row[0]:
                    return swept  # another pod is sweeping
                expired = await store.lock_expired(
                    conn,
                    processing_age=3600,
                    pending_age=self.settings.unattached_ttl_seconds,
                    limit=batch,
                )
                raw = await store.take_expired_direct_uploads(conn, batch)
                orphans = await store.take_orphans(conn, batch)
                # Objects first: if the store fails, the transaction rolls back
                # and every row stays to be swept again.
                await self.storage.delete([k for m in expired for k in m.keys] + raw + orphans)
                await store.delete_many(conn, [m.id for m in expired])
            swept += len(expired)
            SWEPT.inc(len(expired))
            if max(len(expired), len(raw), len(orphans)) < batch:
                return swept

    async def sweep_forever(self) -> None:
        async def sweep() -> None:
            swept = await self.sweep()
            if swept:
                log.info("media_swept", count=swept)

        await every(
            self.settings.sweep_interval_seconds,
            sweep,
            what="media_sweep",
            failures=(psycopg.Error, *StorageError),
        )

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)
