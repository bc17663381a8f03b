"""The officer's shift (RULES R5, R4; docs/webui.md section 2): who records with this box.

Pure core: `bodycam_serials` (validation), `decide_start` / `decide_end` (a command and the
current shift -> the new shift, or the refusal) and `shift_view`. The shell is
`shift_service.py`; the web face parses requests into `ShiftStart` (gateway/web/shift_routes.py).

Invariants:
- at most one shift runs; another officer cannot start one over it (`shift_active`); the same
  officer starting again changes the bodycams and keeps the start time;
- who works the shift is known only to the process that saw it start (`officer_id` None after a
  restart: the box keeps it sealed for the back office, docs/audit-custody.md 6): the first
  officer to start it again resumes it, keeping its start time; until then only an admin can
  end it;
- a shift ends only when every recording has its report, or the officer (or an admin)
  acknowledges the missing ones;
- the audit log and evidence carry the officer id (a service number, sealed in the audit log),
  never the login name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from config.local import OFFICER_ID  # a service number, the same pattern as [[accounts]]
from gateway.caller import Identity, RefusalKind, Refused

BODYCAM_SERIAL = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_BODYCAMS = 8


@dataclass(frozen=True, slots=True)
class Shift:
    """The running shift. `officer_id` None: the box restarted since it began, and who works it
    (with the bodycams) lives only sealed in the shift state until an officer resumes it."""

    officer_id: str | None
    bodycam_serials: tuple[str, ...]
    since_ms: int

    @property
    def known(self) -> bool:
        return self.officer_id is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "officer_id": self.officer_id,
            "bodycam_serials": list(self.bodycam_serials),
            "since_ms": self.since_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> Shift:
        """ValueError unless `data` is what `to_json` wrote (checked as strictly as a request)."""
        if not isinstance(data, dict) or set(data) != {"officer_id", "bodycam_serials", "since_ms"}:
            raise ValueError("not a shift")
        officer_id, serials, since_ms = (
            data["officer_id"],
            data["bodycam_serials"],
            data["since_ms"],
        )
        if not isinstance(officer_id, str) or not OFFICER_ID.fullmatch(officer_id):
            raise ValueError("bad officer id")
        if not isinstance(since_ms, int) or isinstance(since_ms, bool):
            raise ValueError("bad start time")
        return cls(officer_id, bodycam_serials(serials), since_ms)


@dataclass(frozen=True, slots=True)
class ShiftStart:
    """A command to start (or change the bodycams of) a shift."""

    officer_id: str
    bodycam_serials: tuple[str, ...]


def bodycam_serials(value: object) -> tuple[str, ...]:
    """The bodycam serials: a list of at most MAX_BODYCAMS distinct serials (ValueError)."""
    if not isinstance(value, list):
        raise ValueError("bodycam_serials must be a list of serial numbers")
    if len(value) > MAX_BODYCAMS:
        raise ValueError(f"at most {MAX_BODYCAMS} bodycams")
    for serial in value:
        if not isinstance(serial, str) or not BODYCAM_SERIAL.fullmatch(serial):
            raise ValueError(f"a bodycam serial must match {BODYCAM_SERIAL.pattern}")
    if len(set(value)) != len(value):
        raise ValueError("a bodycam serial appears twice")
    return tuple(value)


def decide_start(current: Shift | None, start: ShiftStart, now_ms: int) -> Shift:
    """The shift after `start`: a new one, the running one with other bodycams, or (after a
    restart, its officer unknown) the running one resumed by this officer."""
    if current is None:
        return Shift(start.officer_id, start.bodycam_serials, now_ms)
    if current.officer_id is not None and current.officer_id != start.officer_id:
        raise Refused(
            RefusalKind.CONFLICT, "shift_active", "another officer's shift is running on this box"
        )
    return Shift(start.officer_id, start.bodycam_serials, current.since_ms)


def decide_end(
    current: Shift | None, identity: Identity, acknowledge: bool, missing: list[str]
) -> Shift:
    """The shift that may end now, or Refused: `no_shift`, `forbidden` (neither the shift's
    officer nor an admin), `reports_missing` with the list."""
    if current is None:
        raise Refused(RefusalKind.CONFLICT, "no_shift", "no shift is running")
    if identity.role != "admin" and identity.officer_id != current.officer_id:
        why = "only the shift's officer or an admin can end it"
        if current.officer_id is None:
            why += " (the box restarted: start the shift again to resume it first)"
        raise Refused(RefusalKind.FORBIDDEN, "forbidden", why)
    if missing and not acknowledge:
        raise Refused(
            RefusalKind.CONFLICT,
            "reports_missing",
            f"{len(missing)} recording(s) still need a report",
            missing=missing,
        )
    return current


def shift_view(shift: Shift | None, missing: int) -> dict[str, Any]:
    """GET /api/shift and the status document's `shift` member."""
    return {
        "active": shift is not None,
        "officer_id": None if shift is None else shift.officer_id,
        "bodycam_serials": [] if shift is None else list(shift.bodycam_serials),
        "since_ms": None if shift is None else shift.since_ms,
        "reports_missing": missing,
    }
