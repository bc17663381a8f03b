"""The local configuration file: closed schema, ranges, messages that name the key and file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from config.local import ConfigError, LocalConfig, load_config, parse_config, parse_section
from config.local_sections import UplinkSection, upload_class_for
from gateway.uplink_from_config import (
    NO_SERVICE_ENDPOINT,
    NOT_PAIRED,
    PairedUplink,
    UplinkNotStarted,
    back_office,
    uplink_from_pairing,
    uplink_service,
)
from protocol.pairing_messages import ServiceEndpoint
from storage.envelope import RecipientPrivateKey
from tests.capture_helpers import store_on
from transport.connect import BackOffice
from transport.pinning import PinSet

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
        ({"box": {"recipient_keys": []}}, "box.recipient_keys needs one to eight"),
        ({"box": {"recipient_keys": list("abcdefghi")}}, "box.recipient_keys needs one to eight"),
        ({"box": {"recipient_keys": ["a", "a"]}}, "box.recipient_keys lists a key file twice"),
        (
            {"box": {"recipient_keys": ["a", "b"], "recipient_threshold": 3}},
            "box.recipient_threshold = 3 exceeds the 2 key(s) of box.recipient_keys",
        ),
        (
            {"box": {"recipient_keys": ["a"], "recipient_threshold": 0}},
            "box.recipient_threshold = 0 is outside 1..8",
        ),
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
auth = "none"
rtsp_transport = "udp"
serial = "DC-1"
[[cameras]]
name = "bodycam"
kind = "ts_listen"
listen_address = "192.168.50.1"
listen_port = 9000
tls_cert_file = "box-cameras.crt"
tls_key_file = "box-cameras.key"
camera_ca_file = "camera-ca.crt"
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
    assert config.triggers["speed"].postrecord_s is None, "unset: [recording]'s (inherited)"
    assert config.triggers["lights"].postrecord_s == 60.0


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
        ({**UPLINK, "pins": []}, [WIFI], "uplink.pins is required when uplink.ca_file is set"),
        ({**UPLINK, "pins": [PIN] * 5}, [WIFI], "uplink.pins needs"),
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


# --- [uplink] from the local file and from pairing (gateway/uplink_from_config.py) ----------------

PAIRING = Path("/var/lib/mvb/pairing")
PAIRED_PIN = "sha256/" + "B" * 43 + "="
SERVICE = ServiceEndpoint.of("bo.borsele.example:8444", "bo.borsele.example", 8445)
PAIRED = PairedUplink(
    ca_file=PAIRING / "ca.crt",
    client_cert_file=PAIRING / "client.crt",
    client_key_file=PAIRING / "client.key",
    pins=(PAIRED_PIN,),
    service=SERVICE,
)
PAIRED_TLS_FILES = (PAIRING / "ca.crt", PAIRING / "client.crt", PAIRING / "client.key")
CREDENTIALS = {key: UPLINK[key] for key in ("ca_file", "client_cert_file", "client_key_file")}


def uplink_config(**uplink: object) -> LocalConfig:
    """A box whose [uplink] is on with exactly the keys given, read from /etc/mvb/box.toml."""
    raw = {**MINIMAL, "uplink": {"enabled": True, **uplink}, "links": [WIFI]}
    return parse_config(raw, "/etc/mvb/box.toml")


def resolved(config: LocalConfig, paired: PairedUplink | None) -> BackOffice:
    office = uplink_from_pairing(config, paired)
    assert isinstance(office, BackOffice), office
    return office


def tls_files(office: BackOffice) -> tuple[Path, Path, Path]:
    return office.tls.ca_file, office.tls.client_cert_file, office.tls.client_key_file


def test_an_enabled_uplink_may_leave_everything_to_pairing() -> None:
    config = uplink_config()
    assert (config.uplink.host, config.uplink.ca_file, config.uplink.pins) == ("", "", ())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"pins": [PIN]}, "uplink.ca_file is required when uplink.pins is set"),
        ({"ca_file": "ca.crt"}, "uplink.client_cert_file is required when uplink.ca_file is set"),
        (
            {**CREDENTIALS, "client_key_file": ""},
            "uplink.client_key_file is required when uplink.ca_file is set",
        ),
    ],
)
def test_credentials_given_in_part_are_refused_naming_the_missing_key(
    given: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        uplink_config(**given)
    # The same rule holds where the local file meets pairing (a section parsed on its own).
    uplink = parse_section({"enabled": True, **given}, "uplink", UplinkSection, "/etc/mvb/box.toml")
    config = replace(parse_config(MINIMAL, "/etc/mvb/box.toml"), uplink=uplink)
    with pytest.raises(ConfigError, match=message):
        uplink_from_pairing(config, PAIRED)


def test_a_paired_box_takes_endpoint_name_and_credentials_from_pairing() -> None:
    office = resolved(uplink_config(), PAIRED)

    assert (office.host, office.https_port, office.h3_port) == ("bo.borsele.example", 8444, 8445)
    assert office.tls.server_name == "bo.borsele.example"
    assert tls_files(office) == PAIRED_TLS_FILES
    assert office.tls.pins == PinSet.from_strings([PAIRED_PIN])


def test_explicit_local_values_win_over_pairing() -> None:
    local = {"host": "10.0.0.1", "port": 9443, "h3_port": 0, "server_name": "backoffice.test"}
    config = uplink_config(**local, **CREDENTIALS, pins=[PIN])

    office = resolved(config, PAIRED)

    assert (office.host, office.https_port, office.h3_port) == ("10.0.0.1", 9443, 0)
    assert office.tls.server_name == "backoffice.test"
    assert tls_files(office) == (
        Path("/etc/mvb/ca.crt"),
        Path("/etc/mvb/client.crt"),
        Path("/etc/mvb/client.key"),
    )  # relative to the local file, never mixed with the pairing's
    assert office.tls.pins == PinSet.from_strings([PIN])


def test_a_host_behind_nat_brings_its_ports_and_keeps_the_paired_name_and_credentials() -> None:
    office = resolved(uplink_config(host="192.0.2.7", port=10443), PAIRED)

    assert (office.host, office.https_port, office.h3_port) == ("192.0.2.7", 10443, 0)
    assert office.tls.server_name == "bo.borsele.example"
    assert tls_files(office) == PAIRED_TLS_FILES


def test_an_ipv6_service_address_loses_its_brackets() -> None:
    service = ServiceEndpoint.of("[2001:db8::1]:8444", "bo.borsele.example", 0)
    office = resolved(uplink_config(), replace(PAIRED, service=service))
    assert (office.host, office.https_port) == ("2001:db8::1", 8444)


def test_an_unpaired_box_without_local_credentials_has_no_uplink_and_says_why() -> None:
    office = uplink_from_pairing(uplink_config(), None)

    assert isinstance(office, UplinkNotStarted)
    assert office.status()["state"] == NOT_PAIRED == "not paired"
    assert "mvb pair" in office.reason
    assert not office.any_link_usable()


def test_an_unpaired_box_with_local_credentials_but_no_host_names_what_is_missing() -> None:
    office = uplink_from_pairing(uplink_config(**CREDENTIALS, pins=[PIN]), None)

    assert isinstance(office, UplinkNotStarted)
    assert office.state == NOT_PAIRED
    assert "uplink.host, uplink.server_name" in office.reason
    assert "credentials" not in office.reason


def test_an_unpaired_box_with_everything_local_uploads_as_before() -> None:
    config = uplink_config(
        host="127.0.0.1", server_name="backoffice.test", **CREDENTIALS, pins=[PIN]
    )
    office = resolved(config, None)
    assert (office.host, office.https_port, office.tls.server_name) == (
        "127.0.0.1",
        443,
        "backoffice.test",
    )


def test_a_pairing_without_a_service_endpoint_asks_for_a_re_pair() -> None:
    office = uplink_from_pairing(uplink_config(), replace(PAIRED, service=None))

    assert isinstance(office, UplinkNotStarted)
    assert office.state == NO_SERVICE_ENDPOINT
    assert "re-pair" in office.reason
    with_host = resolved(
        uplink_config(host="bo.example", server_name="bo.example"), replace(PAIRED, service=None)
    )
    assert tls_files(with_host) == PAIRED_TLS_FILES


def test_a_disabled_uplink_resolves_to_nothing() -> None:
    config = parse_config({**MINIMAL, "uplink": {"enabled": False}}, "box.toml")
    assert back_office(config, PAIRED) is None


def test_slow_link_timeouts_and_chunk_policy_reach_the_uplink(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    config = uplink_config(
        stall_timeout_s=45,
        read_timeout_s=10,
        request_timeout_s=90,
        chunk_bytes=2 * 1024 * 1024,
        chunk_min_bytes=128 * 1024,
        chunk_target_s=6,
    )
    office = resolved(config, PAIRED)
    assert (office.stall_timeout_s, office.read_timeout_s, office.request_timeout_s) == (45, 10, 90)
    with store_on(tmp_path, recipient) as store:
        service = uplink_service(config, store, office)
        try:
            settings = service.settings
            assert (settings.chunk_bytes, settings.chunk_min_bytes, settings.chunk_target_s) == (
                2 * 1024 * 1024,
                128 * 1024,
                6,
            )
            assert service.links["wlan0"].chunks.size_bytes() == 128 * 1024  # starts at the floor
        finally:
            service.ledger.close()


def test_the_slow_link_defaults_bound_a_chunk_in_time_not_the_request() -> None:
    uplink = uplink_config().uplink
    assert (uplink.stall_timeout_s, uplink.read_timeout_s) == (20.0, 15.0)
    assert (uplink.chunk_min_bytes, uplink.chunk_bytes, uplink.chunk_target_s) == (
        256 * 1024,
        4 * 1024 * 1024,
        8.0,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stall_timeout_s", 0),
        ("read_timeout_s", 0.5),
        ("chunk_min_bytes", 1024),
        ("chunk_target_s", 0),
        ("stall_timeout_s", 601),
    ],
)
def test_slow_link_settings_out_of_range_are_refused(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"uplink.{key} = {value}"):
        uplink_config(**{key: value})
