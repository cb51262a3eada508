"""The S3 bucket, through boto3 in a small thread pool (boto3 blocks)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from media.settings import MediaSettings

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client


class PartialDelete(Exception):
    """The store answered but refused to delete some keys."""


StorageError = (BotoCoreError, ClientError, PartialDelete)


class Storage:
    def __init__(self, settings: MediaSettings, threads: int = 8) -> None:
        self.bucket = settings.s3_bucket
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=15,
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=threads,
            ),
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3")

    async def _run(self, call: Any, /, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: call(**kwargs))

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._run(
            self._client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            # Stored once under a random key, never changed: cache forever.
            CacheControl="public, max-age=31536000, immutable",
        )

    async def get(self, key: str, limit: int) -> bytes | None:
        """The object's bytes, or None when it does not exist or exceeds ``limit``
        (then not read at all)."""
        try:
            response = await self._run(self._client.get_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        body = response["Body"]
        if int(response["ContentLength"]) > limit:
            body.close()
            return None
        data: bytes = await asyncio.get_running_loop().run_in_executor(self._pool, body.read)
        return data

    async def delete(self, keys: list[str]) -> None:
        if keys:
            response = await self._run(
                self._client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
            if response.get("Errors"):
                raise PartialDelete(f"{len(response['Errors'])} keys not deleted")

    async def check(self) -> None:
        """Raises unless the bucket answers (for /readyz)."""
        await self._run(self._client.head_bucket, Bucket=self.bucket)

    async def presigned_post(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any]:
        """A form a client POSTs straight to the bucket: size and type are bound.
        (In a thread: signing may first fetch credentials.)"""
        form: dict[str, Any] = await self._run(
            self._client.generate_presigned_post,
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_in,
        )
        return form

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
