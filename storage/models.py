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
    # Time facts for retention (storage/trusted_time.py, docs/retention.md). `created_at_ms` is
    # the wall clock's stamp and never decides a deletion; these do. None in records written
    # before they existed, and after a catalog rebuild: such a file's age counts from when the
    # box first saw it with trusted time known (the safe side).
    boot_id: str | None = None
    """The boot (kernel boot id) the file was created in."""
    created_mono_ms: int | None = None
    """That boot's monotonic clock (CLOCK_BOOTTIME, ms) when the file was created."""
    trusted_created_low_ms: int | None = None
    trusted_created_high_ms: int | None = None
    """Trusted time of creation: at least low (None: unknown), at most high (None: not yet
    known, so the file's age cannot be judged and retention keeps it, with an alarm)."""
    trusted_created_by: str | None = None
    """How the bound was learnt: "anchor" (trusted time was known at recording), "same_boot"
    (an anchor of its boot came later), "seen" (the time was unknown at recording; the bound is
    when the box first saw the file with trusted time known)."""

    @property
    def is_attested(self) -> bool:
        """True when the back office echoed exactly the checksum the box wrote."""
        return self.sha256_hex is not None and self.attested_sha256_hex == self.sha256_hex

    def with_changes(self, **changes: object) -> FileRecord:
        """Return a copy with `changes` applied (records are immutable values)."""
        return replace(self, **changes)  # type: ignore[arg-type]
