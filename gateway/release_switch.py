"""The A/B switch between installed releases, as a table (docs/releases.md section 4). PURE.

The shell (gateway/release_switch_io.py) feeds events; each step returns the next state and the
actions to run. The shell writes the new state durably *before* it runs the actions, so after a
power cut or a SIGKILL the state file always says at least as much as the links show, and the
next BOOT or RESUME finishes or undoes what was under way.

Phases:
    IDLE      `good` runs; nothing under way. `last` says how the last switch ended.
    PENDING   a switch to `target` was asked for; it waits for the box's stand-by.
    TRIAL     `target` is linked as current and must prove itself healthy; `attempts` counts the
              starts of it (each counted durably before it happens).
    ROLLBACK  `target` failed (`reason`); `good` is being linked back and started.

Invariants:
- `good` is always an installed release that proved itself healthy (or the first one
  installed); `current` points to `good` except in TRIAL. A rollback only ever goes to `good`.
- Every start of `target` is counted once, before it happens (by the trial's begin, the boot
  step, or a resume that makes one): a release that never reports healthy, or takes the box
  down before it can (a power cut, a kernel hang, a crash loop), is rolled back after at most
  MAX_ATTEMPTS starts, whoever is left to count.
- A step either applies (a row of the table) or raises SwitchRefused and changes nothing.
- `serial` grows by one at each finished switch, so the box reports each outcome once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from common.faults import MisuseFault

MAX_ATTEMPTS: Final = 3
"""Starts of a new release (the first plus two boots or resumes) before it is rolled back."""
BOOT_ATTEMPTS_REASON: Final = "boot_attempts"
"""The reason when the attempts ran out before any health check could judge the release."""


class SwitchRefused(ValueError, MisuseFault):
    """An event that is not allowed in the current phase (a second switch while one is under
    way, a switch to the running release): nothing changes."""


class Phase(enum.Enum):
    IDLE = "idle"
    PENDING = "pending"
    TRIAL = "trial"
    ROLLBACK = "rollback"


class Outcome(enum.Enum):
    NONE = "none"
    SWITCHED = "switched"
    ROLLED_BACK = "rolled_back"


class EventKind(enum.Enum):
    REQUEST = "request"  # switch to `version`
    BOOT = "boot"  # the machine started, before the box's service
    RESUME = "resume"  # the switcher (re)started: continue whatever is under way
    BUSY = "busy"  # the box is recording or post-recording
    STANDBY = "standby"  # the box is in stand-by (or not running): it may be stopped now
    HEALTHY = "healthy"  # the target proved itself within the deadline
    UNHEALTHY = "unhealthy"  # it did not; `reason` says why
    RESTORED = "restored"  # `good` is linked and started again


class ActionKind(enum.Enum):
    WAIT_STANDBY = "wait_standby"  # poll until the box is in stand-by, then feed STANDBY/BUSY
    STOP = "stop"  # stop the box's service
    LINK_TARGET = "link_target"  # previous -> good, current -> target (each by rename)
    LINK_GOOD = "link_good"  # current -> good
    START = "start"  # start the box's service (a no-op if it runs)
    CHECK_HEALTH = "check_health"  # judge the target, then feed HEALTHY/UNHEALTHY
    COMMIT = "commit"  # previous -> old good, good -> target
    RESTORED = "restored"  # feed RESTORED (the restore's links and start are done)


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    version: str = ""  # REQUEST: the release asked for
    reason: str = ""  # UNHEALTHY: a code (docs/releases.md section 5)


@dataclass(frozen=True, slots=True)
class SwitchState:
    """What the durable state file holds (docs/releases.md section 4)."""

    phase: Phase
    good: str
    target: str = ""
    attempts: int = 0
    start_counted: bool = False  # the boot step counted the start systemd makes after it
    reason: str = ""
    last: Outcome = Outcome.NONE
    last_version: str = ""
    last_reason: str = ""
    serial: int = 0


Step = tuple[SwitchState, list[ActionKind]]
_A = ActionKind


def _request(state: SwitchState, event: Event) -> Step:
    if not event.version or event.version == state.good:
        raise SwitchRefused(f"release {event.version!r} is the running release already")
    return replace(state, phase=Phase.PENDING, target=event.version, attempts=0), [_A.WAIT_STANDBY]


def _keep_waiting(state: SwitchState, _event: Event) -> Step:
    return state, [_A.WAIT_STANDBY]


def _pending_boot(state: SwitchState, _event: Event) -> Step:
    return state, [_A.LINK_GOOD]  # nothing was switched yet: boot the good release


def _begin_trial(state: SwitchState, _event: Event) -> Step:
    trial = replace(state, phase=Phase.TRIAL, attempts=1)
    return trial, [_A.STOP, _A.LINK_TARGET, _A.START, _A.CHECK_HEALTH]


def _out_of_attempts(state: SwitchState) -> bool:
    return state.attempts >= MAX_ATTEMPTS


def _trial_boot(state: SwitchState, _event: Event) -> Step:
    """Before the box's service starts (the boot unit): count the start systemd makes next
    and link what it must start. No service action here: the service is ordered after this
    step and would wait for it."""
    if _out_of_attempts(state):
        return replace(state, phase=Phase.ROLLBACK, reason=BOOT_ATTEMPTS_REASON), [_A.LINK_GOOD]
    counted = replace(state, attempts=state.attempts + 1, start_counted=True)
    return counted, [_A.LINK_TARGET]


def _trial_resume(state: SwitchState, _event: Event) -> Step:
    """The switcher died mid-trial, or the machine booted and the service started: count the
    start it makes (START is a no-op for a running service) unless the boot step counted it
    already, then judge it."""
    then = [_A.LINK_TARGET, _A.START, _A.CHECK_HEALTH]
    if state.start_counted:
        return replace(state, start_counted=False), then
    if _out_of_attempts(state):
        return _roll_back(state, BOOT_ATTEMPTS_REASON)
    return replace(state, attempts=state.attempts + 1), then


def _roll_back(state: SwitchState, reason: str) -> Step:
    rolling = replace(state, phase=Phase.ROLLBACK, reason=reason)
    return rolling, [_A.STOP, _A.LINK_GOOD, _A.START, _A.RESTORED]


def _unhealthy(state: SwitchState, event: Event) -> Step:
    return _roll_back(state, event.reason or "unhealthy")


def _healthy(state: SwitchState, _event: Event) -> Step:
    done = _finished(state, Outcome.SWITCHED, "")
    return replace(done, good=state.target), [_A.COMMIT]


def _rollback_boot(state: SwitchState, _event: Event) -> Step:
    return state, [_A.LINK_GOOD]


def _rollback_resume(state: SwitchState, _event: Event) -> Step:
    return state, [_A.STOP, _A.LINK_GOOD, _A.START, _A.RESTORED]


def _restored(state: SwitchState, _event: Event) -> Step:
    return _finished(state, Outcome.ROLLED_BACK, state.reason), []


def _idle_boot(state: SwitchState, _event: Event) -> Step:
    return state, [_A.LINK_GOOD]  # repairs a current link a hand or a cut left elsewhere


def _nothing(state: SwitchState, _event: Event) -> Step:
    return state, []


def _finished(state: SwitchState, outcome: Outcome, reason: str) -> SwitchState:
    return SwitchState(
        phase=Phase.IDLE,
        good=state.good,
        last=outcome,
        last_version=state.target,
        last_reason=reason,
        serial=state.serial + 1,
    )


_E = EventKind
TABLE: Final[dict[tuple[Phase, EventKind], Callable[[SwitchState, Event], Step]]] = {
    (Phase.IDLE, _E.REQUEST): _request,
    (Phase.IDLE, _E.BOOT): _idle_boot,
    (Phase.IDLE, _E.RESUME): _nothing,
    (Phase.PENDING, _E.RESUME): _keep_waiting,
    (Phase.PENDING, _E.BUSY): _keep_waiting,
    (Phase.PENDING, _E.STANDBY): _begin_trial,
    (Phase.PENDING, _E.BOOT): _pending_boot,
    (Phase.TRIAL, _E.BOOT): _trial_boot,
    (Phase.TRIAL, _E.RESUME): _trial_resume,
    (Phase.TRIAL, _E.HEALTHY): _healthy,
    (Phase.TRIAL, _E.UNHEALTHY): _unhealthy,
    (Phase.ROLLBACK, _E.BOOT): _rollback_boot,
    (Phase.ROLLBACK, _E.RESUME): _rollback_resume,
    (Phase.ROLLBACK, _E.RESTORED): _restored,
}
"""Every allowed (phase, event); anything else is refused (module invariants)."""


def step(state: SwitchState, event: Event) -> Step:
    """The next state and the actions to run, in order, once that state is durable."""
    handler = TABLE.get((state.phase, event.kind))
    if handler is None:
        raise SwitchRefused(f"{event.kind.value} is not allowed while {state.phase.value}")
    return handler(state, event)


# -- health: what the box's status document must show (docs/releases.md section 5) -------------

RUNNING_STATES: Final = frozenset({"standby", "recording", "postrecord"})
MAX_PACKET_AGE_S: Final = 5.0
"""A camera whose last packet is older than this is not delivering (a keyframe interval is
1 to 2 s; every packet counts, not only keyframes)."""


def health_problem(document: object, version: str) -> str:
    """The first reason the status document shows a box not healthy on `version`, or "".

    Healthy: the API answered (the caller's part), the running software is `version`, the
    recorder is in one of its states, and at least one camera is configured and every one
    delivers (connected, its last packet at most MAX_PACKET_AGE_S old). A box with no camera
    proves nothing about capture, so it is not healthy."""
    if not isinstance(document, dict):
        return "status_unreadable"
    box = document.get("box")
    running = box.get("software_version") if isinstance(box, dict) else None
    if running != version:
        return "version_mismatch"
    if document.get("state") not in RUNNING_STATES:
        return "recorder_not_running"
    cameras = document.get("cameras")
    if not isinstance(cameras, dict) or not cameras:
        return "no_camera"
    for name, camera in sorted(cameras.items()):
        if not (isinstance(camera, dict) and _delivering(camera)):
            return f"camera_not_delivering:{name}"[:80]
    return ""


def _delivering(camera: dict[object, object]) -> bool:
    """Connected, and its last packet fresh (a source that delivered once and then hung stays
    `connected` until its read ends)."""
    age_s = camera.get("last_packet_age_s")
    fresh = isinstance(age_s, int | float) and 0 <= age_s <= MAX_PACKET_AGE_S
    return camera.get("connected") is True and fresh
