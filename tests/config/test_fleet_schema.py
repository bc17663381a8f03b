"""Fleet documents: policy from the fleet, physical facts from the box; one schema for both."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.fleet_schema import MAX_DOCUMENT_BYTES, apply_fleet_document
from config.local import ConfigError, LocalConfig, load_config, parse_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
LOCAL = {
    "box": {"recipient_keys": ["recording.pub"], "card_dir": "/media/card"},
    "cameras": [
        {"name": "dashcam", "kind": "rtsp_pull", "url": "rtsp://10.0.0.2/cam", "auth": "none"}
    ],
    "links": [{"name": "wwan0", "cost_class": "cellular", "interface": "wwan0"}],
}


@pytest.fixture
def local() -> LocalConfig:
    return parse_config(LOCAL, "box.toml")


@pytest.mark.parametrize(
    ("example", "prerecord_s"),
    [("borsele.toml", 30.0), ("h2o.toml", 60.0), ("westerkwartier.toml", 120.0)],
)
def test_each_municipality_example_applies(
    local: LocalConfig, example: str, prerecord_s: float
) -> None:
    text = (CONFIG_DIR / "examples" / example).read_text()
    effective = apply_fleet_document(local, text, example)
    assert effective.recording.prerecord_s == prerecord_s
    assert effective.storage.retention_days == 28
    assert effective.triggers["crash"].upload_class == "P0"
    assert effective.box == local.box, "the document never touches the box's own facts"
    assert effective.cameras == local.cameras


def test_the_shipped_defaults_file_is_the_strictest_schema_default() -> None:
    config = load_config(CONFIG_DIR / "defaults" / "box.toml")
    assert config.recording.prerecord_s == 30.0
    assert config.storage.retention_days == 28
    assert config.box.device_serial == "MVB-UNPAIRED"


def test_a_document_tunes_a_link_the_box_has(local: LocalConfig) -> None:
    text = """
[[links]]
name = "wwan0"
monthly_cap_bytes = 10_000_000_000
billing_day = 15
p0_reserve_bytes = 1_000_000_000
"""
    [link] = apply_fleet_document(local, text, "fleet").links
    assert (link.monthly_cap_bytes, link.billing_day) == (10_000_000_000, 15)
    assert link.interface == "wwan0", "the interface stays the box's"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[box]\ncard_dir = "/tmp"', r"\[box\] cannot be set by a fleet document"),
        ('[[cameras]]\nname = "x"', r"\[cameras\] cannot be set"),
        ("[uplink]\npins = []", "uplink.pins is not a fleet setting"),
        ('[uplink]\nhost = "evil.example"', "uplink.host is not a fleet setting"),
        ('[[links]]\nname = "wwan0"\ninterface = "eth9"', "links.interface is not a fleet"),
        ('[[links]]\nname = "wlan7"\nbilling_day = 3', "'wlan7' is not a link of this box"),
        ("[recording]\nprerecord_s = 500", r"recording.prerecord_s = 500.0 is outside 5\.\.120"),
        ("[recording]\nprerecord_seconds = 60", "recording.prerecord_seconds is not a fleet"),
        ("[storage]\nretention_days = 29", r"storage.retention_days = 29 is outside 1\.\.28"),
        ('[triggers.siren]\ncameras = ["roof"]', "unknown camera roof"),
        ("[recording\nprerecord_s = 60", "not valid TOML"),
        ('[[links]]\nname = "wwan0"\np0_reserve_bytes = 5\nmonthly_cap_bytes = 4', "exceeds"),
    ],
)
def test_a_document_outside_the_schema_is_refused(
    local: LocalConfig, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_fleet_document(local, text, "fleet")


def test_an_oversized_document_is_refused(local: LocalConfig) -> None:
    text = "# padding\n" * (MAX_DOCUMENT_BYTES // 10 + 1)
    with pytest.raises(ConfigError, match="at most"):
        apply_fleet_document(local, text, "fleet")
