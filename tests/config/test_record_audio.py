"""Issue 15 item 1: `[recording] record_audio`, on by default, set per municipality."""

from __future__ import annotations

import pytest

from config.fleet_schema import apply_fleet_document
from config.local import ConfigError, parse_config

BOX = {"box": {"recipient_keys": ["recording.pub"]}}


def test_sound_is_recorded_unless_the_policy_says_otherwise() -> None:
    assert parse_config(BOX, "box.toml").recording.record_audio is True
    off = parse_config({**BOX, "recording": {"record_audio": False}}, "box.toml")
    assert off.recording.record_audio is False


def test_record_audio_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="record_audio"):
        parse_config({**BOX, "recording": {"record_audio": "no"}}, "box.toml")


def test_a_municipality_turns_sound_off_by_fleet_document() -> None:
    text = '[fleet]\nname = "X"\n[recording]\nrecord_audio = false\n'
    effective = apply_fleet_document(parse_config(BOX, "box.toml"), text, "x.toml")
    assert effective.recording.record_audio is False
