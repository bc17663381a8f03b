"""The recorder state machine: driven directly, with no sleeps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.faults import IllegalTransition
from gateway.recorder import (
    Event,
    EventKind,
    FinishRecording,
    NoteStop,
    NoteTrigger,
    Recorder,
    RecorderPolicy,
    RefuseStop,
    StartRecording,
    State,
    TriggerPolicy,
    WarnMaxContinuous,
)

S = 1_000_000_000
POLICY = RecorderPolicy(
    prerecord_s=60,
    max_continuous_s=600,
    default_trigger=TriggerPolicy(postrecord_s=30),
    triggers={
        "lights": TriggerPolicy(postrecord_s=60, may_stop=True),
        "speed": TriggerPolicy(cameras=frozenset({"dashcam"}), postrecord_s=30),
    },
)
OFFICER_POSTRECORD = replace(POLICY, officer_stop_postrecord_s=30)
"""A municipality whose policy sets a post-record for the officer's stop."""


def trigger(now_s: float, source: str = "officer") -> Event:
    return Event(EventKind.TRIGGER, int(now_s * S), source)


def stop(now_s: float, source: str = "officer") -> Event:
    return Event(EventKind.STOP, int(now_s * S), source)


def tick(now_s: float) -> Event:
    return Event(EventKind.TICK, int(now_s * S))


def test_full_cycle() -> None:
    rec = Recorder(OFFICER_POSTRECORD)
    [start] = rec.handle(trigger(100))
    assert start == StartRecording("officer", None, 40 * S, {})
    assert rec.state is State.RECORDING
    assert rec.handle(stop(105)) == [NoteStop("officer", 135 * S)]
    assert rec.handle(tick(134.9)) == []
    assert rec.handle(tick(135)) == [FinishRecording()]
    assert rec.state.value == "standby"  # (mypy keeps the narrowing from above)


def test_stop_while_standing_by_is_illegal() -> None:
    with pytest.raises(IllegalTransition, match="stop is not accepted in standby"):
        Recorder(POLICY).handle(stop(1))


def test_the_officers_stop_ends_the_recording_at_once_by_default() -> None:
    rec = Recorder(POLICY)
    rec.handle(trigger(0, "lights"))  # the lights' 60 s post-record is for an automatic stop
    assert rec.handle(stop(10)) == [NoteStop("officer", 10 * S), FinishRecording()]
    assert rec.state is State.STANDBY
    [start] = rec.handle(trigger(11))
    assert isinstance(start, StartRecording), "the next trigger is a new recording"


def test_an_automatic_stop_keeps_the_post_record() -> None:
    rec = Recorder(POLICY)
    rec.handle(trigger(0, "lights"))
    assert rec.handle(stop(10, "lights")) == [NoteStop("lights", 70 * S)]
    assert rec.state is State.POSTRECORD
    assert rec.handle(tick(70)) == [FinishRecording()]


def test_retrigger_in_postrecord_continues_the_same_recording() -> None:
    rec = Recorder(OFFICER_POSTRECORD)
    rec.handle(trigger(0))
    rec.handle(stop(10))
    assert rec.handle(trigger(20, "lights")) == [NoteTrigger("lights", None, {})]
    assert rec.state is State.RECORDING
    assert rec.handle(stop(30, "lights")) == [NoteStop("lights", 90 * S)]  # lights' 60 s
    assert rec.handle(stop(31)) == [], "already stopping"


def test_a_source_that_may_not_stop_is_refused() -> None:
    rec = Recorder(POLICY)
    rec.handle(trigger(0, "speed"))
    assert rec.handle(stop(5, "speed")) == [RefuseStop("speed")]
    assert rec.state is State.RECORDING
    assert rec.handle(stop(6, "lights")) == [NoteStop("lights", 36 * S)]


def test_speed_trigger_names_its_cameras_and_officer_adds_all() -> None:
    rec = Recorder(POLICY)
    [start] = rec.handle(trigger(0, "speed"))
    assert isinstance(start, StartRecording)
    assert start.cameras == frozenset({"dashcam"})
    [note] = rec.handle(trigger(1, "officer"))
    assert isinstance(note, NoteTrigger)
    assert note.cameras is None


def test_max_continuous_warns_and_never_stops() -> None:
    rec = Recorder(POLICY)
    rec.handle(trigger(0))
    assert rec.handle(tick(599)) == []
    assert rec.handle(tick(600)) == [WarnMaxContinuous(600.0)]
    assert rec.handle(tick(700)) == []
    assert rec.handle(tick(1200)) == [WarnMaxContinuous(1200.0)]
    assert rec.state is State.RECORDING


def test_second_stop_during_postrecord_changes_nothing() -> None:
    rec = Recorder(OFFICER_POSTRECORD)
    rec.handle(trigger(0))
    rec.handle(stop(1))
    assert rec.handle(stop(2)) == []
    assert rec.postrecord_until_ns == 31 * S


def test_abort_returns_to_standby_and_is_only_legal_while_recording() -> None:
    rec = Recorder(POLICY)
    rec.handle(trigger(0))
    assert rec.handle(Event(EventKind.ABORT, 1)) == []
    assert rec.state is State.STANDBY
    with pytest.raises(IllegalTransition):
        rec.handle(Event(EventKind.ABORT, 2))
