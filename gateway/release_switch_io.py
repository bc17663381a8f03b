"""The A/B switch's I/O shell: the state file, the links, the service and the health probe
(docs/releases.md sections 4 and 5). The decisions are gateway/release_switch.py's table.

Layout under the release root (/opt/mvb on a box):

    releases/<version>/   installed releases (gateway/release_install.py; complete iff
                          release.json exists)
    current -> releases/<v>   what mvb.service runs (ExecStart through this link)
    previous -> releases/<v>  the release before the last switch (kept for a rollback by hand)
    good -> releases/<v>      the last release that proved itself healthy: the switch units run
                              the switcher from here, never from a release under trial
    switch.json           the switch's durable state (SwitchState, format 1)

Invariants:
- the state is written durably (common/durable.py) *before* the actions of its step run, and
  each link is re-pointed by one rename (`replace_symlink`): whatever a power cut or a SIGKILL
  interrupts, the next BOOT or RESUME finds a state that explains the links and finishes or
  undoes the step;
- a switch is asked for only to a complete install (release.json names the same version);
- the box is stopped only in stand-by: its API says `standby`, or nothing listens on its port
  (no box runs to be interrupted); anything else (recording, post-recording, an error, a
  timeout) and the switcher waits.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from common.durable import atomic_write_bytes, replace_symlink
from common.faults import ConfigurationFault, TransientFault
from gateway.release_install import COMPLETE
from gateway.release_switch import (
    ActionKind,
    Event,
    EventKind,
    Outcome,
    Phase,
    SwitchRefused,
    SwitchState,
    health_problem,
    step,
)
from protocol.release_manifest import BundleError, Manifest, is_version
from protocol.strict_json import Fields, dump_json, load_object

STATE_FILE: Final = "switch.json"
STATE_FORMAT: Final = 1
MAX_STATE_BYTES: Final = 4096
LINKS: Final = ("current", "previous", "good")
DEFAULT_API_URL: Final = "http://127.0.0.1:8088"
STATUS_TIMEOUT_S: Final = 5.0


class SwitchStateError(ValueError, ConfigurationFault):
    """The release root is not what the switch needs (no state and no current link, a damaged
    state file, a release that is not installed)."""


class ServiceError(RuntimeError, TransientFault):
    """The service manager did not stop or start the box's service."""


class ServiceControl(Protocol):
    """The box's service: systemd on a box (`Systemctl`), a process in the tests."""

    def stop(self) -> None: ...
    def start(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Systemctl:
    unit: str = "mvb.service"

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")

    def _run(self, verb: str) -> None:
        try:
            done = subprocess.run(
                ["systemctl", verb, self.unit], capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"systemctl {verb} {self.unit}: {exc}") from exc
        if done.returncode != 0:
            raise ServiceError(f"systemctl {verb} {self.unit}: {done.stderr.strip()[-300:]}")


def fetch_status(api_url: str) -> object | None:
    """The box's status document from its loopback API, or None when nothing answers."""
    try:
        return _status(api_url)
    except (OSError, ValueError, http.client.HTTPException):
        return None


def box_activity(api_url: str) -> str:
    """`standby`, `absent` (nothing listens: no box runs to be interrupted) or `busy`: recording,
    post-recording, or anything else, an error or a timeout included, because a box that may
    be recording is never stopped."""
    try:
        document = _status(api_url)
    except ConnectionRefusedError:
        return "absent"
    except urllib.error.URLError as exc:
        return "absent" if isinstance(exc.reason, ConnectionRefusedError) else "busy"
    except (OSError, ValueError, http.client.HTTPException):
        return "busy"
    standby = isinstance(document, dict) and document.get("state") == "standby"
    return "standby" if standby else "busy"


def _status(api_url: str) -> object:
    with urllib.request.urlopen(  # noqa: S310 (the box's own loopback API)
        f"{api_url}/api/status", timeout=STATUS_TIMEOUT_S
    ) as response:
        document: object = json.loads(response.read())
        return document


# -- the state file ------------------------------------------------------------------------------


def state_to_json(state: SwitchState) -> bytes:
    return dump_json(
        {
            "format": STATE_FORMAT,
            "phase": state.phase.value,
            "good": state.good,
            "target": state.target,
            "attempts": state.attempts,
            "start_counted": state.start_counted,
            "reason": state.reason,
            "last": state.last.value,
            "last_version": state.last_version,
            "last_reason": state.last_reason,
            "serial": state.serial,
        }
    )


def state_from_json(data: bytes) -> SwitchState:
    document = load_object(data, MAX_STATE_BYTES, STATE_FILE, SwitchStateError)
    members = frozenset({"format", "phase", "good", "target", "attempts", "reason", "last"})
    members |= {"start_counted", "last_version", "last_reason", "serial"}
    fields = Fields(document, members, STATE_FILE, SwitchStateError)
    fields.integer("format", STATE_FORMAT, STATE_FORMAT)
    try:
        phase, last = Phase(fields.raw("phase")), Outcome(fields.raw("last"))
    except ValueError as exc:
        raise SwitchStateError(f"{STATE_FILE}: {exc}") from exc
    return SwitchState(
        phase=phase,
        good=fields.text("good", 40),
        target=fields.text("target", 40),
        attempts=fields.integer("attempts", 0, 1000),
        start_counted=_boolean(fields.raw("start_counted")),
        reason=fields.text("reason", 80),
        last=last,
        last_version=fields.text("last_version", 40),
        last_reason=fields.text("last_reason", 80),
        serial=fields.integer("serial", 0, 2**53),
    )


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise SwitchStateError(f"{STATE_FILE}: start_counted must be true or false")
    return value


@dataclass(frozen=True, slots=True)
class ReleaseRoot:
    """The directory holding releases, links and the state file (module docstring)."""

    path: Path

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    def release(self, version: str) -> Path:
        return self.path / "releases" / version

    def check_installed(self, version: str) -> None:
        """SwitchStateError unless `version` is a complete install of that version."""
        if not is_version(version):
            raise SwitchStateError(f"{version!r} is not a release version")
        try:
            manifest = Manifest.from_json((self.release(version) / COMPLETE).read_bytes())
        except (OSError, BundleError) as exc:
            raise SwitchStateError(f"release {version} is not installed here: {exc}") from exc
        if manifest.version != version:
            raise SwitchStateError(f"releases/{version} holds release {manifest.version}")

    def link(self, name: str, version: str) -> None:
        replace_symlink(self.path / name, f"releases/{version}")

    def linked_version(self, name: str) -> str | None:
        try:
            return (self.path / name).readlink().name
        except OSError:
            return None

    def load(self) -> SwitchState:
        try:
            return state_from_json(self.state_file.read_bytes())
        except FileNotFoundError:
            pass
        current = self.linked_version("current")
        if current is None:
            raise SwitchStateError(
                f"{self.path} has no {STATE_FILE} and no current link: "
                "`mvb release activate VERSION` makes the first installed release current"
            ) from None
        return SwitchState(phase=Phase.IDLE, good=current)  # a box from before the switch

    def save(self, state: SwitchState) -> None:
        # 0644: the box (another user) reads the outcome to audit it and raise its alarm.
        atomic_write_bytes(self.state_file, state_to_json(state), mode=0o644)


def activate_first(root: ReleaseRoot, version: str) -> SwitchState:
    """The first release of a box made current and good, with no switch (a fresh install)."""
    if root.state_file.exists() or root.linked_version("current") is not None:
        raise SwitchRefused("a release is current already: switch to a new one instead")
    root.check_installed(version)
    state = SwitchState(phase=Phase.IDLE, good=version)
    root.save(state)
    for name in LINKS:
        root.link(name, version)
    return state


# -- the switcher --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """How long the target has to prove itself, and how the switcher polls."""

    health_deadline_s: float = 120.0
    healthy_polls: int = 3  # consecutive healthy answers needed: a crash soon after start fails
    poll_interval_s: float = 1.0
    standby_poll_s: float = 5.0
    standby_wait_s: float = float("inf")  # then exit with the switch still pending


@dataclass
class Switcher:
    """Runs the table's actions against one release root, one service and one API."""

    root: ReleaseRoot
    service: ServiceControl
    api_url: str = DEFAULT_API_URL
    timing: Timing = Timing()
    say: Callable[[str], None] = print
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def run(self, event: Event) -> SwitchState:
        """Feed `event` and every event its actions produce, until none is left; the last
        state (IDLE when the switch finished, PENDING when the wait for stand-by ran out)."""
        if event.kind is EventKind.REQUEST:
            self.root.check_installed(event.version)
        state = self.root.load()
        standby_since = self.monotonic()
        next_event: Event | None = event
        while next_event is not None:
            new_state, actions = step(state, next_event)
            if new_state != state:
                self.root.save(new_state)  # durable before any action of the step runs
                self._say_change(state, new_state)
            state, next_event = new_state, None
            for action in actions:
                next_event = self._act(action, state)
                if next_event is not None:  # the rest of the step is moot (a start that failed)
                    break
            if next_event is not None and next_event.kind is EventKind.BUSY:
                if self.monotonic() - standby_since >= self.timing.standby_wait_s:
                    self.say(f"release {state.target}: the box is busy, the switch stays pending")
                    return state
                self.sleep(self.timing.standby_poll_s)
        return state

    def _act(self, action: ActionKind, state: SwitchState) -> Event | None:
        if action is ActionKind.WAIT_STANDBY:
            busy = box_activity(self.api_url) == "busy"
            return Event(EventKind.BUSY if busy else EventKind.STANDBY)
        if action is ActionKind.STOP:
            self._service("stop")
        elif action is ActionKind.LINK_TARGET:
            self.root.link("previous", state.good)
            self.root.link("current", state.target)
        elif action in (ActionKind.LINK_GOOD, ActionKind.COMMIT):
            self.root.link("current", state.good)
            self.root.link("good", state.good)
        elif action is ActionKind.START:
            problem = self._service("start")
            if problem and state.phase is Phase.TRIAL:
                return Event(EventKind.UNHEALTHY, reason="service_did_not_start")
        elif action is ActionKind.CHECK_HEALTH:
            return self._check_health(state.target)
        elif action is ActionKind.RESTORED:
            return Event(EventKind.RESTORED)
        return None

    def _service(self, verb: str) -> str:
        try:
            getattr(self.service, verb)()
        except ServiceError as exc:
            self.say(f"release switch: {exc}")
            return str(exc)
        return ""

    def _check_health(self, version: str) -> Event:
        """HEALTHY after `healthy_polls` healthy answers in a row before the deadline."""
        deadline = self.monotonic() + self.timing.health_deadline_s
        in_a_row, problem = 0, "api_not_answering"
        while self.monotonic() < deadline:
            document = fetch_status(self.api_url)
            problem = "api_not_answering" if document is None else health_problem(document, version)
            in_a_row = 0 if problem else in_a_row + 1
            if in_a_row >= self.timing.healthy_polls:
                return Event(EventKind.HEALTHY)
            self.sleep(self.timing.poll_interval_s)
        return Event(EventKind.UNHEALTHY, reason=problem)

    def _say_change(self, before: SwitchState, after: SwitchState) -> None:
        if after.phase is Phase.IDLE and after.serial != before.serial:
            if after.last is Outcome.SWITCHED:
                self.say(f"release {after.good} is running and healthy (was {before.good})")
            else:
                self.say(
                    f"release {after.last_version} failed ({after.last_reason}): "
                    f"rolled back to {after.good}"
                )
        elif after.phase is not before.phase:
            self.say(f"release {after.target or after.good}: {after.phase.value}")
