"""[[cameras]]: no source listens on every address by default, a wildcard never without
authentication, and each form of authentication with exactly its keys; messages name the file,
the key and the camera (config/cameras.py through config/local.py)."""

from __future__ import annotations

from typing import Any

import pytest

from config.cameras import CameraSection
from config.local import ConfigError, parse_config

MINIMAL: dict[str, Any] = {"box": {"recipient_keys": ["recording.pub"]}}
SOURCE = "/etc/mvb/box.toml"
EVERY_IPV4 = "0.0.0.0"  # noqa: S104 (the wildcard under test)

TLS_PUSH = {
    "name": "bodycam",
    "kind": "ts_listen",
    "serial": "BC-1",
    "listen_address": "192.168.50.1",
    "listen_port": 9000,
    "tls_cert_file": "box-cameras.crt",
    "tls_key_file": "box-cameras.key",
    "camera_ca_file": "camera-ca.crt",
}
DIGEST_PUSH = {
    "name": "bodycam",
    "kind": "rtsp_listen",
    "listen_address": "192.168.50.1",
    "listen_port": 8554,
    "credentials_file": "bodycam.secret",
}
TLS_PULL = {
    "name": "dashcam",
    "kind": "rtsp_pull",
    "url": "rtsps://192.168.50.20:322/stream1",
    "camera_cert_file": "dashcam.crt",
}


def cameras(*tables: dict[str, Any]) -> tuple[CameraSection, ...]:
    return parse_config({**MINIMAL, "cameras": list(tables)}, SOURCE).cameras


def refused(*tables: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        cameras(*tables)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: cameras."), message
    return message


def test_the_default_is_the_strongest_form_each_kind_offers() -> None:
    (tls_push,) = cameras(TLS_PUSH)
    assert tls_push.auth_mode == "tls"
    (digest_push,) = cameras(DIGEST_PUSH)
    assert digest_push.auth_mode == "digest"
    (tls_pull,) = cameras(TLS_PULL)
    assert tls_pull.auth_mode == "tls"
    assert tls_push.identity == "BC-1"
    assert digest_push.identity == "bodycam", "the serial defaults to the camera's name"


@pytest.mark.parametrize(
    "where",
    [
        {"listen_address": EVERY_IPV4},
        {"listen_address": "::"},
    ],
)
def test_a_wildcard_without_authentication_is_refused_naming_the_key(
    where: dict[str, str],
) -> None:
    table = {"name": "bodycam", "kind": "ts_listen", "listen_port": 9000, "auth": "none", **where}
    message = refused(table)
    assert f"cameras.listen_address = {where['listen_address']} listens on every address" in message
    assert "(camera bodycam)" in message


def test_a_wildcard_is_accepted_with_authentication_and_an_interface_is_no_wildcard() -> None:
    (with_tls,) = cameras({**TLS_PUSH, "listen_address": EVERY_IPV4})
    assert with_tls.is_wildcard_bind()
    (on_interface,) = cameras(
        {
            "name": "bodycam",
            "kind": "ts_listen",
            "listen_interface": "wlan-cams",
            "listen_port": 9000,
            "auth": "none",
        }
    )
    assert not on_interface.is_wildcard_bind()
    (on_address,) = cameras({**DIGEST_PUSH, "auth": "none", "credentials_file": ""})
    assert on_address.auth_mode == "none"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"listen_address": ""},
            "cameras.listen_address (or cameras.listen_interface) is required",
        ),
        ({"listen_address": "cams.local"}, "cameras.listen_address 'cams.local' is not an IP"),
        ({"listen_port": 0}, "cameras.listen_port (1 to 65535) is required"),
        ({"url": "tcp://0.0.0.0:9000"}, "cameras.url is for rtsp_pull"),
        ({"auth": "digest"}, "cameras.auth 'digest' is not one of ['tls', 'none'] for ts_listen"),
        ({"camera_ca_file": ""}, 'cameras.auth = "tls" needs exactly one of'),
        ({"camera_cert_file": "bc1.crt"}, 'cameras.auth = "tls" needs exactly one of'),
        ({"tls_key_file": ""}, "needs cameras.tls_cert_file and cameras.tls_key_file"),
        ({"auth": "none"}, 'cameras.camera_ca_file is only used with cameras.auth = "tls"'),
        ({"listen_port": 70000}, "cameras.listen_port = 70000 is outside 0..65535"),
    ],
)
def test_push_camera_problems_name_the_key(change: dict[str, Any], message: str) -> None:
    assert message in refused({**TLS_PUSH, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"credentials_file": ""}, 'cameras.auth = "digest" needs cameras.credentials_file'),
        ({"auth": "tls"}, "cameras.auth 'tls' is not one of ['digest', 'none'] for rtsp_listen"),
        ({"auth": "none"}, 'cameras.credentials_file is not used with cameras.auth = "none"'),
    ],
)
def test_rtsp_push_problems_name_the_key(change: dict[str, Any], message: str) -> None:
    assert message in refused({**DIGEST_PUSH, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "rtsp://192.168.50.20/stream1"}, "needs an rtsps:// cameras.url"),
        ({"url": "rtsps://u:p@192.168.50.20/s"}, "cameras.url carries credentials"),
        ({"url": "http://192.168.50.20/s"}, "cameras.url must be rtsp://HOST/... or rtsps://"),
        ({"rtsp_transport": "udp"}, "cameras.rtsp_transport must be tcp"),
        ({"listen_address": "192.168.50.1"}, "cameras.listen_address is for push cameras"),
        ({"tls_cert_file": "box.crt"}, "cameras.tls_cert_file is for push cameras"),
        ({"camera_cert_file": ""}, 'cameras.auth = "tls" needs exactly one of'),
        ({"auth": "none"}, 'cameras.url rtsps:// goes with cameras.auth = "tls"'),
    ],
)
def test_pull_camera_problems_name_the_key(change: dict[str, Any], message: str) -> None:
    assert message in refused({**TLS_PULL, **change})


def test_a_plain_rtsp_pull_says_its_weaker_form_out_loud() -> None:
    plain = {"name": "dashcam", "kind": "rtsp_pull", "url": "rtsp://192.168.50.20/s"}
    assert 'takes cameras.auth = "digest" or "none"' in refused(plain)
    (digest,) = cameras({**plain, "auth": "digest", "credentials_file": "dashcam.secret"})
    assert digest.auth_mode == "digest"
    (tls_with_login,) = cameras({**TLS_PULL, "credentials_file": "dashcam.secret"})
    assert tls_with_login.auth_mode == "tls", "RTSPS may log in to the camera too"


def test_two_push_cameras_on_one_port_are_refused() -> None:
    other = {**DIGEST_PUSH, "name": "bodycam2", "listen_port": 9000}
    assert "cameras.listen_port 9000 of camera bodycam2 is already camera bodycam's" in refused(
        TLS_PUSH, other
    )


@pytest.mark.parametrize("kind", ["synthetic", "replay"])
@pytest.mark.parametrize(
    "key", ["listen_address", "auth", "camera_ca_file", "tls_cert_file", "credentials_file"]
)
def test_the_demo_kinds_take_no_network_keys(kind: str, key: str) -> None:
    message = refused({"name": "demo", "kind": kind, key: "x"})
    assert "for network cameras" in message
