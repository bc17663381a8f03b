"""Settings inherit (issue 15, item 3): a `[triggers.X]` table overrides only the keys it names,
in a local file and in a fleet document laid over it; the officer's stop has a post-record of
its own (item 5), zero unless the municipality sets one; who asked is named by channel."""

from __future__ import annotations

from typing import Any

import pytest

from config.fleet_schema import apply_fleet_document
from config.local import ConfigError, LocalConfig, parse_config
from gateway.capture.observing import origin_of
from gateway.policy import recorder_policy
from gateway.recorder import Event, EventKind
from gateway.watchers import with_channel

CAMERAS = [
    {"name": "dashcam", "kind": "rtsp_pull", "url": "rtsp://10.0.0.2/cam", "auth": "none"},
    {"name": "bodycam", "kind": "rtsp_pull", "url": "rtsp://10.0.0.3/cam", "auth": "none"},
]


def local(**sections: Any) -> LocalConfig:
    raw = {"box": {"recipient_keys": ["recording.pub"]}, "cameras": CAMERAS, **sections}
    return parse_config(raw, "box.toml")


def test_a_trigger_table_without_postrecord_keeps_the_recording_sections() -> None:
    config = local(
        recording={"postrecord_s": 10.0},
        triggers={"lights": {"may_stop": True}, "siren": {"postrecord_s": 45}},
    )
    policy = recorder_policy(config)
    assert policy.for_source("lights").postrecord_s == 10.0, "was 30 whatever [recording] said"
    assert policy.for_source("lights").may_stop is True
    assert policy.for_source("siren").postrecord_s == 45.0, "a key the table names wins"
    assert policy.for_source("crash").postrecord_s == 10.0, "no table: the default"


def test_a_fleet_document_changes_only_the_keys_its_trigger_table_names() -> None:
    config = local(
        recording={"postrecord_s": 10.0},
        triggers={"lights": {"postrecord_s": 60, "cameras": ["dashcam"]}, "speed": {}},
    )
    text = """
[recording]
postrecord_s = 20.0
[triggers.lights]
may_stop = true
[triggers.siren]
upload_class = "P0"
"""
    effective = apply_fleet_document(config, text, "fleet")
    lights = effective.triggers["lights"]
    assert (lights.postrecord_s, lights.cameras, lights.may_stop) == (60.0, ("dashcam",), True)
    policy = recorder_policy(effective)
    assert policy.for_source("lights").cameras == frozenset({"dashcam"})
    assert policy.for_source("speed").postrecord_s == 20.0, "the document's [recording] reaches it"
    assert policy.for_source("siren").postrecord_s == 20.0, "a new table starts from the defaults"
    assert effective.triggers["siren"].upload_class == "P0"


def test_a_trigger_postrecord_is_checked_like_any_other_number() -> None:
    with pytest.raises(ConfigError, match=r"triggers\.postrecord_s = 500"):
        local(triggers={"lights": {"postrecord_s": 500}})
    with pytest.raises(ConfigError, match=r"triggers\.postrecord_s must be float, not str"):
        local(triggers={"lights": {"postrecord_s": "30"}})
    with pytest.raises(ConfigError, match=r"triggers\.postrecord_s must be float, not str"):
        apply_fleet_document(local(), '[triggers.lights]\npostrecord_s = "30"', "fleet")


def test_the_officers_stop_has_no_postrecord_unless_the_policy_sets_one() -> None:
    assert recorder_policy(local()).officer_stop_postrecord_s == 0.0
    config = local(recording={"officer_stop_postrecord_s": 5})
    assert recorder_policy(config).officer_stop_postrecord_s == 5.0
    text = "[recording]\nofficer_stop_postrecord_s = 8.0\n"
    assert (
        recorder_policy(apply_fleet_document(local(), text, "fleet")).officer_stop_postrecord_s
        == 8.0
    )
    with pytest.raises(ConfigError, match=r"recording\.officer_stop_postrecord_s = 121"):
        local(recording={"officer_stop_postrecord_s": 121})


def test_an_input_event_is_named_by_its_channel() -> None:
    """R3 (issue 15, item 5): an input line whose source is the officer is the officer's button;
    every other input (lights, crash, speed) is an input; neither has an account."""
    button = with_channel(Event(EventKind.STOP, 1, "officer", {"input": "officer", "value": 0}))
    assert button.facts == {"input": "officer", "value": 0, "channel": "button", "account": None}
    lights = with_channel(Event(EventKind.TRIGGER, 1, "lights"))
    assert (lights.facts["channel"], lights.facts["account"]) == ("input", None)
    assert origin_of(lights.facts) == {"channel": "input", "account": None}
    assert origin_of({"channel": 7, "account": "a"}) == {"account": "a"}, "only text is audited"
