"""The demo's and the benchmarks' cameras as plug-ins of the box's camera source factory.

Registered in pyproject.toml under the entry-point group `mvb.camera_sources`
(gateway/capture/sources.py), so that the real `mvb run` records from them (the demo, the soak
test, the web tests) while the product never imports this package:

- `synthetic`: frames painted and encoded live (demo/synthetic_source.py);
- `replay`: an encoded clip at `url`, replayed in real time, looping (demo/replay_source.py).
"""

from __future__ import annotations

from config.cameras import CameraSection
from demo.replay_source import ReplaySource
from demo.synthetic_source import SyntheticSource
from gateway.capture.sources import source_spec


def synthetic_source(camera: CameraSection) -> SyntheticSource:
    """A synthetic camera of the configured size, rate and bitrate."""
    return SyntheticSource(
        source_spec(camera),
        width=camera.width,
        height=camera.height,
        fps=camera.fps,
        bitrate_bps=camera.bitrate_bps,
    )


def replay_source(camera: CameraSection) -> ReplaySource:
    """A camera replaying the clip at `camera.url`."""
    return ReplaySource(source_spec(camera))
