"""The full-card guard (RULES S1; issue: "Full card: a reserve is kept; un-uploaded or held evidence
is never deleted or overwritten to make room. New recordings are refused with an alarm rather than
destroying older evidence.").

Pure core: `SpacePolicy`, `decide_admission` (may a new recording start?) and `must_stop_writing`
(must a running writer stop?). Thin shell: `card_free_bytes`, `write_guard`.

Invariant: nothing here deletes anything. Freeing space is retention's job, and retention only
deletes what the back office attested (S3) or what expired (S4). The reserve exists so that, once
a writer has stopped for lack of space, sealing the file (its LAST chunk, the sidecar) and the
catalog and audit writes about it still fit.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.errors import StoreError


@dataclass(frozen=True, slots=True)
class SpacePolicy:
    """Space thresholds in bytes. Invariant: 0 <= reserve_bytes < min_free_to_start_bytes.

    The start threshold is strictly above the reserve, so an admitted recording can always write
    something before it has to stop.
    """

    reserve_bytes: int
    min_free_to_start_bytes: int

    def __post_init__(self) -> None:
        if self.reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, not {self.reserve_bytes}")
        if self.min_free_to_start_bytes <= self.reserve_bytes:
            raise ValueError(
                f"min_free_to_start_bytes ({self.min_free_to_start_bytes}) must exceed "
                f"reserve_bytes ({self.reserve_bytes})"
            )


class Verdict(enum.StrEnum):
    ADMIT = "admit"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may a new recording start?". `reason` is set iff the verdict is REFUSE."""

    verdict: Verdict
    reason: str | None = None

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMIT


ADMIT = Admission(Verdict.ADMIT)


def decide_admission(free_bytes: int, policy: SpacePolicy) -> Admission:
    """Admit a new recording iff `free_bytes >= min_free_to_start_bytes`.

    A refusal is the alarm path: the shell tells the officer and writes an audit event. It never
    makes room by deleting evidence.
    """
    _check_free(free_bytes)
    if free_bytes >= policy.min_free_to_start_bytes:
        return ADMIT
    return Admission(
        Verdict.REFUSE,
        f"card full: {free_bytes} bytes free, a recording needs "
        f"{policy.min_free_to_start_bytes} to start; evidence on the card is kept",
    )


def must_stop_writing(free_bytes: int, policy: SpacePolicy) -> bool:
    """True once free space is down to the reserve: the writer must stop and seal."""
    _check_free(free_bytes)
    return free_bytes <= policy.reserve_bytes


def _check_free(free_bytes: int) -> None:
    if free_bytes < 0:
        raise ValueError(f"free_bytes cannot be negative: {free_bytes}")


class CardFullError(StoreError):
    """Raised by a writer that would eat into the reserve. Nothing was deleted to make room."""

    def __init__(self, free_bytes: int, reserve_bytes: int) -> None:
        super().__init__(
            f"card full: {free_bytes} bytes free, {reserve_bytes} bytes reserved for sealing "
            "and catalog/audit writes; recording stopped, no evidence was deleted"
        )
        self.free_bytes = free_bytes
        self.reserve_bytes = reserve_bytes


# --- shell -----------------------------------------------------------------------------------


def card_free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the file system holding `path`."""
    st = os.statvfs(path)
    # f_bavail, not f_bfree: blocks kept for root are not ours to count on.
    return st.f_bavail * st.f_frsize


def write_guard(path: Path, policy: SpacePolicy) -> Callable[[int], None]:
    """A `space_check` for the evidence writer: raises CardFullError before a write of `n` bytes
    that would leave the card at or below the reserve (`must_stop_writing` after the write)."""

    def check(n_bytes: int) -> None:
        free = card_free_bytes(path)
        if must_stop_writing(max(free - n_bytes, 0), policy):
            raise CardFullError(free, policy.reserve_bytes)

    return check
