"""The officer's shift (RULES R5, R4; docs/webui.md section 2): who records with this box.

Boa's patrol in pairs: a shift holds one or two officers (`MAX_OFFICERS`), each with the
bodycams they carry. Pure core: `bodycam_serials` (validation), `decide_start` /
`decide_leave` / `decide_end` (a command and the current shift -> the new shift and what
happened, or the refusal),
`camera_officers` (whose footage a camera's is) and `shift_view`. The shell is
`shift_service.py`; the web face parses requests into `ShiftStart`
(gateway/web/shift_routes.py).

Invariants:
- at most one shift runs, with at most two officers; the first officer starts it, a second
  joins it (`shift.joined`), a third is refused (`shift_full`); an officer starting again
  changes their own bodycams and keeps the start time; one of two may leave (`shift.left`),
  the other works on;
- a bodycam belongs to one officer at a time (`bodycam_taken`): a bodycam's footage names that
  officer, every other camera's (the dashcam's) names every officer of the shift;
- who works the shift is known only to the process that saw it start (no members after a
  restart: the box keeps them sealed for the back office, docs/audit-custody.md 6): the first
  officer to start it again resumes it alone, keeping its start time (a partner joins again);
  until then only an admin can end it;
- a shift ends (for both officers) only when every recording has its report, or one of its
  officers (or an admin) acknowledges the missing ones;
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
MAX_OFFICERS = 2


@dataclass(frozen=True, slots=True)
class Member:
    """One officer of the shift and the bodycams they carry."""

    officer_id: str
    bodycam_serials: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"officer_id": self.officer_id, "bodycam_serials": list(self.bodycam_serials)}

    @classmethod
    def from_json(cls, data: Any) -> Member:
        if not isinstance(data, dict) or set(data) != {"officer_id", "bodycam_serials"}:
            raise ValueError("not a shift's officer")
        officer_id = data["officer_id"]
        if not isinstance(officer_id, str) or not OFFICER_ID.fullmatch(officer_id):
            raise ValueError("bad officer id")
        return cls(officer_id, bodycam_serials(data["bodycam_serials"]))


@dataclass(frozen=True, slots=True)
class Shift:
    """The running shift. `members` empty: the box restarted since it began, and who works it
    (with the bodycams) lives only sealed in the shift state until an officer resumes it."""

    members: tuple[Member, ...]
    since_ms: int

    @property
    def known(self) -> bool:
        return bool(self.members)

    @property
    def officer_ids(self) -> tuple[str, ...]:
        return tuple(member.officer_id for member in self.members)

    def member(self, officer_id: str) -> Member | None:
        return next((m for m in self.members if m.officer_id == officer_id), None)

    def to_json(self) -> dict[str, Any]:
        return {"officers": [m.to_json() for m in self.members], "since_ms": self.since_ms}

    @classmethod
    def from_json(cls, data: Any) -> Shift:
        """ValueError unless `data` is what `to_json` wrote, or a one-officer shift as boxes
        before duo patrols wrote it (checked as strictly as a request)."""
        if isinstance(data, dict) and set(data) == {"officer_id", "bodycam_serials", "since_ms"}:
            member = Member.from_json(
                {"officer_id": data["officer_id"], "bodycam_serials": data["bodycam_serials"]}
            )
            return cls((member,), _since_ms(data["since_ms"]))
        if not isinstance(data, dict) or set(data) != {"officers", "since_ms"}:
            raise ValueError("not a shift")
        officers = data["officers"]
        if not isinstance(officers, list) or not 1 <= len(officers) <= MAX_OFFICERS:
            raise ValueError(f"a shift holds 1 to {MAX_OFFICERS} officers")
        members = tuple(Member.from_json(item) for item in officers)
        _check_members(members)
        return cls(members, _since_ms(data["since_ms"]))


@dataclass(frozen=True, slots=True)
class ShiftStart:
    """A command to start, join or change the bodycams of a shift."""

    officer_id: str
    bodycam_serials: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShiftChange:
    """A start's outcome: the shift after it and the audit event that names what happened
    (`shift.started`, `shift.joined`, `shift.bodycams_changed`, `shift.resumed`)."""

    shift: Shift
    event: str


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


def decide_start(current: Shift | None, start: ShiftStart, now_ms: int) -> ShiftChange:
    """The shift after `start`: a new one, the running one joined by a second officer or with
    this officer's other bodycams, or (after a restart, its officers unknown) the running one
    resumed by this officer. Refused `shift_full`, `bodycam_taken`."""
    member = Member(start.officer_id, start.bodycam_serials)
    if current is None:
        return ShiftChange(Shift((member,), now_ms), "shift.started")
    if not current.known:
        return ShiftChange(Shift((member,), current.since_ms), "shift.resumed")
    others = tuple(m for m in current.members if m.officer_id != start.officer_id)
    taken = {serial for other in others for serial in other.bodycam_serials}
    if taken.intersection(start.bodycam_serials):
        raise Refused(
            RefusalKind.CONFLICT,
            "bodycam_taken",
            "a bodycam you named is carried by the other officer of this shift",
            field="bodycam_serials",
        )
    if current.member(start.officer_id) is not None:
        members = tuple(member if m.officer_id == start.officer_id else m for m in current.members)
        return ShiftChange(Shift(members, current.since_ms), "shift.bodycams_changed")
    if len(current.members) >= MAX_OFFICERS:
        raise Refused(
            RefusalKind.CONFLICT,
            "shift_full",
            f"this box's shift already holds {MAX_OFFICERS} officers",
        )
    return ShiftChange(Shift((*current.members, member), current.since_ms), "shift.joined")


def decide_leave(current: Shift | None, identity: Identity, officer_id: str) -> ShiftChange:
    """The shift after `officer_id` leaves it (a duo's partner goes off duty; `shift.left`):
    the other officer works it on, with the report book as it is. Refused `no_shift`,
    `forbidden` (another officer's leave, unless an admin asks; or the shift is not resumed
    since a restart), `last_officer` (the only officer ends the shift instead)."""
    if current is None:
        raise Refused(RefusalKind.CONFLICT, "no_shift", "no shift is running")
    if identity.role != "admin" and identity.officer_id != officer_id:
        raise Refused(RefusalKind.FORBIDDEN, "forbidden", "an officer leaves only for themselves")
    if current.member(officer_id) is None:
        why = "that officer does not work this shift"
        if not current.known:
            why += " (the box restarted: start the shift again to resume it first)"
        raise Refused(RefusalKind.FORBIDDEN, "forbidden", why)
    if len(current.members) == 1:
        message = "the shift's only officer ends the shift instead of leaving it"
        raise Refused(RefusalKind.CONFLICT, "last_officer", message)
    members = tuple(m for m in current.members if m.officer_id != officer_id)
    return ShiftChange(Shift(members, current.since_ms), "shift.left")


def decide_end(
    current: Shift | None, identity: Identity, acknowledge: bool, missing: list[str]
) -> Shift:
    """The shift that may end now, or Refused: `no_shift`, `forbidden` (neither one of the
    shift's officers nor an admin), `reports_missing` with the list."""
    if current is None:
        raise Refused(RefusalKind.CONFLICT, "no_shift", "no shift is running")
    if identity.role != "admin" and identity.officer_id not in current.officer_ids:
        why = "only an officer of the shift or an admin can end it"
        if not current.known:
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


def camera_officers(shift: Shift | None, camera_serial: str) -> list[str]:
    """Whose footage a camera's is (R5): a bodycam's, the officer who carries it; every other
    camera's (the dashcam's, a bodycam nobody named), every officer of the shift. Empty without
    a shift, or after a restart until an officer resumes it (the sealed shift names them)."""
    if shift is None:
        return []
    for member in shift.members:
        if camera_serial and camera_serial in member.bodycam_serials:
            return [member.officer_id]
    return list(shift.officer_ids)


def shift_view(shift: Shift | None, missing: int, officers_unknown: int = 0) -> dict[str, Any]:
    """GET /api/shift and the status document's `shift` member. `officers`: who works the shift
    with which bodycams (empty after a restart until resumed: `officers_unknown` says how many
    the sealed shift holds)."""
    return {
        "active": shift is not None,
        "officers": [] if shift is None else [m.to_json() for m in shift.members],
        "officers_unknown": 0 if shift is None or shift.known else officers_unknown,
        "max_officers": MAX_OFFICERS,
        "since_ms": None if shift is None else shift.since_ms,
        "reports_missing": missing,
    }


def _since_ms(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("bad start time")
    return value


def _check_members(members: tuple[Member, ...]) -> None:
    ids = [m.officer_id for m in members]
    serials = [s for m in members for s in m.bodycam_serials]
    if len(set(ids)) != len(ids) or len(set(serials)) != len(serials):
        raise ValueError("an officer or a bodycam appears twice in the shift")
