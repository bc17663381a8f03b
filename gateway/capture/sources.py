"""Which source runs a configured camera: the camera source factory, by the camera's kind.

The product's kinds (`rtsp_pull`, `ts_listen`, `rtsp_listen`) are PyAV sources of this package.
Any other kind is a plug-in: a callable `(CameraSection) -> ThreadedSource` registered under the
entry-point group ENTRY_POINT_GROUP, named by the kind. The demo's and the benchmarks' cameras
(`synthetic`, `replay`, in demo/sources.py) come this way, so the product never imports demo/,
and the group is read only when a camera of a plug-in kind is configured: a box with real
cameras looks nothing up. A kind that is configured but not installed is a configuration error
naming the camera and the kind.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from config.local import CameraSection, ConfigError
from gateway.capture.source import PyavSource, SourceSpec, ThreadedSource

ENTRY_POINT_GROUP = "mvb.camera_sources"
PRODUCT_KINDS = frozenset({"rtsp_pull", "ts_listen", "rtsp_listen"})

SourceFactory = Callable[[CameraSection], ThreadedSource]


class CameraSourceMissing(ConfigError):
    """A camera's kind is neither the product's nor an installed plug-in's."""


def source_spec(camera: CameraSection) -> SourceSpec:
    """How to reach `camera` (pure): its serial defaults to its name."""
    return SourceSpec(
        name=camera.name,
        kind=camera.kind,
        url=camera.url,
        rtsp_transport=camera.rtsp_transport,
        serial=camera.serial or camera.name,
    )


def make_source(camera: CameraSection) -> ThreadedSource:
    """The source for `camera`; CameraSourceMissing when its kind has no installed plug-in."""
    if camera.kind in PRODUCT_KINDS:
        return PyavSource(source_spec(camera))
    return plugin_factory(camera)(camera)


def plugin_factory(camera: CameraSection) -> SourceFactory:
    """The installed plug-in for `camera.kind`, loaded (its module imported) now."""
    found = plugin_entry_points(camera.kind)
    if not found:
        raise CameraSourceMissing(
            f"camera {camera.name!r}: no source of kind {camera.kind!r} is installed "
            f"(the product has {', '.join(sorted(PRODUCT_KINDS))}; other kinds are plug-ins "
            f"of the entry-point group {ENTRY_POINT_GROUP!r})"
        )
    if len(found) > 1:
        targets = ", ".join(sorted(ep.value for ep in found))
        raise CameraSourceMissing(
            f"camera {camera.name!r}: kind {camera.kind!r} is installed more than once ({targets})"
        )
    try:
        factory: SourceFactory = found[0].load()
    except ImportError as exc:
        raise CameraSourceMissing(
            f"camera {camera.name!r}: the source of kind {camera.kind!r} ({found[0].value}) "
            f"is registered but cannot be imported: {exc}"
        ) from exc
    return factory


def plugin_entry_points(kind: str) -> list[EntryPoint]:
    """The entry points registered for `kind`, one per distinct target."""
    unique = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind)}
    return list(unique.values())
