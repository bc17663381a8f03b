"""The camera source factory: product kinds built here, other kinds found as installed plug-ins
only when configured, and a configured kind nobody installed refused as a configuration error."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from config.cameras import CameraSection
from config.local import ConfigError
from demo.replay_source import ReplaySource
from demo.synthetic_source import SyntheticSource
from gateway.capture import sources
from gateway.capture.push_sources import TsPushSource
from gateway.capture.rtsp_push import RtspPushSource
from gateway.capture.source import PyavSource
from gateway.capture.sources import ENTRY_POINT_GROUP, CameraSourceMissing, make_source

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
