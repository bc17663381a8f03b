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
from gateway.capture.camera_tls import server_context
from gateway.capture.camera_trust import ca_trust
from gateway.capture.credentials import Credentials
from gateway.capture.packet import CapturedPacket
from gateway.capture.push_sources import PushSource, TlsAdmission, TsPushSource
from gateway.capture.rtsp_push import RtspPushSource
from gateway.capture.source import (
    PyavSource,
    QueueItem,
    SourceSpec,
    ThreadedSource,
    backoff_s,
    pyav_open_args,
)
from tests.cameras import ffmpeg_push_rtsp, ffmpeg_push_ts, rtsp_camera
from tests.cameras.camera_pki import CameraPki


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    return generate_clip(path, seconds=4, fps=25, keyframe_interval_frames=25)


async def start_listening(
    source: PushSource, timeout_s: float = 10
) -> tuple[int, asyncio.Queue[QueueItem]]:
    """Start a push source on port 0 and wait until it listens: the port the kernel chose, and
    the source's packet queue."""
    queue = source.start(asyncio.get_running_loop())
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return source.listener.port, queue
        except AssertionError:
            assert time.monotonic() < deadline, "the source never listened"
            await asyncio.sleep(0.02)


async def collect(
    source: ThreadedSource,
    until: Callable[[list[CapturedPacket]], bool],
    timeout_s: float = 20,
    *,
    queue: asyncio.Queue[QueueItem] | None = None,
) -> list[CapturedPacket]:
    """Packets of `source` until `until` holds (it is started here unless `queue` is given:
    `start_listening` started it), then stop it."""
    if queue is None:
        queue = source.start(asyncio.get_running_loop())
    packets: list[CapturedPacket] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(packets):
            assert time.monotonic() < deadline, f"only {len(packets)} packets in time"
            try:
                item = await asyncio.wait_for(queue.get(), 0.5)
            except TimeoutError:
                continue
            if isinstance(item, CapturedPacket):  # not a LinkEvent (lost, back)
                packets.append(item)
    finally:
        await source.stop()
    return packets


def keyframes(packets: list[CapturedPacket]) -> int:
    return sum(p.is_keyframe for p in packets)


async def test_ts_listen_receives_a_bodycam_pushing_over_tls_with_its_certificate(
    clip: Path, tmp_path: Path
) -> None:
    pki = CameraPki(tmp_path / "pki")
    trust = ca_trust("BC-1", pki.ca.read_bytes())
    admission = TlsAdmission(server_context(pki.box.cert, pki.box.key, trust), trust)
    spec = SourceSpec(name="bodycam", kind="ts_listen", listen_address="127.0.0.1", auth="tls-ca")
    source = TsPushSource(spec, admission)
    port, queue = await start_listening(source)
    url = f"tls://127.0.0.1:{port}"
    with ffmpeg_push_ts(url, clip, client_cert=pki.camera("BC-1"), box_ca=pki.box_ca):
        packets = await collect(source, lambda p: keyframes(p) >= 2, queue=queue)
    assert source.health.packets >= len(packets)
    assert packets[0].template.codec == "h264"
    assert packets[0].is_keyframe or source.health.packets > len(packets)
    assert source.health.refused == 0


async def test_rtsp_listen_receives_an_rtsp_push_that_proves_its_password(clip: Path) -> None:
    spec = SourceSpec(name="bodycam", kind="rtsp_listen", listen_address="127.0.0.1", auth="digest")
    source = RtspPushSource(spec, Credentials("bc1", "pass:word/1"))
    port, queue = await start_listening(source)
    url = f"rtsp://bc1:pass%3Aword%2F1@127.0.0.1:{port}/bodycam"
    with ffmpeg_push_rtsp(url, clip):
        packets = await collect(source, lambda p: keyframes(p) >= 2, queue=queue)
    assert packets[-1].template.codec == "h264"
    assert source.health.refused == 0


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


def test_open_arguments_of_an_rtsp_pull() -> None:
    rtsp = SourceSpec(name="a", kind="rtsp_pull", url="rtsp://127.0.0.1/x", rtsp_transport="udp")
    url, kwargs = pyav_open_args(rtsp)
    assert url == "rtsp://127.0.0.1/x"
    assert kwargs["options"] == {
        "rtsp_transport": "udp",
        "rtsp_flags": "filter_src",
        "fpsprobesize": "0",  # no frame-rate probe: the first keyframe is not held back
    }
    with_login = pyav_open_args(rtsp, "rtsp://u:p@127.0.0.1/x")[0]
    assert with_login == "rtsp://u:p@127.0.0.1/x", "credentials are handed in, never configured"
    for push in ("ts_listen", "rtsp_listen"):
        with pytest.raises(ValueError, match="not opened by URL"):
            pyav_open_args(SourceSpec(name="b", kind=push))


def test_backoff_is_bounded_and_grows() -> None:
    rng = random.Random(7)
    delays = [backoff_s(attempt, 0.5, 30.0, rng) for attempt in range(40)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert max(delays[:3]) <= 4.0
    assert max(delays[20:]) > 10.0
