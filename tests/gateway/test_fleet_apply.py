"""Applying fleet documents: validate, slot, hand out, health-check, roll back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from config.fleet_targets import FleetDocument
from config.local import LocalConfig, parse_config
from gateway.fleet_apply import ConfigSlots, FleetApplier

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
    def __init__(self) -> None:
        self.reason: str | None = None

    async def __call__(self, _effective: LocalConfig) -> str | None:
        return self.reason


@pytest.fixture
def rig(tmp_path: Path) -> tuple[FleetApplier, RecordingTarget, Health, list[dict[str, Any]]]:
    target, health, audit = RecordingTarget(), Health(), []
    applier = FleetApplier(
        parse_config(LOCAL, "box.toml"),
        target,
        ConfigSlots(tmp_path / "state"),
        [health],
        settle_s=0,
        audit=lambda event, **fields: audit.append({"event": event, **fields}),
    )
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
    health.reason = "camera(s) not delivering: dashcam"
    outcome = await applier.apply(document("[recording]\nprerecord_s = 120.0\n", 2))
    assert not outcome.applied
    assert outcome.reason == "rolled back: camera(s) not delivering: dashcam"
    assert target.handed == [60.0, 120.0, 60.0], "handed out, checked, handed back"
    assert applier.effective.recording.prerecord_s == 60.0
    assert applier.slots.current() is not None
    assert applier.slots.current()[0] == 1  # type: ignore[index]
    assert audit[-1]["event"] == "config.refused"


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
