"""What the evidence store (storage/store.py) needs from configuration, in a module of its own so
that the store's mixins (storage/store_retention.py) can name it without importing the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from storage.retention import TIME_UNKNOWN_GRACE_MS, RetentionPolicy
from storage.space import SpacePolicy
from storage.writer import DEFAULT_CHUNK_MAX_BYTES


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """What the store needs from configuration. Units in the names."""

    card_dir: Path
    chunk_max_bytes: int = DEFAULT_CHUNK_MAX_BYTES
    file_target_s: float = 60.0
    file_target_bytes: int = 64 * 1024 * 1024
    space: SpacePolicy = field(
        default_factory=lambda: SpacePolicy(
            reserve_bytes=64 * 1024 * 1024, min_free_to_start_bytes=256 * 1024 * 1024
        )
    )
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    time_unknown_alarm_after_s: float = TIME_UNKNOWN_GRACE_MS / 1000
