"""Each source kind against a real peer on loopback, and the pure parts of sources."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from demo.synthetic import generate_clip
from demo.synthetic_source import SyntheticSource
from gateway.capture.packet import CapturedPacket
from gateway.capture.source import (
    PyavSource,
    SourceSpec,
    ThreadedSource,
    backoff_s,
    pyav_open_args,
)
from tests.cameras import ffmpeg_push_rtsp, ffmpeg_push_ts, free_port, rtsp_camera


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    return generate_clip(path, seconds=4, fps=25, keyframe_interval_frames=25)


async def collect(
    source: ThreadedSource, until: Callable[[list[CapturedPacket]], bool], timeout_s: float = 20
) -> list[CapturedPacket]:
    queue = source.start(asyncio.get_running_loop())
    packets: list[CapturedPacket] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(packets):
            assert time.monotonic() < deadline, f"only {len(packets)} packets in time"
            try:
                packets.append(await asyncio.wait_for(queue.get(), 0.5))
            except TimeoutError:
                continue
    finally:
        await source.stop()
    return packets


def keyframes(packets: list[CapturedPacket]) -> int:
    return sum(p.is_keyframe for p in packets)


async def test_ts_listen_receives_a_pushed_bodycam(clip: Path) -> None:
    port = free_port()
    source = PyavSource(SourceSpec(name="bodycam", kind="ts_listen", url=f"tcp://127.0.0.1:{port}"))
    with ffmpeg_push_ts(f"tcp://127.0.0.1:{port}", clip):
        packets = await collect(source, lambda p: keyframes(p) >= 2)
    assert source.health.packets >= len(packets)
    assert packets[0].template.codec == "h264"
    assert packets[0].is_keyframe or source.health.packets > len(packets)


async def test_rtsp_listen_receives_an_rtsp_push(clip: Path) -> None:
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/bodycam"
    source = PyavSource(SourceSpec(name="bodycam", kind="rtsp_listen", url=url))
    with ffmpeg_push_rtsp(url, clip):
        packets = await collect(source, lambda p: keyframes(p) >= 2)
    assert packets[-1].template.codec == "h264"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_rtsp_pull_from_a_camera(transport: str) -> None:
    with rtsp_camera(gop=25) as url:
        spec = SourceSpec(name="dashcam", kind="rtsp_pull", url=url, rtsp_transport=transport)
        source = PyavSource(spec)
        packets = await collect(source, lambda p: keyframes(p) >= 3)
    stamps = [p.pts for p in packets if p.pts is not None]
    assert stamps == sorted(stamps)
    assert source.health.errors == 0, source.health.last_error
    assert packets[-1].template.width == 320


async def test_synthetic_source_paces_in_real_time() -> None:
    source = SyntheticSource(
        SourceSpec(name="dashcam", kind="synthetic"),
        width=320,
        height=240,
        fps=25,
        bitrate_bps=300_000,
        gop_s=1.0,
    )
    started = time.monotonic()
    packets = await collect(source, lambda p: len(p) >= 50)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.8, "50 frames at 25 fps take about 2 s"
    assert keyframes(packets) == 2
    assert packets[0].is_keyframe


def test_open_arguments_per_kind() -> None:
    rtsp = SourceSpec(name="a", kind="rtsp_pull", url="rtsp://127.0.0.1/x", rtsp_transport="udp")
    url, kwargs = pyav_open_args(rtsp)
    assert url == "rtsp://127.0.0.1/x"
    assert kwargs["options"] == {"rtsp_transport": "udp", "rtsp_flags": "filter_src"}
    listen = SourceSpec(name="b", kind="ts_listen", url="tcp://127.0.0.1:9000")
    assert pyav_open_args(listen)[0] == "tcp://127.0.0.1:9000?listen=1"
    push = SourceSpec(name="c", kind="rtsp_listen", url="rtsp://127.0.0.1:9001/x")
    assert pyav_open_args(push)[1]["options"]["listen_timeout"] == "5"
    with pytest.raises(ValueError, match="unknown source kind"):
        pyav_open_args(SourceSpec(name="d", kind="webcam"))


def test_backoff_is_bounded_and_grows() -> None:
    rng = random.Random(7)
    delays = [backoff_s(attempt, 0.5, 30.0, rng) for attempt in range(40)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert max(delays[:3]) <= 4.0
    assert max(delays[20:]) > 10.0
