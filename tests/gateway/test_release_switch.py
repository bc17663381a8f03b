"""The A/B switch's table (gateway/release_switch.py) and its state file's format: every path a
switch can take, boot counting, refusals, and what the health judgment accepts. Pure; the real
releases, processes and links are tests/test_release_switch_e2e.py's."""

from __future__ import annotations

import itertools

import pytest

from gateway.release_switch import (
    BOOT_ATTEMPTS_REASON,
    MAX_ATTEMPTS,
    TABLE,
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
from gateway.release_switch_io import SwitchStateError, state_from_json, state_to_json

A = ActionKind
IDLE = SwitchState(phase=Phase.IDLE, good="1.0.0")


def ev(kind: EventKind, **fields: str) -> Event:
    return Event(kind, **fields)


def pending() -> SwitchState:
    state, actions = step(IDLE, ev(EventKind.REQUEST, version="1.0.1"))
    assert actions == [A.WAIT_STANDBY]
    return state


def trial() -> SwitchState:
    state, actions = step(pending(), ev(EventKind.STANDBY))
    assert actions == [A.STOP, A.LINK_TARGET, A.START, A.CHECK_HEALTH]
    return state


def test_a_switch_waits_for_standby_then_tries_the_target_once_counted() -> None:
    waiting = pending()
    assert (waiting.phase, waiting.target, waiting.attempts) == (Phase.PENDING, "1.0.1", 0)
    assert step(waiting, ev(EventKind.BUSY)) == (waiting, [A.WAIT_STANDBY])
    trying = trial()
    assert (trying.phase, trying.good, trying.attempts) == (Phase.TRIAL, "1.0.0", 1)


def test_a_healthy_target_becomes_good_and_the_outcome_is_numbered() -> None:
    done, actions = step(trial(), ev(EventKind.HEALTHY))
    assert actions == [A.COMMIT]
    assert done == SwitchState(
        phase=Phase.IDLE, good="1.0.1", last=Outcome.SWITCHED, last_version="1.0.1", serial=1
    )


def test_an_unhealthy_target_rolls_back_to_good_and_reports_why() -> None:
    rolling, actions = step(trial(), ev(EventKind.UNHEALTHY, reason="camera_not_delivering:a"))
    assert actions == [A.STOP, A.LINK_GOOD, A.START, A.RESTORED]
    assert (rolling.phase, rolling.good, rolling.reason) == (
        Phase.ROLLBACK,
        "1.0.0",
        "camera_not_delivering:a",
    )
    done, actions = step(rolling, ev(EventKind.RESTORED))
    assert actions == []
    assert done == SwitchState(
        phase=Phase.IDLE,
        good="1.0.0",
        last=Outcome.ROLLED_BACK,
        last_version="1.0.1",
        last_reason="camera_not_delivering:a",
        serial=1,
    )


def test_boot_counting_rolls_back_a_release_that_never_gets_judged() -> None:
    """Power cut after power cut during the trial: each boot counts a start, durably, before
    the service starts; once MAX_ATTEMPTS starts were spent the boot links the good release."""
    state = trial()
    for attempt in range(2, MAX_ATTEMPTS + 1):
        state, actions = step(state, ev(EventKind.BOOT))
        assert (state.phase, state.attempts, actions) == (Phase.TRIAL, attempt, [A.LINK_TARGET])
        assert state.start_counted
    state, actions = step(state, ev(EventKind.BOOT))
    assert (state.phase, state.reason) == (Phase.ROLLBACK, BOOT_ATTEMPTS_REASON)
    assert actions == [A.LINK_GOOD]  # the service starts after the boot step, on `good`
    assert step(state, ev(EventKind.BOOT)) == (state, [A.LINK_GOOD])  # a cut in the rollback
    _, actions = step(state, ev(EventKind.RESUME))  # the switch unit finishes and reports it
    assert actions == [A.STOP, A.LINK_GOOD, A.START, A.RESTORED]


def test_a_resumed_trial_counts_the_start_it_makes_and_judges_it() -> None:
    state, actions = step(trial(), ev(EventKind.RESUME))
    assert (state.attempts, actions) == (2, [A.LINK_TARGET, A.START, A.CHECK_HEALTH])
    state, _ = step(state, ev(EventKind.RESUME))
    state, actions = step(state, ev(EventKind.RESUME))
    assert (state.phase, state.reason) == (Phase.ROLLBACK, BOOT_ATTEMPTS_REASON)
    assert actions == [A.STOP, A.LINK_GOOD, A.START, A.RESTORED]


def test_a_resume_after_a_boot_judges_the_start_the_boot_counted() -> None:
    """One start, one count: the boot step counted the start systemd made after it."""
    booted, _ = step(trial(), ev(EventKind.BOOT))
    resumed, actions = step(booted, ev(EventKind.RESUME))
    assert (resumed.attempts, resumed.start_counted) == (2, False)
    assert actions == [A.LINK_TARGET, A.START, A.CHECK_HEALTH]
    again, _ = step(resumed, ev(EventKind.RESUME))  # the switcher died again: a new start
    assert again.attempts == 3


def test_a_cut_before_the_trial_boots_the_good_release_and_keeps_waiting() -> None:
    waiting = pending()
    assert step(waiting, ev(EventKind.BOOT)) == (waiting, [A.LINK_GOOD])
    assert step(waiting, ev(EventKind.RESUME)) == (waiting, [A.WAIT_STANDBY])
    assert step(IDLE, ev(EventKind.BOOT)) == (IDLE, [A.LINK_GOOD])
    assert step(IDLE, ev(EventKind.RESUME)) == (IDLE, [])


def test_every_other_pair_is_refused_and_changes_nothing() -> None:
    states = {
        Phase.IDLE: IDLE,
        Phase.PENDING: pending(),
        Phase.TRIAL: trial(),
        Phase.ROLLBACK: step(trial(), ev(EventKind.UNHEALTHY))[0],
    }
    refused = 0
    for phase, kind in itertools.product(Phase, EventKind):
        if (phase, kind) in TABLE:
            continue
        with pytest.raises(SwitchRefused, match="not allowed"):
            step(states[phase], ev(kind, version="9.9.9"))
        refused += 1
    assert refused == len(Phase) * len(EventKind) - len(TABLE) > 0
    with pytest.raises(SwitchRefused, match="running release"):
        step(IDLE, ev(EventKind.REQUEST, version="1.0.0"))


def test_the_state_file_round_trips_and_refuses_damage() -> None:
    rolling = step(trial(), ev(EventKind.UNHEALTHY, reason="api_not_answering"))[0]
    assert state_from_json(state_to_json(rolling)) == rolling
    for damaged in (
        b"",
        b"{",
        state_to_json(rolling).replace(b'"rollback"', b'"sideways"'),
        state_to_json(rolling).replace(b'"format":1', b'"format":2'),
        state_to_json(rolling)[:-1] + b',"extra":1}',
        state_to_json(rolling).replace(b'"start_counted":false', b'"start_counted":0'),
    ):
        with pytest.raises(SwitchStateError):
            state_from_json(damaged)


def status(**changes: object) -> dict[str, object]:
    camera = {"connected": True, "last_packet_age_s": 0.1}
    document: dict[str, object] = {
        "box": {"software_version": "1.0.1"},
        "state": "standby",
        "cameras": {"dashcam": camera, "bodycam": dict(camera)},
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (status(), ""),
        (status(state="postrecord"), ""),
        (status(box={"software_version": "1.0.0"}), "version_mismatch"),
        (status(state="stopped"), "recorder_not_running"),
        (status(cameras={}), "no_camera"),
        (
            status(cameras={"dashcam": {"connected": False, "last_packet_age_s": 0.1}}),
            "camera_not_delivering:dashcam",
        ),
        (
            status(cameras={"bodycam": {"connected": True, "last_packet_age_s": 30.0}}),
            "camera_not_delivering:bodycam",
        ),
        (
            status(cameras={"bodycam": {"connected": True, "last_packet_age_s": None}}),
            "camera_not_delivering:bodycam",
        ),
        ([], "status_unreadable"),
    ],
)
def test_health_is_the_version_the_recorder_and_every_camera(
    document: object, problem: str
) -> None:
    assert health_problem(document, "1.0.1") == problem
