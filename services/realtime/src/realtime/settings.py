"""The realtime service's settings: the shared ones and its own."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.settings import Settings, setting


@dataclass(frozen=True, kw_only=True)
class RealtimeSettings(Settings):
    # Events kept per channel for clients that come back with `since`.
    retention: int = setting("REALTIME_RETENTION", 1000, minimum=10)
    # Frames waiting for one slow client before it is cut off (close 1013).
    send_queue: int = setting("REALTIME_SEND_QUEUE", 256, minimum=1)
    max_channels_per_connection: int = setting("REALTIME_MAX_CHANNELS", 100, minimum=1)
    # Across every realtime process (leases in Redis: realtime.presence).
    max_connections_per_user: int = setting("REALTIME_MAX_CONNECTIONS_PER_USER", 20, minimum=1)
    # Client frames are small JSON commands.
    max_frame_bytes: int = setting("REALTIME_MAX_FRAME_BYTES", 4096, minimum=256)
