"""A staged rollout of a release to the fleet: its state machine and its record. PURE.

The fleet admin pins a release (`[release] version = "V"` in the fleet documents) to a group, a
canary share of a group, or single boxes (docs/fleet-admin.md 11, docs/fleet-config.md 12). This
module holds what a rollout *is*: the phases and the only ways between them, written as one
table (`TRANSITIONS`, h11 style: a (phase, event) pair not in it is refused), and the record kept
durably beside the repository (backoffice/rollout_io.py). Which documents each step signs is
backoffice/rollout_docs.py; how far the fleet got, from its health reports, is
backoffice/rollout_progress.py.

    planned --start_canary--> canary --promote--> promoted --complete--> done
       |                       |  ^                  |                    |
       +----start_all----------|--|------------------+                    |
                               pause resume                               |
                               v  |                                       |
                              paused                                      |
    canary, paused, promoted, done --rollback--> rolled_back  <-----------+

Invariants:
- `Rollout.after(event)` is the only way a phase changes; it returns a new record (frozen) with
  the event appended to `history`, or raises RolloutRefused naming the phase and the event.
- `planned` is written before anything is signed, so a rollout cut short by a crash is on record
  and its start can be run again; `rolled_back` is final.
- The canary is chosen once, at the start, and kept in the record: a box once in the canary
  stays in it (backoffice/rollout_docs.py `canary_boxes`).
- `parse_rollout(rollout.to_json())` gives back the same record; anything else in a file is
  RolloutStateDamaged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from common.faults import MisuseFault, StorageFault

FORMAT: Final = 1
_VERSION: Final = re.compile(
    r"(?:[1-9][0-9]*!)?(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*"
    r"(?:(?:a|b|rc)(?:0|[1-9][0-9]*))?(?:\.post(?:0|[1-9][0-9]*))?(?:\.dev(?:0|[1-9][0-9]*))?"
)
"""A PEP 440 public version in its normal form (what `mvb-admin release build` names)."""
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class Phase(StrEnum):
    PLANNED = "planned"
    CANARY = "canary"
    PAUSED = "paused"
    PROMOTED = "promoted"
    DONE = "done"
    ROLLED_BACK = "rolled_back"


class Event(StrEnum):
    START_CANARY = "start_canary"  # the canary's box documents are signed
    START_ALL = "start_all"  # every target's documents are signed (no canary)
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"  # the group's document is signed too
    COMPLETE = "complete"  # every targeted box reports the version
    ROLLBACK = "rollback"  # the documents are signed again with the previous version


TRANSITIONS: Final[dict[tuple[Phase, Event], Phase]] = {
    (Phase.PLANNED, Event.START_CANARY): Phase.CANARY,
    (Phase.PLANNED, Event.START_ALL): Phase.PROMOTED,
    (Phase.CANARY, Event.PAUSE): Phase.PAUSED,
    (Phase.CANARY, Event.PROMOTE): Phase.PROMOTED,
    (Phase.CANARY, Event.ROLLBACK): Phase.ROLLED_BACK,
    (Phase.PAUSED, Event.RESUME): Phase.CANARY,
    (Phase.PAUSED, Event.ROLLBACK): Phase.ROLLED_BACK,
    (Phase.PROMOTED, Event.COMPLETE): Phase.DONE,
    (Phase.PROMOTED, Event.ROLLBACK): Phase.ROLLED_BACK,
    (Phase.DONE, Event.ROLLBACK): Phase.ROLLED_BACK,
}
"""Every allowed step. Not in it, on purpose: promoting a paused canary (resume first: a pause
is the admin's stop sign and only the admin lifts it), pausing a promoted rollout (the group's
document is signed: there is nothing left to hold back; roll back instead), rolling back a
planned one (nothing was signed)."""

ACTIVE: Final = frozenset({Phase.PLANNED, Phase.CANARY, Phase.PAUSED, Phase.PROMOTED})
"""Phases in which the rollout still holds its boxes: no other rollout may take one of them."""


KINDS: Final = ("release", "config")
"""What a rollout moves: a release (`version` is a PEP 440 version, `[release]` pins it) or the
group's configuration (`version` is `config-` and the first 12 hex of the new document's SHA-256;
`documents` holds the new text and the previous one: backoffice/rollout_config.py)."""
_CONFIG_LABEL: Final = re.compile(r"config-[0-9a-f]{12}")


class RolloutRefused(ValueError, MisuseFault):
    """A step the rollout's phase does not allow, or a rollout that cannot be planned; nothing
    was signed or written."""


class RolloutStateDamaged(ValueError, StorageFault):
    """A rollout file that is not a record this module wrote."""


@dataclass(frozen=True, slots=True)
class Signed:
    """One document a step signed: its path, serial, the boxes its custom fields name, and the
    version it pins."""

    path: str
    config_serial: int
    boxes: tuple[str, ...]
    version: str


@dataclass(frozen=True, slots=True)
class Step:
    event: Event
    at_ms: int
    phase: Phase  # the phase the event led to


@dataclass(frozen=True, slots=True)
class Rollout:
    """A rollout of `version` to `targets` (the group's members, or the boxes named), of which
    `canary` go first (empty: all at once). `previous_version` is what a rollback pins.
    `started_at_ms` is the back office's clock when it was planned: health reports received
    before it say nothing about this rollout."""

    rollout_id: str
    version: str
    previous_version: str
    group: str | None
    targets: tuple[str, ...]
    canary: tuple[str, ...]
    canary_percent: int
    phase: Phase
    started_at_ms: int
    history: tuple[Step, ...] = ()
    signed: tuple[Signed, ...] = ()
    kind: str = "release"
    documents: tuple[str, ...] = ()  # config: (the new document, the group's before)

    def after(self, event: Event, at_ms: int, signed: tuple[Signed, ...] = ()) -> Rollout:
        """The record after `event`, with what its step signed; RolloutRefused when the table
        has no such step."""
        target = TRANSITIONS.get((self.phase, event))
        if target is None:
            raise RolloutRefused(refusal(self, event))
        return replace(
            self,
            phase=target,
            history=(*self.history, Step(event, at_ms, target)),
            signed=(*self.signed, *signed),
        )

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def serial_for(self, box_id: str) -> int | None:
        """The serial of the newest document this rollout signed that names `box_id` and pins
        its version (None: none yet)."""
        serials = [
            s.config_serial for s in self.signed if box_id in s.boxes and s.version == self.version
        ]
        return max(serials) if serials else None

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "rollout_id": self.rollout_id,
            "version": self.version,
            "previous_version": self.previous_version,
            "group": self.group,
            "targets": list(self.targets),
            "canary": list(self.canary),
            "canary_percent": self.canary_percent,
            "phase": self.phase.value,
            "started_at_ms": self.started_at_ms,
            "history": [
                {"event": s.event.value, "at_ms": s.at_ms, "phase": s.phase.value}
                for s in self.history
            ],
            "signed": [
                {
                    "path": s.path,
                    "config_serial": s.config_serial,
                    "boxes": list(s.boxes),
                    "version": s.version,
                }
                for s in self.signed
            ],
            "kind": self.kind,
            "documents": list(self.documents),
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def refusal(rollout: Rollout, event: Event) -> str:
    """Why `event` cannot happen now, for the admin who asked."""
    hints = {
        (Phase.PAUSED, Event.PROMOTE): "resume it first",
        (Phase.PROMOTED, Event.PAUSE): "the group's document is signed; roll back instead",
        (Phase.PLANNED, Event.ROLLBACK): "nothing was signed yet",
    }
    hint = hints.get((rollout.phase, event), "")
    return f"rollout {rollout.rollout_id} is {rollout.phase.value}: cannot {event.value}" + (
        f" ({hint})" if hint else ""
    )


def check_version(version: str, what: str = "--version", kind: str = "release") -> str:
    if kind == "config" and _CONFIG_LABEL.fullmatch(version):
        return version
    if not _VERSION.fullmatch(version):
        raise RolloutRefused(f"{what} {version!r} is not a PEP 440 version such as 1.4.0")
    return version


def check_rollout_id(rollout_id: str) -> str:
    if not _ID.fullmatch(rollout_id):
        raise RolloutRefused(f"{rollout_id!r} is not a rollout id")
    return rollout_id


def parse_rollout(data: bytes, source: str) -> Rollout:
    """The record in `data`; RolloutStateDamaged for anything this module did not write."""
    try:
        raw = json.loads(data)
        if raw.pop("format") != FORMAT:
            raise ValueError("unknown format")
        history = tuple(
            Step(Event(s["event"]), _int(s["at_ms"]), Phase(s["phase"])) for s in raw["history"]
        )
        kind = _str(raw["kind"])
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        signed = tuple(
            Signed(
                _str(s["path"]),
                _int(s["config_serial"]),
                _names(s["boxes"]),
                check_version(_str(s["version"]), kind=kind),
            )
            for s in raw["signed"]
        )
        group = raw["group"]
        rollout = Rollout(
            rollout_id=check_rollout_id(_str(raw["rollout_id"])),
            version=check_version(_str(raw["version"]), kind=kind),
            previous_version=check_version(_str(raw["previous_version"]), kind=kind),
            group=None if group is None else _str(group),
            targets=_names(raw["targets"]),
            canary=_names(raw["canary"]),
            canary_percent=_int(raw["canary_percent"]),
            phase=Phase(raw["phase"]),
            started_at_ms=_int(raw["started_at_ms"]),
            history=history,
            signed=signed,
            kind=kind,
            documents=_names(raw["documents"]),
        )
        if len(raw) != 13 or (kind == "config") != (len(rollout.documents) == 2):
            raise ValueError("unknown members")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RolloutStateDamaged(f"{source}: not a rollout record ({exc})") from None
    return rollout


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string was expected")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError("a non-negative integer was expected")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError("a list was expected")
    return tuple(_str(name) for name in value)


def release_targets(rollouts: Iterable[Rollout]) -> dict[str, str]:
    """Group -> the release version an active rollout moves it to (the fleet page's "rolling
    out to" column). Box-only rollouts and configuration rollouts name no group version; when
    two active rollouts of one group exist (the planner refuses overlaps, so only a damaged
    book could hold them) the newest wins."""
    found: dict[str, str] = {}
    for rollout in sorted(rollouts, key=lambda r: r.started_at_ms):
        if rollout.kind == "release" and rollout.group and rollout.phase in ACTIVE:
            found[rollout.group] = rollout.version
    return found
