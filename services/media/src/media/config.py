"""The media service's own settings, read from the environment at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from social_common.ratelimit import Rate, env_rate
from social_common.settings import env_int, env_str


@dataclass(frozen=True)
class MediaConfig:
    s3_endpoint_url: str | None
    s3_region: str
    s3_bucket: str
    s3_access_key: str | None = field(repr=False)
    s3_secret_key: str | None = field(repr=False)
    # Where clients fetch image bytes: the gateway's /media route, or a CDN.
    public_base_url: str
    # Image processing: worker processes, and how many uploads may wait for one.
    workers: int = 2
    queue: int = 4
    # Address space of one worker process: a decoding that needs more fails alone.
    worker_memory_mib: int = 1024
    upload_rate: Rate = Rate(30, 30 * 60)
    unattached_ttl_seconds: int = 24 * 3600
    sweep_interval_seconds: int = 600
    direct_upload_ttl_seconds: int = 15 * 60

    @classmethod
    def from_env(cls, production: bool) -> MediaConfig:
        return cls(
            s3_endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
            s3_region=env_str("S3_REGION", "us-east-1"),
            s3_bucket=env_str("S3_BUCKET", None if production else "social-media"),
            # Without keys, boto3 finds credentials its usual way (IRSA, instance role).
            s3_access_key=os.environ.get("S3_ACCESS_KEY_ID") or None,
            s3_secret_key=os.environ.get("S3_SECRET_ACCESS_KEY") or None,
            public_base_url=env_str(
                "MEDIA_PUBLIC_BASE_URL", None if production else "http://127.0.0.1:8000/media"
            ).rstrip("/"),
            workers=env_int("MEDIA_WORKERS", cls.workers, minimum=1),
            queue=env_int("MEDIA_QUEUE", cls.queue, minimum=0),
            worker_memory_mib=env_int(
                "MEDIA_WORKER_MEMORY_MIB", cls.worker_memory_mib, minimum=256
            ),
            upload_rate=env_rate("RATE_LIMIT_UPLOADS", cls.upload_rate),
            unattached_ttl_seconds=env_int(
                "MEDIA_UNATTACHED_TTL_SECONDS", cls.unattached_ttl_seconds, minimum=60
            ),
            sweep_interval_seconds=env_int(
                "MEDIA_SWEEP_INTERVAL_SECONDS", cls.sweep_interval_seconds, minimum=1
            ),
            direct_upload_ttl_seconds=env_int(
                "MEDIA_DIRECT_UPLOAD_TTL_SECONDS", cls.direct_upload_ttl_seconds, minimum=60
            ),
        )
