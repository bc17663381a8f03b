"""The rollout's state machine as a table (backoffice/rollout.py): every allowed step, every
other step refused, and the record's file."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest

from backoffice.rollout import (
    TRANSITIONS,
    Event,
    Phase,
    Rollout,
    RolloutRefused,
    RolloutStateDamaged,
    Signed,
    check_version,
    parse_rollout,
    release_targets,
)


def rollout(phase: Phase = Phase.PLANNED) -> Rollout:
    return Rollout(
        rollout_id="1.4.0-h2o",
        version="1.4.0",
        previous_version="1.3.0",
        group="h2o",
        targets=("MVB-0001", "MVB-0002", "MVB-0003"),
        canary=("MVB-0002",),
        canary_percent=34,
        phase=phase,
        started_at_ms=1_000,
    )


@pytest.mark.parametrize(("phase", "event"), sorted(TRANSITIONS))
def test_every_step_of_the_table_leads_where_the_table_says(phase: Phase, event: Event) -> None:
    signed = (Signed("boxes/MVB-0002.toml", 7, ("MVB-0002",), "1.4.0"),)
    after = rollout(phase).after(event, 5_000, signed)
    assert after.phase == TRANSITIONS[(phase, event)]
    assert after.history[-1].event == event
    assert after.history[-1].at_ms == 5_000
    assert after.signed == signed


REFUSED = [
    pair for pair in itertools.product(Phase, Event) if pair not in TRANSITIONS
]  # fmt: skip


@pytest.mark.parametrize(("phase", "event"), REFUSED)
def test_every_other_step_is_refused_and_changes_nothing(phase: Phase, event: Event) -> None:
    before = rollout(phase)
    with pytest.raises(RolloutRefused, match=f"is {phase.value}: cannot {event.value}"):
        before.after(event, 5_000)
    assert before.phase == phase
    assert before.history == ()


def test_the_table_holds_the_intended_shape() -> None:
    assert len(REFUSED) + len(TRANSITIONS) == len(Phase) * len(Event)
    assert not [pair for pair in TRANSITIONS if pair[0] == Phase.ROLLED_BACK], "final"
    assert (Phase.PAUSED, Event.PROMOTE) in REFUSED, "a pause is lifted only by resume"
    with pytest.raises(RolloutRefused, match="resume it first"):
        rollout(Phase.PAUSED).after(Event.PROMOTE, 1)


def test_a_whole_rollout_canary_pause_resume_promote_done() -> None:
    r = rollout()
    for event in (Event.START_CANARY, Event.PAUSE, Event.RESUME, Event.PROMOTE, Event.COMPLETE):
        r = r.after(event, 2_000)
    assert r.phase == Phase.DONE
    assert [s.phase for s in r.history] == [
        Phase.CANARY, Phase.PAUSED, Phase.CANARY, Phase.PROMOTED, Phase.DONE,
    ]  # fmt: skip
    assert not r.active
    assert r.after(Event.ROLLBACK, 3_000).phase == Phase.ROLLED_BACK


def test_the_serial_for_a_box_is_the_newest_pinning_the_version() -> None:
    r = rollout().after(
        Event.START_CANARY, 1, (Signed("boxes/MVB-0002.toml", 7, ("MVB-0002",), "1.4.0"),)
    )
    assert r.serial_for("MVB-0002") == 7
    assert r.serial_for("MVB-0001") is None
    r = r.after(Event.PROMOTE, 2, (Signed("groups/h2o.toml", 9, r.targets, "1.4.0"),))
    assert (r.serial_for("MVB-0001"), r.serial_for("MVB-0002")) == (9, 9)
    r = r.after(Event.ROLLBACK, 3, (Signed("groups/h2o.toml", 10, r.targets, "1.3.0"),))
    assert r.serial_for("MVB-0001") == 9, "a rollback's document pins another version"


def test_the_record_reads_back_as_written() -> None:
    r = rollout().after(
        Event.START_CANARY, 9, (Signed("boxes/MVB-0002.toml", 7, ("MVB-0002",), "1.4.0"),)
    )
    assert parse_rollout(r.to_json(), "r.json") == r


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(format=2),
        lambda d: d.update(extra=1),
        lambda d: d.pop("phase"),
        lambda d: d.update(phase="half"),
        lambda d: d.update(version="one"),
        lambda d: d.update(started_at_ms=True),
        lambda d: d.update(targets="MVB-0001"),
        lambda d: d.update(rollout_id="../x"),
    ],
)
def test_a_damaged_record_is_refused(damage: object) -> None:
    document = json.loads(rollout().to_json())
    damage(document)  # type: ignore[operator]
    with pytest.raises(RolloutStateDamaged, match="not a rollout record"):
        parse_rollout(json.dumps(document).encode(), "r.json")
    with pytest.raises(RolloutStateDamaged):
        parse_rollout(b"\x00garbage", "r.json")


@pytest.mark.parametrize("version", ["1.4.0", "2", "1.4.0rc1", "1.4.0.post1", "1.4.0.dev3"])
def test_versions_are_pep_440(version: str) -> None:
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["", "v1.4", "1.4.0-beta", "1.4.0\n", '1"', "01.2"])
def test_other_versions_are_refused(version: str) -> None:
    with pytest.raises(RolloutRefused, match="PEP 440"):
        check_version(version)


def test_a_configuration_rollouts_record_reads_back_and_needs_its_documents() -> None:
    config = Rollout(
        "config-0123456789ab-h2o", "config-0123456789ab", "config-ba9876543210", "h2o",
        ("MVB-0001",), (), 0, Phase.PLANNED, 1, kind="config", documents=("new", "old"),
    )  # fmt: skip
    assert parse_rollout(config.to_json(), "r.json") == config
    document = json.loads(config.to_json())
    document["documents"] = []
    with pytest.raises(RolloutStateDamaged):
        parse_rollout(json.dumps(document).encode(), "r.json")
    document = json.loads(config.to_json())
    document["kind"] = "firmware"
    with pytest.raises(RolloutStateDamaged):
        parse_rollout(json.dumps(document).encode(), "r.json")
    with pytest.raises(RolloutRefused):
        check_version("config-0123456789ab")  # a label only for a configuration


def test_the_page_sees_the_version_each_group_is_being_moved_to() -> None:
    canary = rollout(Phase.CANARY)
    done = replace(rollout(Phase.DONE), rollout_id="1.3.0-wk", group="wk", version="1.3.0")
    boxes_only = replace(rollout(Phase.PROMOTED), rollout_id="1.5.0-x", group=None, version="1.5.0")
    config = replace(rollout(Phase.PAUSED), rollout_id="c-ams", group="ams", kind="config")
    newer = replace(
        rollout(Phase.PROMOTED), rollout_id="1.4.1-h2o", version="1.4.1", started_at_ms=2_000
    )
    assert release_targets([canary, done, boxes_only, config]) == {"h2o": "1.4.0"}
    assert release_targets([newer, canary]) == {"h2o": "1.4.1"}
    assert release_targets([rollout(Phase.ROLLED_BACK)]) == {}
