"""Which evidence files must go: the retention plan. PURE: no I/O, no clock (`now_ms` is given).

Two laws decide, and both delete:

- RULES S3: data must not remain on the device after transfer. A file the back office attested
  (echoed exactly the SHA-256 the box wrote, `FileRecord.is_attested`) is deleted whatever its age.
- RULES S4: retention is at most 28 days after recording. A file that was never attested is still
  deleted once it is older than `retention_days`. This is deliberate and is not a data-loss bug:
  keeping footage longer than the municipality's protocol allows is unlawful processing of
  personal data, and the protocols accept that an unuploaded recording then is lost. A recording
  that must survive (a request, a complaint, a police demand) is *held*, and held files are never
  planned.

Never planned: held files, RECORDING files (still being written; recovery seals them first) and
DELETED files (already gone). The plan only says what to delete; the shell deletes each file,
marks it DELETED in the catalog and writes one audit event per deletion with its reason and age
(RULES S5: the chain is logged up to the final deletion).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from storage.models import FileRecord, FileState

MS_PER_DAY = 24 * 60 * 60 * 1000
MAX_RETENTION_DAYS = 28
"""The protocols' ceiling (RULES S4); a policy may be stricter (14 days is typical), never laxer."""

_NEVER_PLANNED = frozenset({FileState.RECORDING, FileState.DELETED})


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long unattested evidence may stay. Invariant: 1 <= retention_days <= 28."""

    retention_days: int = MAX_RETENTION_DAYS

    def __post_init__(self) -> None:
        days = self.retention_days
        if isinstance(days, bool) or not isinstance(days, int):
            raise ValueError(f"retention_days must be an int, not {days!r}")
        if not 1 <= days <= MAX_RETENTION_DAYS:
            raise ValueError(
                f"retention_days must be 1..{MAX_RETENTION_DAYS} (RULES S4), not {days}"
            )

    @property
    def retention_ms(self) -> int:
        return self.retention_days * MS_PER_DAY


class DeletionReason(enum.StrEnum):
    ATTESTED = "attested by back office"
    EXPIRED = "retention expired"


@dataclass(frozen=True, slots=True)
class Deletion:
    """One planned deletion; each becomes an audit event when carried out."""

    file_id: str
    recording_id: str
    reason: DeletionReason
    age_days: float


def plan_retention(
    records: Iterable[FileRecord], now_ms: int, policy: RetentionPolicy
) -> list[Deletion]:
    """The files to delete now, oldest first (ties broken by recording id, file id).

    A file is planned iff it is not held, not RECORDING or DELETED, and either attested (S3, any
    age; reason ATTESTED even if it also expired) or strictly older than `retention_days` (S4).
    A file exactly `retention_days` old is kept; one millisecond more and it is planned.
    """
    planned = [d for d in (_decide(r, now_ms, policy) for r in records) if d is not None]
    return [d for _, d in sorted(planned, key=lambda item: item[0])]


def _decide(
    record: FileRecord, now_ms: int, policy: RetentionPolicy
) -> tuple[tuple[int, str, str], Deletion] | None:
    if record.held or record.state in _NEVER_PLANNED:
        return None
    age_ms = now_ms - record.created_at_ms
    if record.is_attested:
        reason = DeletionReason.ATTESTED
    elif age_ms > policy.retention_ms:
        reason = DeletionReason.EXPIRED
    else:
        return None
    deletion = Deletion(record.file_id, record.recording_id, reason, age_ms / MS_PER_DAY)
    return (record.created_at_ms, record.recording_id, record.file_id), deletion
