"""The media service's settings: the shared ones and its own."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.ratelimit import Rate
from social_common.settings import REQUIRED, Settings, setting


@dataclass(frozen=True, kw_only=True)
class MediaSettings(Settings):
    # The S3 API's endpoint; unset, AWS's own.
    s3_endpoint_url: str | None = setting("S3_ENDPOINT_URL", None)
    s3_region: str = setting("S3_REGION", "us-east-1")
    s3_bucket: str = setting("S3_BUCKET", "social-media", production=REQUIRED)
    # Without keys, boto3 finds credentials its usual way (IRSA, instance role).
    s3_access_key: str | None = setting("S3_ACCESS_KEY_ID", None, secret=True)
    s3_secret_key: str | None = setting("S3_SECRET_ACCESS_KEY", None, secret=True)
    # Where clients fetch image bytes: the gateway's /media route, or a CDN
    # (without a trailing slash).
    public_base_url: str = setting(
        "MEDIA_PUBLIC_BASE_URL", "http://127.0.0.1:8000/media", production=REQUIRED
    )
    # Image processing: worker processes, and how many uploads may wait for one.
    workers: int = setting("MEDIA_WORKERS", 2, minimum=1)
    queue: int = setting("MEDIA_QUEUE", 4, minimum=0)
    # Address space of one worker process: a decoding that needs more fails alone.
    worker_memory_mib: int = setting("MEDIA_WORKER_MEMORY_MIB", 1024, minimum=256)
    upload_rate: Rate = setting("RATE_LIMIT_UPLOADS", Rate(30, 30 * 60))
    unattached_ttl_seconds: int = setting("MEDIA_UNATTACHED_TTL_SECONDS", 24 * 3600, minimum=60)
    sweep_interval_seconds: int = setting("MEDIA_SWEEP_INTERVAL_SECONDS", 600, minimum=1)
    direct_upload_ttl_seconds: int = setting("MEDIA_DIRECT_UPLOAD_TTL_SECONDS", 15 * 60, minimum=60)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_base_url", self.public_base_url.rstrip("/"))
