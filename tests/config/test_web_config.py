"""[web] (the box's listener, local file only), [webui] (login policy, fleet-settable) and the
officer id of [[accounts]]: defaults, ranges, and messages that name the key and the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.passwords import PasswordHash
from config.fleet_schema import apply_fleet_document
from config.local import ConfigError, LocalConfig, load_config, parse_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
MINIMAL: dict[str, Any] = {"box": {"recipient_keys": ["recording.pub"]}}
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 (the value under test, nothing binds here)
HASH = PasswordHash(600_000, b"0123456789abcdef", bytes(32)).text()


def with_section(name: str, values: Any) -> dict[str, Any]:
    return {**MINIMAL, name: values}


def account(**extra: str) -> dict[str, str]:
    return {"name": "alice", "role": "officer", "password_hash": HASH, **extra}


def test_defaults_serve_the_vehicle_network_with_the_protocol_lockout() -> None:
    config = parse_config(MINIMAL, "box.toml")
    web, webui = config.web, config.webui
    assert (web.enabled, web.host, web.https_port, web.http_port) == (
        True,
        EVERY_INTERFACE,
        8443,
        8080,
    )
    assert (web.tls_cert_file, web.tls_key_file, web.san) == ("", "", ())
    assert (webui.max_failed_logins, webui.lockout_s) == (5, 900)  # RULES U2: ban after 5
    assert (webui.session_idle_s, webui.session_max_s) == (1800, 43200)
    assert webui.metrics_token_sha256 == ""


def test_the_shipped_defaults_file_shows_the_web_section() -> None:
    config = load_config(CONFIG_DIR / "defaults" / "box.toml")
    assert config.web == parse_config(MINIMAL, "x").web


def test_a_full_web_section_is_read(tmp_path: Path) -> None:
    path = tmp_path / "box.toml"
    path.write_text(
        '[box]\nrecipient_keys = ["k.pub"]\n'
        '[web]\nhost = "10.20.0.1"\nhttps_port = 443\nhttp_port = 0\n'
        'tls_cert_file = "tls/mvb.crt"\ntls_key_file = "tls/mvb.key"\n'
        'san = ["mvb-0042.vehicle.lan", "10.20.0.1", "fd00::1"]\n'
        "[webui]\nmax_failed_logins = 3\nlockout_s = 3600\n"
        'metrics_token_sha256 = "' + "ab" * 32 + '"\n'
        '[[accounts]]\nname = "alice"\nrole = "officer"\nofficer_id = "BOA-1234"\n'
        f'password_hash = "{HASH}"\n'
    )
    config = load_config(path)
    assert config.web.http_port == 0, "0: no redirect listener"
    assert config.resolve(config.web.tls_cert_file) == tmp_path / "tls" / "mvb.crt"
    assert config.web.san == ("mvb-0042.vehicle.lan", "10.20.0.1", "fd00::1")
    assert (config.webui.max_failed_logins, config.webui.lockout_s) == (3, 3600)
    assert config.accounts[0].officer_id == "BOA-1234"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            with_section("webui", {"max_failed_logins": 2}),
            "webui.max_failed_logins = 2 is outside 3..20",
        ),
        (with_section("webui", {"max_failed_logins": 21}), "webui.max_failed_logins = 21"),
        (with_section("webui", {"lockout_s": 59}), "webui.lockout_s = 59 is outside 60..86400"),
        (with_section("webui", {"lockout_s": 86401}), "webui.lockout_s = 86401"),
        (with_section("webui", {"lockout_s": "900"}), "webui.lockout_s must be int, not str"),
        (with_section("webui", {"session_idle_s": 30}), "webui.session_idle_s = 30"),
        (
            with_section("webui", {"session_idle_s": 7200, "session_max_s": 3600}),
            "webui.session_idle_s exceeds webui.session_max_s",
        ),
        (
            with_section("webui", {"metrics_token_sha256": "AB" * 32}),
            "webui.metrics_token_sha256 must be 64 lowercase hex",
        ),
        (with_section("webui", {"colour": "red"}), "unknown key webui.colour"),
        (with_section("web", {"https_port": 0}), "web.https_port = 0 is outside 1..65535"),
        (with_section("web", {"http_port": 70000}), "web.http_port = 70000"),
        (with_section("web", {"http_port": 8443}), "web.http_port must differ"),
        (with_section("web", {"enabled": "yes"}), "web.enabled must be bool, not str"),
        (with_section("web", {"tls_cert_file": "a.crt"}), "web.tls_cert_file and web.tls_key_file"),
        (with_section("web", {"tls_key_file": "a.key"}), "web.tls_cert_file and web.tls_key_file"),
        (with_section("web", {"san": ["bad name!"]}), "web.san 'bad name!' is neither"),
        (with_section("web", {"san": "box.lan"}), "web.san must be a list of strings"),
        (with_section("web", {"host": ""}), "web.host is required"),
        (with_section("accounts", [account(officer_id="BOA 12")]), "accounts.officer_id of alice"),
        (with_section("accounts", [account(officer_id="x" * 33)]), "accounts.officer_id of alice"),
        (with_section("api", {"host": EVERY_INTERFACE}), "api.host must be loopback"),
        (with_section("api", {"host": "10.20.0.1"}), "api.host must be loopback"),
    ],
)
def test_bad_web_values_name_file_and_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "/etc/mvb/box.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("/etc/mvb/box.toml: ")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_the_local_channel_stays_on_loopback(host: str) -> None:
    assert parse_config(with_section("api", {"host": host}), "box.toml").api.host == host


@pytest.fixture
def local() -> LocalConfig:
    raw = {**MINIMAL, "web": {"https_port": 443}, "accounts": [account()]}
    return parse_config(raw, "box.toml")


def test_a_fleet_document_sets_the_login_policy_and_officer_ids(local: LocalConfig) -> None:
    text = f"""
[webui]
max_failed_logins = 3
lockout_s = 1800
[[accounts]]
name = "alice"
role = "officer"
officer_id = "BOA-0007"
password_hash = "{HASH}"
"""
    effective = apply_fleet_document(local, text, "fleet")
    assert (effective.webui.max_failed_logins, effective.webui.lockout_s) == (3, 1800)
    assert effective.webui.session_idle_s == 1800, "keys the document leaves out stay"
    assert effective.accounts[0].officer_id == "BOA-0007"
    assert effective.web == local.web


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[web]\nhost = "0.0.0.0"', r"\[web\] cannot be set by a fleet document"),
        ("[web]\nhttps_port = 8443", r"\[web\] cannot be set by a fleet document"),
        ("[webui]\nlockout_s = 10", r"webui.lockout_s = 10 is outside 60\.\.86400"),
        ("[webui]\nmax_failed_logins = 100", "webui.max_failed_logins = 100"),
        ("[webui]\ncolour = 1", "webui.colour is not a fleet setting"),
        (
            '[[accounts]]\nname = "bob"\nrole = "admin"\nofficer_id = "B O"\npassword_hash = "x"',
            "bob",
        ),
    ],
)
def test_a_fleet_document_cannot_move_the_listener_or_break_the_policy(
    local: LocalConfig, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_fleet_document(local, text, "fleet")
