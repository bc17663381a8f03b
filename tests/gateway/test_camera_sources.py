"""The camera source factory: product kinds built here, other kinds found as installed plug-ins
only when configured, and a configured kind nobody installed refused as a configuration error."""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from config.cameras import CameraSection
from config.local import ConfigError
from demo.replay_source import ReplaySource
from demo.synthetic_source import SyntheticSource
from gateway.capture import sources
from gateway.capture.push_sources import TsPushSource
from gateway.capture.rtsp_push import RtspPushSource
from gateway.capture.source import PyavSource
from gateway.capture.sources import (
    ENTRY_POINT_GROUP,
    CameraFileUnusable,
    CameraSourceMissing,
    IngestWiring,
    make_source,
)
from tests.cameras.camera_pki import CameraPki

PRODUCT_CAMERAS = {
    "rtsp_pull": CameraSection(
        name="dashcam", kind="rtsp_pull", url="rtsp://192.0.2.1/stream", auth="none"
    ),
    "ts_listen": CameraSection(
        name="dashcam", kind="ts_listen", listen_address="192.0.2.1", listen_port=9000, auth="none"
    ),
    "rtsp_listen": CameraSection(
        name="dashcam",
        kind="rtsp_listen",
        listen_address="192.0.2.1",
        listen_port=8554,
        auth="none",
    ),
}
PRODUCT_SOURCES = {
    "rtsp_pull": PyavSource,
    "ts_listen": TsPushSource,
    "rtsp_listen": RtspPushSource,
}


@pytest.mark.parametrize("kind", sorted(sources.PRODUCT_KINDS))
def test_product_kinds_are_the_products_sources_and_look_up_no_plugin(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_lookup(_kind: str) -> list[EntryPoint]:
        raise AssertionError("a product kind looked up a plug-in")

    monkeypatch.setattr(sources, "plugin_entry_points", no_lookup)
    camera = PRODUCT_CAMERAS[kind]
    source = make_source(camera)
    assert type(source) is PRODUCT_SOURCES[kind]
    assert (source.spec.name, source.spec.kind, source.spec.url) == ("dashcam", kind, camera.url)
    assert (source.spec.listen_address, source.spec.listen_port) == (
        camera.listen_address,
        camera.listen_port,
    )
    assert source.spec.serial == "dashcam", "the serial defaults to the camera's name"
    assert source.spec.auth == source.health.auth == "none"


def test_the_synthetic_kind_is_the_demos_plugin_with_the_configured_picture() -> None:
    camera = CameraSection(
        name="bodycam", kind="synthetic", serial="BC-1", width=320, height=240, fps=10
    )
    source = make_source(camera)
    assert isinstance(source, SyntheticSource)
    assert (source.width, source.height, source.fps) == (320, 240, 10)
    assert (source.spec.kind, source.spec.serial) == ("synthetic", "BC-1")


def test_the_replay_kind_is_the_demos_plugin_on_the_configured_clip() -> None:
    source = make_source(CameraSection(name="dashcam", kind="replay", url="/clips/a.ts"))
    assert isinstance(source, ReplaySource)
    assert source.spec.url == "/clips/a.ts"


def test_a_configured_kind_nobody_installed_is_a_configuration_error() -> None:
    with pytest.raises(CameraSourceMissing) as refused:
        make_source(CameraSection(name="roofcam", kind="thermal"))
    assert isinstance(refused.value, ConfigError)
    message = str(refused.value)
    assert "'roofcam'" in message
    assert "'thermal'" in message
    assert ENTRY_POINT_GROUP in message


def test_a_registered_plugin_that_cannot_be_imported_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = EntryPoint("thermal", "mvb_no_such_module:factory", ENTRY_POINT_GROUP)
    monkeypatch.setattr(sources, "plugin_entry_points", lambda _kind: [broken])
    with pytest.raises(CameraSourceMissing, match=r"'roofcam'.*'thermal'.*cannot be imported"):
        make_source(CameraSection(name="roofcam", kind="thermal"))


def test_a_kind_installed_twice_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    twice = [
        EntryPoint("thermal", "one:factory", ENTRY_POINT_GROUP),
        EntryPoint("thermal", "two:factory", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(sources, "plugin_entry_points", lambda _kind: twice)
    with pytest.raises(CameraSourceMissing, match=r"more than once \(one:factory, two:factory\)"):
        make_source(CameraSection(name="roofcam", kind="thermal"))


# --- the files authentication needs, read at start --------------------------------------------


@pytest.fixture(scope="module")
def cams(tmp_path_factory: pytest.TempPathFactory) -> CameraPki:
    return CameraPki(tmp_path_factory.mktemp("camera-pki"))


def tls_bodycam(cams: CameraPki, **change: Any) -> CameraSection:
    camera = CameraSection(
        name="bodycam",
        kind="ts_listen",
        serial="BC-1",
        listen_address="127.0.0.1",
        listen_port=9000,
        tls_cert_file=str(cams.box.cert),
        tls_key_file=str(cams.box.key),
        camera_ca_file=str(cams.ca),
    )
    return replace(camera, **change)


def test_a_tls_bodycam_is_built_with_its_trust_and_the_boxs_certificate(cams: CameraPki) -> None:
    by_ca = make_source(tls_bodycam(cams))
    assert isinstance(by_ca, TsPushSource)
    assert by_ca.admission is not None
    assert by_ca.admission.trust.serial == "BC-1"
    assert by_ca.spec.auth == "tls-ca"
    pinned = cams.self_signed("BC-1")
    by_pin = make_source(tls_bodycam(cams, camera_ca_file="", camera_cert_file=str(pinned.cert)))
    assert by_pin.spec.auth == "tls-pinned"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"camera_ca_file": "/nonexistent/ca.crt"},
            r"cameras\.camera_ca_file of camera 'bodycam': cannot read",
        ),
        (
            {"camera_ca_file": "", "camera_cert_file": "PINNED_BC2"},
            r"cameras\.camera_cert_file .* names 'BC-2'",
        ),
        (
            {"tls_key_file": "OTHER_KEY"},
            r"cameras\.tls_cert_file of camera 'bodycam': .* cannot be loaded",
        ),
    ],
)
def test_an_unusable_camera_file_stops_the_start_naming_the_key(
    cams: CameraPki, change: dict[str, str], message: str
) -> None:
    replacements = {
        "PINNED_BC2": str(cams.self_signed("BC-2").cert),
        "OTHER_KEY": str(cams.camera("BC-9").key),
    }
    change = {key: replacements.get(value, value) for key, value in change.items()}
    with pytest.raises(CameraFileUnusable, match=message) as refused:
        make_source(tls_bodycam(cams, **change))
    assert isinstance(refused.value, ConfigError)


def test_a_credentials_file_others_may_read_stops_the_start(tmp_path: Path) -> None:
    secret = tmp_path / "bodycam.secret"
    secret.write_text("bc1:geheim\n")
    secret.chmod(0o644)
    camera = CameraSection(
        name="bodycam",
        kind="rtsp_listen",
        listen_address="127.0.0.1",
        listen_port=8554,
        credentials_file="bodycam.secret",
    )
    with pytest.raises(CameraFileUnusable, match=r"cameras\.credentials_file .* mode 0644"):
        make_source(camera, IngestWiring(resolve=lambda name: tmp_path / name))
    secret.chmod(0o600)
    source = make_source(camera, IngestWiring(resolve=lambda name: tmp_path / name))
    assert isinstance(source, RtspPushSource)
    assert source.credentials is not None
    assert source.credentials.user == "bc1"


def test_a_pulled_cameras_credentials_go_in_pyavs_url_in_memory_only(tmp_path: Path) -> None:
    secret = tmp_path / "dashcam.secret"
    secret.write_text("viewer:p@ss\n")
    secret.chmod(0o600)
    camera = CameraSection(
        name="dashcam",
        kind="rtsp_pull",
        url="rtsp://192.0.2.1:554/stream",
        auth="digest",
        credentials_file=str(secret),
    )
    source = make_source(camera)
    assert isinstance(source, PyavSource)
    assert source.spec.url == "rtsp://192.0.2.1:554/stream", "the spec never holds the password"
    assert source._url == "rtsp://viewer:p%40ss@192.0.2.1:554/stream"
