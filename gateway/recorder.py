"""The recorder: one pure, table-driven state machine (model: h11's `_state.py`).

It takes events and `now` and returns actions; it never touches a camera, a file or a clock.

    STANDBY --trigger--> RECORDING --stop--> POSTRECORD --deadline--> STANDBY
                             ^                   |
                             +-----trigger-------+

Rules from the protocols (RULES R1-R3):
- every trigger is an action the shell audits with its source (R3);
- a recording starts `prerecord_s` before its trigger (R1, the ring supplies it);
- it stops only by a stop (the officer, or a trigger source whose policy allows stopping);
  never by time: past `max_continuous_s` the officer is warned (R2), evidence is not cut;
- the officer's stop ends it at once (H2O art. 2.6: stop when the threat is over) unless the
  policy sets `officer_stop_postrecord_s`; an automatic source's stop (lights off) keeps the
  largest `postrecord_s` of the recording's triggers;
- all cameras of the vehicle record together as one incident unless the trigger's policy names
  fewer; a later trigger may add cameras.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from common.faults import IllegalTransition

NS_PER_S = 1_000_000_000
OFFICER = "officer"
"""The source of the officer's own start and stop (page, CLI, the officer's button)."""
CHANNELS = ("page", "cli", "button", "input")
"""How a trigger or stop reached the box (event fact `channel`, audited): the officer's page,
the loopback API of the `mvb` commands, a button (the officer's input line, another device's
record button through POST /api/trigger) or a vehicle input (lights, siren, crash, speed)."""
ORIGIN_KEYS = ("channel", "account")
"""The event facts that name who asked: the audit log carries them beside the source (R3)."""


class State(enum.Enum):
    STANDBY = "standby"
    RECORDING = "recording"
    POSTRECORD = "postrecord"


class EventKind(enum.Enum):
    TRIGGER = "trigger"
    STOP = "stop"
    TICK = "tick"
    ABORT = "abort"  # the shell could not start the recording (full card): back to stand-by


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    """What one trigger source does. Units in names; the protocols bound the numbers."""

    cameras: frozenset[str] | None = None  # None: every camera of the vehicle
    postrecord_s: float = 30.0
    may_stop: bool = False


@dataclass(frozen=True, slots=True)
class RecorderPolicy:
    prerecord_s: float = 30.0
    max_continuous_s: float = 1800.0
    triggers: dict[str, TriggerPolicy] = field(default_factory=dict)
    default_trigger: TriggerPolicy = field(default_factory=TriggerPolicy)
    officer_stop_postrecord_s: float = 0.0

    def for_source(self, source: str) -> TriggerPolicy:
        return self.triggers.get(source, self.default_trigger)


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    now_ns: int
    source: str = ""
    facts: dict[str, object] = field(default_factory=dict)


# -- actions: what the shell must do ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartRecording:
    source: str
    cameras: frozenset[str] | None
    prerecord_from_ns: int
    facts: dict[str, object]


@dataclass(frozen=True, slots=True)
class NoteTrigger:
    """A further trigger during a recording: record it (R3), add its cameras."""

    source: str
    cameras: frozenset[str] | None
    facts: dict[str, object]


@dataclass(frozen=True, slots=True)
class NoteStop:
    source: str
    postrecord_until_ns: int


@dataclass(frozen=True, slots=True)
class RefuseStop:
    """A stop from a source whose policy may not stop (e.g. lights off): audited, ignored."""

    source: str


@dataclass(frozen=True, slots=True)
class FinishRecording:
    pass


@dataclass(frozen=True, slots=True)
class WarnMaxContinuous:
    recording_for_s: float


Action = StartRecording | NoteTrigger | NoteStop | RefuseStop | FinishRecording | WarnMaxContinuous


class Recorder:
    """State plus the table. `handle(event)` returns the actions, in order."""

    def __init__(self, policy: RecorderPolicy) -> None:
        self.policy = policy
        self.state = State.STANDBY
        self.started_ns = 0
        self.postrecord_until_ns = 0
        self.postrecord_s = 0.0
        self._warned_at_ns = 0

    def handle(self, event: Event) -> list[Action]:
        handler = _TABLE.get((self.state, event.kind))
        if handler is None:
            raise IllegalTransition(f"{event.kind.value} is not accepted in {self.state.value}")
        return handler(self, event)

    # -- the handlers named by the table --

    def _start(self, event: Event) -> list[Action]:
        trigger = self.policy.for_source(event.source)
        self.state = State.RECORDING
        self.started_ns = event.now_ns
        self._warned_at_ns = event.now_ns
        self.postrecord_s = trigger.postrecord_s
        prerecord_from_ns = event.now_ns - int(self.policy.prerecord_s * NS_PER_S)
        return [StartRecording(event.source, trigger.cameras, prerecord_from_ns, event.facts)]

    def _retrigger(self, event: Event) -> list[Action]:
        trigger = self.policy.for_source(event.source)
        self.state = State.RECORDING
        self.postrecord_s = max(self.postrecord_s, trigger.postrecord_s)
        return [NoteTrigger(event.source, trigger.cameras, event.facts)]

    def _stop(self, event: Event) -> list[Action]:
        officer = event.source == OFFICER
        if not officer and not self.policy.for_source(event.source).may_stop:
            return [RefuseStop(event.source)]
        postrecord_s = self.policy.officer_stop_postrecord_s if officer else self.postrecord_s
        self.postrecord_until_ns = event.now_ns + int(postrecord_s * NS_PER_S)
        if postrecord_s <= 0:
            self.state = State.STANDBY  # stop means stop: sealed now, not at the next tick
            return [NoteStop(event.source, self.postrecord_until_ns), FinishRecording()]
        self.state = State.POSTRECORD
        return [NoteStop(event.source, self.postrecord_until_ns)]

    def _stop_again(self, event: Event) -> list[Action]:
        return []  # already stopping: a second press changes nothing

    def _tick_recording(self, event: Event) -> list[Action]:
        limit_ns = int(self.policy.max_continuous_s * NS_PER_S)
        if event.now_ns - self._warned_at_ns >= limit_ns:
            self._warned_at_ns = event.now_ns  # warn again after each further interval
            return [WarnMaxContinuous((event.now_ns - self.started_ns) / NS_PER_S)]
        return []

    def _tick_postrecord(self, event: Event) -> list[Action]:
        if event.now_ns < self.postrecord_until_ns:
            return []
        self.state = State.STANDBY
        return [FinishRecording()]

    def _tick_standby(self, event: Event) -> list[Action]:
        return []

    def _abort(self, event: Event) -> list[Action]:
        self.state = State.STANDBY
        return []


_TABLE = {
    (State.STANDBY, EventKind.TRIGGER): Recorder._start,
    (State.STANDBY, EventKind.TICK): Recorder._tick_standby,
    (State.RECORDING, EventKind.TRIGGER): Recorder._retrigger,
    (State.RECORDING, EventKind.STOP): Recorder._stop,
    (State.RECORDING, EventKind.TICK): Recorder._tick_recording,
    (State.POSTRECORD, EventKind.TRIGGER): Recorder._retrigger,
    (State.POSTRECORD, EventKind.STOP): Recorder._stop_again,
    (State.POSTRECORD, EventKind.TICK): Recorder._tick_postrecord,
    (State.RECORDING, EventKind.ABORT): Recorder._abort,
}
"""(state, event) -> handler. A pair that is missing is illegal: STOP in STANDBY."""
