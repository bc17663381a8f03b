"""Plaintext facts about evidence files: what the catalog, uploader and retention work from.

Nothing here may identify a person or a place (RULES S1): only ids, sizes, times and checksums.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

UPLOAD_CLASSES = ("P0", "P1", "P2")


class FileState(enum.StrEnum):
    """Life of one evidence file on the card.

    RECORDING -> SEALED -> UPLOADING -> VERIFIED -> DELETED, and SEALED/UPLOADING -> DELETED when
    retention expires. `held` is orthogonal: a held file is never deleted by retention.
    """

    RECORDING = "recording"
    SEALED = "sealed"
    UPLOADING = "uploading"
    VERIFIED = "verified"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One evidence file as the catalog knows it.

    `sha256_hex` is over the file exactly as written (RULES S6); `attested_sha256_hex` is what the
    back office echoed after storing it. The file may be deleted for S3 only when both are equal.
    """

    file_id: str
    recording_id: str
    file_seq: int
    created_at_ms: int
    state: FileState
    size_bytes: int = 0
    sha256_hex: str | None = None
    sealed_at_ms: int | None = None
    interrupted_at_chunk: int | None = None
    attested_sha256_hex: str | None = None
    held: bool = False
    deleted_at_ms: int | None = None
    upload_class: str = "P1"
    """Upload priority (transport/scheduler.py): "P0" flagged incident, "P1" evidence, "P2" routine.
    Storage only carries it; the uplink decides what it means."""

    @property
    def is_attested(self) -> bool:
        """True when the back office echoed exactly the checksum the box wrote."""
        return self.sha256_hex is not None and self.attested_sha256_hex == self.sha256_hex

    def with_changes(self, **changes: object) -> FileRecord:
        """Return a copy with `changes` applied (records are immutable values)."""
        return replace(self, **changes)  # type: ignore[arg-type]
