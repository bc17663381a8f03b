"""The local configuration file: closed schema, ranges, messages that name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.local import ConfigError, load_config, parse_config, upload_class_for

MINIMAL = {"box": {"recipient_keys": ["recording.pub"]}}


def test_defaults_are_the_strictest_protocol_values() -> None:
    config = parse_config(MINIMAL, "box.toml")
    assert config.storage.retention_days == 28  # RULES S4: at most 28 days
    assert config.storage.card_reserve_bytes >= 4 * 1024 * 1024


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "box.toml"
    path.write_text('[box]\nrecipient_keys = ["k.pub"]\ncard_dir = "card"\n')
    config = load_config(path)
    assert config.card_dir == tmp_path / "card"
    assert config.recipient_key_paths == (tmp_path / "k.pub",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL, "extra": {}}, "unknown section [extra]"),
        ({"box": {"recipient_keys": ["k"], "colour": "red"}}, "unknown key box.colour"),
        ({"box": {"recipient_keys": []}}, "box.recipient_keys needs one or two"),
        ({"box": {"recipient_keys": ["a", "b", "c"]}}, "box.recipient_keys needs one or two"),
        ({**MINIMAL, "storage": {"retention_days": 40}}, "storage.retention_days = 40"),
        ({**MINIMAL, "storage": {"retention_days": "28"}}, "must be int, not str"),
        ({**MINIMAL, "storage": {"retention_days": True}}, "must be int, not bool"),
        ({**MINIMAL, "triggers": {"lights": {"may_stop": 1}}}, "must be bool, not int"),
        ({**MINIMAL, "cameras": [{"name": "a", "kind": "webcam"}]}, "cameras.kind 'webcam'"),
        ({**MINIMAL, "cameras": [{"kind": "synthetic"}]}, "cameras.name is required"),
        ({**MINIMAL, "cameras": [{"name": "a"}, {"name": "a"}]}, "appears twice"),
        ({**MINIMAL, "triggers": {"speed": {"cameras": ["roof"]}}}, "unknown camera roof"),
        ({**MINIMAL, "recording": {"prerecord_s": 600}}, "recording.prerecord_s = 600"),
        ({**MINIMAL, "storage": {"card_reserve_bytes": 0}}, "storage.card_reserve_bytes = 0"),
        (
            {
                **MINIMAL,
                "storage": {"card_reserve_bytes": 8 << 20, "min_free_to_start_bytes": 8 << 20},
            },
            "min_free_to_start_bytes must exceed",
        ),
        ({"box": "not a table"}, "[box] must be a table"),
    ],
)
def test_bad_values_name_file_and_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "/etc/mvb/box.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("/etc/mvb/box.toml: ")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[box\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_cameras_triggers_and_recording_policy(tmp_path: Path) -> None:
    path = tmp_path / "box.toml"
    path.write_text(
        """
[box]
recipient_keys = ["k.pub"]
[recording]
prerecord_s = 60
[[cameras]]
name = "dashcam"
kind = "rtsp_pull"
url = "rtsp://127.0.0.1:8554/cam"
rtsp_transport = "udp"
serial = "DC-1"
[[cameras]]
name = "bodycam"
kind = "ts_listen"
url = "tcp://127.0.0.1:9000"
[triggers.lights]
postrecord_s = 60
may_stop = true
[triggers.speed]
cameras = ["dashcam"]
"""
    )
    config = load_config(path)
    assert config.recording.prerecord_s == 60.0
    assert [c.name for c in config.cameras] == ["dashcam", "bodycam"]
    assert config.cameras[0].rtsp_transport == "udp"
    assert config.triggers["lights"].may_stop is True
    assert config.triggers["speed"].cameras == ("dashcam",)
    assert config.triggers["speed"].postrecord_s == 30.0


def test_upload_class_per_trigger_defaults_crash_to_p0() -> None:
    config = parse_config(
        {**MINIMAL, "triggers": {"siren": {"upload_class": "P2"}, "lights": {}}}, "box.toml"
    )
    assert upload_class_for("siren", config.triggers) == "P2"
    assert upload_class_for("lights", config.triggers) == "P1"
    assert upload_class_for("crash", config.triggers) == "P0"
    assert upload_class_for("officer", config.triggers) == "P1"
    with pytest.raises(ConfigError, match=r"triggers\.siren\.upload_class"):
        parse_config({**MINIMAL, "triggers": {"siren": {"upload_class": "P7"}}}, "box.toml")


PIN = "sha256/" + "A" * 43 + "="
UPLINK = {
    "enabled": True,
    "host": "127.0.0.1",
    "server_name": "backoffice.test",
    "ca_file": "ca.crt",
    "client_cert_file": "client.crt",
    "client_key_file": "client.key",
    "pins": [PIN],
}
WIFI = {"name": "wlan0", "cost_class": "wifi", "interface": "wlan0"}


def test_an_enabled_uplink_with_links_parses() -> None:
    lte = {"name": "wwan0", "cost_class": "cellular", "monthly_cap_bytes": 10, "billing_day": 15}
    config = parse_config({**MINIMAL, "uplink": UPLINK, "links": [WIFI, lte]}, "box.toml")
    assert config.uplink.pins == (PIN,)
    assert [link.name for link in config.links] == ["wlan0", "wwan0"]
    assert config.links[1].billing_day == 15


@pytest.mark.parametrize(
    ("uplink", "links", "message"),
    [
        ({**UPLINK, "pins": []}, [WIFI], "uplink.pins needs"),
        ({**UPLINK, "pins": ["md5/abc"]}, [WIFI], "must start with 'sha256/'"),
        ({**UPLINK, "pins": ["sha256/AAAA"]}, [WIFI], "a SHA-256 is 32"),
        ({**UPLINK, "ca_file": ""}, [WIFI], "uplink.ca_file is required"),
        (UPLINK, [], "no \\[\\[links\\]\\]"),
        (UPLINK, [WIFI, WIFI], "links.name must be set and unique"),
        (UPLINK, [{**WIFI, "cost_class": "satellite"}], "wifi or cellular"),
        (UPLINK, [{**WIFI, "billing_day": 31}], "links.billing_day = 31"),
        (UPLINK, [{**WIFI, "monthly_cap_bytes": 5, "p0_reserve_bytes": 6}], "exceeds the cap"),
        ({**UPLINK, "verify": False}, [WIFI], "unknown key uplink.verify"),
    ],
)
def test_an_incomplete_or_unpinned_uplink_is_refused(
    uplink: dict[str, object], links: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, "uplink": uplink, "links": links}, "box.toml")
