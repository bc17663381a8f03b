"""Which evidence files must go, and which are close to it: the retention plan. PURE: no I/O, no
clock; trusted time comes in as a `TrustedNow` interval (storage/trusted_time.py).

Two laws decide, and both delete:

- RULES S3: data must not remain on the device after transfer. A file the back office attested
  (echoed exactly the SHA-256 the box wrote, `FileRecord.is_attested`) is deleted whatever its age
  and whatever the clocks say.
- RULES S4: retention is at most 28 days after recording. A file that was never attested is still
  deleted once it is older than `retention_days` *in trusted time*. This is deliberate and is not
  a data-loss bug: keeping footage longer than the municipality's protocol allows is unlawful
  processing of personal data, and the protocols accept that an unuploaded recording then is
  lost. A recording that must survive (a request, a complaint, a police demand) is *held*: a
  held file never expires on the box. Once attested it still goes (S3): the hold binds the back
  office, which has the file, and S3 forbids keeping a copy on the device after transfer.

Trusted age, never the wall clock (docs/retention.md): a file expires only when its *youngest
possible* age, `now.low_ms - trusted_created_high_ms`, exceeds the retention period. A file whose
creation has no trusted bound yet (recorded while the time was unknown), or judged while trusted
time is unknown, is kept and counted in `time_unknown` (the shell raises an alarm for them). So
no wall-clock step, forward or backward, can expire an unattested file.

Never planned: unattested held files, RECORDING files (still being written; recovery seals them
first) and DELETED files (already gone). The plan only says what to delete and what is close to
it; the shell deletes each file, marks it DELETED in the catalog and writes one audit event per
deletion with its reason (RULES S5: the chain is logged up to the final deletion).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from storage.models import FileRecord, FileState
from storage.trusted_time import TrustedNow

MS_PER_DAY = 24 * 60 * 60 * 1000
MAX_RETENTION_DAYS = 28
"""The protocols' ceiling (RULES S4); a policy may be stricter (14 days is typical), never laxer."""
WARN_BEFORE_MS = 7 * MS_PER_DAY
"""An unattested file this close to its deletion raises `retention_near` (a warning)."""
CRITICAL_BEFORE_MS = 1 * MS_PER_DAY
"""This close, `retention_imminent` (critical)."""
TIME_UNKNOWN_GRACE_MS = 10 * 60 * 1000
"""After a boot, GPS or the back office usually give the time within minutes: files whose age
cannot be judged raise `retention_time_unknown` only once the boot is older than this (the
default of `[storage] time_unknown_alarm_after_s`)."""

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
    """One planned deletion; each becomes an audit event when carried out. `age_days` is the
    file's youngest possible age in trusted time (None when it cannot be judged: an attested
    file goes whatever its age)."""

    file_id: str
    recording_id: str
    reason: DeletionReason
    age_days: float | None


@dataclass(frozen=True, slots=True)
class DueSoon:
    """An unattested file that retention will delete in at least `left_ms` (trusted time)."""

    file_id: str
    left_ms: int


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """The pass's decisions at `now`: what to delete (oldest first), which unattested files
    retention will delete within WARN_BEFORE_MS (soonest first), and which unattested files are
    kept because their age cannot be judged."""

    now: TrustedNow
    deletions: tuple[Deletion, ...]
    due_soon: tuple[DueSoon, ...]
    time_unknown: tuple[str, ...]


def plan_retention(
    records: Iterable[FileRecord], now: TrustedNow, policy: RetentionPolicy
) -> RetentionPlan:
    """Judge every record at `now`.

    A file is deleted iff it is not RECORDING or DELETED, and either attested (S3, any age, held
    or not; reason ATTESTED even if it also expired) or not held and its youngest possible age
    (`now.low_ms - trusted_created_high_ms`) is strictly more than `retention_days` (S4). At
    exactly `retention_days` it is kept; one millisecond more and it is planned. A held file
    that is not attested is neither planned nor due soon nor counted as time-unknown.
    """
    planned: list[tuple[tuple[int, str, str], Deletion]] = []
    due: list[DueSoon] = []
    unknown: list[str] = []
    for record in records:
        if record.state in _NEVER_PLANNED:
            continue
        min_age_ms = _min_age_ms(record, now)
        if record.held and not record.is_attested:
            continue  # S4's exception: kept past the retention period until released
        if record.is_attested:
            age_days = None if min_age_ms is None else min_age_ms / MS_PER_DAY
            deletion = Deletion(
                record.file_id, record.recording_id, DeletionReason.ATTESTED, age_days
            )
        elif min_age_ms is not None and min_age_ms > policy.retention_ms:
            deletion = Deletion(
                record.file_id,
                record.recording_id,
                DeletionReason.EXPIRED,
                min_age_ms / MS_PER_DAY,
            )
        else:
            left_ms = _least_time_left_ms(record, now, policy)
            if left_ms is None:
                unknown.append(record.file_id)
            elif left_ms <= WARN_BEFORE_MS:
                due.append(DueSoon(record.file_id, left_ms))
            continue
        planned.append(((record.created_at_ms, record.recording_id, record.file_id), deletion))
    return RetentionPlan(
        now=now,
        deletions=tuple(d for _, d in sorted(planned, key=lambda item: item[0])),
        due_soon=tuple(sorted(due, key=lambda d: (d.left_ms, d.file_id))),
        time_unknown=tuple(sorted(unknown)),
    )


def _min_age_ms(record: FileRecord, now: TrustedNow) -> int | None:
    """The youngest the file can be in trusted time (None: no bound on it or on now)."""
    created_high_ms = record.trusted_created_high_ms
    if created_high_ms is None or now.low_ms is None:
        return None
    return now.low_ms - created_high_ms


def _least_time_left_ms(record: FileRecord, now: TrustedNow, policy: RetentionPolicy) -> int | None:
    """The least trusted time before retention deletes the file: true time is at most
    `now.high_ms`, and the file is deleted once true time passes its creation bound plus the
    period. None when either bound is missing (the file's age cannot be judged)."""
    created_high_ms = record.trusted_created_high_ms
    if created_high_ms is None or now.high_ms is None:
        return None
    return created_high_ms + policy.retention_ms - now.high_ms


# -- the alarms a plan raises ------------------------------------------------------------------

RETENTION_ALARMS = ("retention_imminent", "retention_near", "retention_time_unknown")


def retention_alarms(
    plan: RetentionPlan, policy: RetentionPolicy, grace_ms: int = TIME_UNKNOWN_GRACE_MS
) -> dict[str, str | None]:
    """Each retention alarm's message, or None to clear it (messages for a person; no ids):

    - `retention_imminent` (critical): unattested files retention deletes within a day;
    - `retention_near` (warning): within 7 days (and not within a day);
    - `retention_time_unknown` (warning): unattested files kept because their age cannot be
      judged, once this boot is older than `grace_ms`."""
    days = policy.retention_days
    imminent = [d for d in plan.due_soon if d.left_ms <= CRITICAL_BEFORE_MS]
    near = [d for d in plan.due_soon if d.left_ms > CRITICAL_BEFORE_MS]
    unknown = plan.time_unknown if plan.now.reading.mono_ms >= grace_ms else ()
    alarms: dict[str, str | None] = dict.fromkeys(RETENTION_ALARMS)
    if imminent:
        alarms["retention_imminent"] = (
            f"{len(imminent)} file(s) not uploaded reach the {days}-day limit within a day "
            "and will then be deleted"
        )
    if near:
        soonest_days = near[0].left_ms / MS_PER_DAY
        alarms["retention_near"] = (
            f"{len(near)} file(s) not uploaded reach the {days}-day limit within 7 days "
            f"(the first in {soonest_days:.1f} days) and will then be deleted"
        )
    if unknown:
        alarms["retention_time_unknown"] = (
            f"{len(unknown)} file(s) not uploaded are kept past the retention rule: the box "
            "does not know the time (no GPS time, no back office) to judge their age"
        )
    return alarms
