"""The realtime service's own settings, read from the environment at start."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.settings import env_int


@dataclass(frozen=True)
class RealtimeConfig:
    # Events kept per channel for clients that come back with `since`.
    retention: int = 1000
    # Frames waiting for one slow client before it is cut off (close 1013).
    send_queue: int = 256
    max_channels_per_connection: int = 100
    # Across every realtime process (leases in Redis: realtime.presence).
    max_connections_per_user: int = 20
    # Client frames are small JSON commands.
    max_frame_bytes: int = 4096

    @classmethod
    def from_env(cls) -> RealtimeConfig:
        return cls(
            retention=env_int("REALTIME_RETENTION", cls.retention, minimum=10),
            send_queue=env_int("REALTIME_SEND_QUEUE", cls.send_queue, minimum=1),
            max_channels_per_connection=env_int(
                "REALTIME_MAX_CHANNELS", cls.max_channels_per_connection, minimum=1
            ),
            max_connections_per_user=env_int(
                "REALTIME_MAX_CONNECTIONS_PER_USER", cls.max_connections_per_user, minimum=1
            ),
            max_frame_bytes=env_int("REALTIME_MAX_FRAME_BYTES", cls.max_frame_bytes, minimum=256),
        )
