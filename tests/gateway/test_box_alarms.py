"""The box's one Alarms object (common/alarms.py) as the box opens it: the store, the capture
service and the fleet sync share it; a sticky alarm (a refused fleet configuration) survives a
restart of the box in the same episode, the others start cleared; the audit log has one entry
per episode."""

from __future__ import annotations

import json
from pathlib import Path

from backoffice.keys import create_recording_keys
from config.local import load_config
from gateway.box import open_box
from tests.evidence_helpers import write_box_config


def alarm_events(state_dir: Path) -> list[tuple[str, str]]:
    lines = (state_dir / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return [(e["event"], e["fields"]["code"]) for e in entries if e["event"].startswith("alarm.")]


def test_a_sticky_alarm_outlives_a_restart_and_a_plain_one_does_not(tmp_path: Path) -> None:
    _, public = create_recording_keys(tmp_path / "keys")
    config = load_config(write_box_config(tmp_path / "box", public))

    box = open_box(config)
    box.alarms.raise_("fleet_config", "fleet configuration refused: bad signature", sticky=True)
    box.alarms.raise_("clock_offset", "the clock is 40 s off GPS time")
    assert box.store.alarms is box.alarms  # one owner for the store and everyone else
    box.close()

    again = open_box(config)
    try:
        assert again.alarms.snapshot() == {
            "fleet_config": "fleet configuration refused: bad signature"
        }
        again.alarms.raise_("fleet_config", "fleet configuration refused: bad signature")
        again.alarms.clear("fleet_config")
    finally:
        again.close()
    assert alarm_events(config.state_dir) == [
        ("alarm.raised", "fleet_config"),
        ("alarm.raised", "clock_offset"),
        ("alarm.cleared", "fleet_config"),
    ]
    third = open_box(config)
    try:
        assert third.alarms.snapshot() == {}
    finally:
        third.close()
