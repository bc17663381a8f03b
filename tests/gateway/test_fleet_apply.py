"""Applying fleet documents: validate, slot, hand out, health-check, roll back; the box's state
defers a document instead of refusing it; a document's holds hold at once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from common.passwords import hash_password
from config.fleet_targets import FleetDocument
from config.local import LocalConfig, parse_config
from gateway.fleet_apply import ConfigSlots, FleetApplier, HealthCheck

LOCAL = {"box": {"recipient_keys": ["recording.pub"]}}


def document(text: str, serial: int) -> FleetDocument:
    data = text.encode()
    return FleetDocument(
        target_path="boxes/MVB-1.toml",
        config_serial=serial,
        sha256=hashlib.sha256(data).hexdigest(),
        boxes=("MVB-1",),
        groups=(),
        document=data,
    )


class RecordingTarget:
    """Stands in for the running box: remembers what it was handed (pure logic under test)."""

    def __init__(self) -> None:
        self.handed: list[float] = []

    def hand_out(self, effective: LocalConfig) -> None:
        self.handed.append(effective.recording.prerecord_s)


class Health:
    """A check the test steers: `reason` fails it always (the box's state), `bad_prerecord_s`
    fails it only for a configuration with that pre-record (the document's fault)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.bad_prerecord_s: float | None = None
        self.calls = 0

    async def __call__(self, effective: LocalConfig) -> str | None:
        self.calls += 1
        if effective.recording.prerecord_s == self.bad_prerecord_s:
            return "camera(s) not delivering: dashcam"
        return self.reason


class Holds:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, dict[str, str]]] = []

    async def fleet_named(self, config_serial: int, grounds: Mapping[str, str]) -> None:
        self.calls.append(("named", config_serial, dict(grounds)))

    async def fleet_applied(self, config_serial: int, grounds: Mapping[str, str]) -> None:
        self.calls.append(("applied", config_serial, dict(grounds)))


def applier_with(
    tmp_path: Path, checks: list[HealthCheck], audit: list[dict[str, Any]], holds: Holds | None
) -> tuple[FleetApplier, RecordingTarget]:
    target = RecordingTarget()
    applier = FleetApplier(
        parse_config(LOCAL, "box.toml"),
        target,
        ConfigSlots(tmp_path / "state"),
        checks,
        settle_s=0,
        audit=lambda event, **fields: audit.append({"event": event, **fields}),
        holds=holds,
    )
    return applier, target


@pytest.fixture
def rig(tmp_path: Path) -> tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]]:
    health, audit = Health(), list[dict[str, Any]]()
    applier, target = applier_with(tmp_path, [HealthCheck("health", health)], audit, None)
    return applier, target, health, audit


async def test_a_good_document_is_applied_and_becomes_current(
    rig: tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]], tmp_path: Path
) -> None:
    applier, target, _health, audit = rig
    outcome = await applier.apply(document("[recording]\nprerecord_s = 60.0\n", 7))
    assert outcome.applied
    assert target.handed == [60.0]
    assert applier.effective.recording.prerecord_s == 60.0
    assert applier.slots.current() == (7, "[recording]\nprerecord_s = 60.0\n")
    assert audit == [{"event": "config.applied", "config_serial": 7, "sha256": outcome.sha256}]
    assert (tmp_path / "state" / "config" / "serial-7.toml").stat().st_mode & 0o777 == 0o600


async def test_a_failed_health_check_rolls_back_to_the_last_good(
    rig: tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]],
) -> None:
    applier, target, health, audit = rig
    assert (await applier.apply(document("[recording]\nprerecord_s = 60.0\n", 1))).applied
    health.bad_prerecord_s = 120.0  # the document stops the camera; the previous one did not
    outcome = await applier.apply(document("[recording]\nprerecord_s = 120.0\n", 2))
    assert not outcome.applied
    assert not outcome.transient
    assert outcome.reason == "rolled back: camera(s) not delivering: dashcam"
    assert target.handed == [60.0, 120.0, 60.0], "handed out, checked, handed back"
    assert applier.effective.recording.prerecord_s == 60.0
    assert applier.slots.current() is not None
    assert applier.slots.current()[0] == 1  # type: ignore[index]
    assert audit[-1]["event"] == "config.refused"


async def test_a_check_failing_before_the_document_defers_it_untouched_and_once_audited(
    rig: tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]],
) -> None:
    applier, target, health, audit = rig
    health.reason = "camera(s) not delivering: dashcam"  # the box's state, whatever it runs
    doc = document("[recording]\nprerecord_s = 60.0\n", 3)
    first, second = await applier.apply(doc), await applier.apply(doc)
    assert first == second
    assert (first.applied, first.transient) == (False, True)
    assert first.reason == "deferred: camera(s) not delivering: dashcam"
    assert await applier.deferral_reason() == "camera(s) not delivering: dashcam"
    assert target.handed == [], "a document that cannot be judged is not handed out"
    assert [entry["event"] for entry in audit] == ["config.deferred"]
    health.reason = None
    assert await applier.deferral_reason() is None
    assert (await applier.apply(doc)).applied
    assert target.handed == [60.0]


async def test_a_failure_that_stays_with_the_previous_configuration_is_the_box_s(
    rig: tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]],
) -> None:
    applier, target, _health, _audit = rig

    class Flaky:  # healthy until the document is out, then down whatever runs
        handed = target.handed

        async def __call__(self, _effective: LocalConfig) -> str | None:
            return "camera(s) not delivering: dashcam" if self.handed else None

    applier.health_checks = [HealthCheck("flaky", Flaky())]
    outcome = await applier.apply(document("[recording]\nprerecord_s = 60.0\n", 4))
    assert (outcome.applied, outcome.transient) == (False, True)
    assert outcome.reason == "deferred: camera(s) not delivering: dashcam (before it too)"
    assert target.handed == [60.0, applier.local.recording.prerecord_s], "handed back"


async def test_a_skipped_check_does_not_judge_a_document_while_it_fails_anyway(
    tmp_path: Path,
) -> None:
    unreachable, audit = Health(), list[dict[str, Any]]()
    unreachable.reason = "the back office is not reachable on any link"
    check = HealthCheck("back_office_reachable", unreachable, if_failing_before="skip")
    applier, target = applier_with(tmp_path, [check], audit, None)
    outcome = await applier.apply(document("[recording]\nprerecord_s = 60.0\n", 5))
    assert outcome.applied, outcome.reason
    assert unreachable.calls == 1, "asked before, not after: it says nothing about the document"
    assert target.handed == [60.0]


async def test_a_document_s_holds_hold_at_once_and_are_replaced_when_it_is_applied(
    tmp_path: Path,
) -> None:
    health, audit, holds = Health(), list[dict[str, Any]](), Holds()
    applier, _ = applier_with(tmp_path, [HealthCheck("health", health)], audit, holds)
    rid = "ab" * 16
    text = f'[[holds]]\nrecording_id = "{rid}"\nground = "police_demand"\n'
    health.reason = "camera(s) not delivering: dashcam"
    assert (await applier.apply(document(text, 6))).transient
    assert holds.calls == [("named", 6, {rid: "police_demand"})], "held although deferred"
    health.reason = None
    assert (await applier.apply(document(text, 6))).applied
    assert holds.calls[1:] == [
        ("named", 6, {rid: "police_demand"}),
        ("applied", 6, {rid: "police_demand"}),
    ]
    bad = await applier.apply(document(f'[[holds]]\nrecording_id = "{rid}"\nground = "x"\n', 7))
    assert bad.reason is not None
    assert "holds[0].ground must be one of" in bad.reason
    assert len(holds.calls) == 3, "an invalid document holds nothing"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[recording]\nprerecord_s = 999\n", "is outside"),
        ('[box]\ncard_dir = "/tmp/elsewhere"\n', "cannot be set by a fleet document"),
        ("not toml at all [", "not valid TOML"),
    ],
)
async def test_a_document_outside_the_schema_changes_nothing(
    rig: tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]],
    text: str,
    reason: str,
) -> None:
    applier, target, _health, audit = rig
    outcome = await applier.apply(document(text, 3))
    assert not outcome.applied
    assert outcome.reason is not None
    assert reason in outcome.reason
    assert target.handed == []
    assert applier.slots.current() is None
    assert json.dumps(audit[-1]).count("config.refused") == 1


async def test_undecodable_bytes_are_refused(
    rig: tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]],
) -> None:
    applier, target, _health, _audit = rig
    bad = FleetDocument("boxes/MVB-1.toml", 4, "0" * 64, ("MVB-1",), (), b"\xff\xfe[recording]")
    outcome = await applier.apply(bad)
    assert not outcome.applied
    assert target.handed == []


@pytest.mark.parametrize(
    ("boxes", "groups", "applied"),
    [
        (("MVB-UNPAIRED",), (), True),
        (("MVB-UNPAIRED", "MVB-2"), (), False),
        (("MVB-UNPAIRED",), ("zuid",), False),
    ],
)
async def test_accounts_come_only_from_a_document_for_this_box_alone(
    rig: tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]],
    boxes: tuple[str, ...],
    groups: tuple[str, ...],
    applied: bool,
) -> None:
    """Password hashes reach only the box a document is for (issue 13, item 4): the repository
    signs no other, and a box takes no other."""
    applier, target, _health, _audit = rig
    hashed = hash_password("a long pass phrase")
    text = f'[[accounts]]\nname = "boa.jansen"\nrole = "officer"\npassword_hash = "{hashed}"\n'
    data = text.encode()
    sha256 = hashlib.sha256(data).hexdigest()
    path = "boxes/MVB-UNPAIRED.toml"
    outcome = await applier.apply(FleetDocument(path, 5, sha256, boxes, groups, data))
    assert outcome.applied is applied
    if not applied:
        assert outcome.reason is not None
        assert "may only come in a document for this box alone" in outcome.reason
        assert target.handed == []
