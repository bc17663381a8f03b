"""Bad inputs at capture: a garbage stream, a stall, a drop mid-GOP, a gpsd that dies.

Each: the fault shows in the camera's (or GPS's) health, the service keeps running, the other
camera keeps recording, and what was recorded decrypts and demuxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from demo.replay_source import ReplaySource
from demo.synthetic import generate_clip
from gateway.capture.camera import Camera
from gateway.capture.push_sources import TsPushSource
from gateway.capture.service import CaptureService
from gateway.capture.source import SourceSpec
from gateway.gps import GpsdClient, GpsStatus, GpsTracker
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from storage.reader import ReadReport, read_evidence
from storage.store import EvidenceStore
from tests.cameras import (
    ffmpeg_push_ts,
    free_port,
    mid_gop_offset,
    push_garbage,
    push_mid_gop_drop,
    push_stalling_ts,
)
from tests.capture_helpers import segments, store_on, wait_for
from tests.gpsfake import Gpsfake

S = 1_000_000_000


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    return generate_clip(path, seconds=6, fps=25, keyframe_interval_frames=25)


@dataclass
class Rig:
    service: CaptureService
    store: EvidenceStore
    pushed: Camera
    steady: Camera
    port: int


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, recipient: RecipientPrivateKey, clip: Path, *, gps: GpsTracker | None = None
) -> AsyncIterator[Rig]:
    """A bodycam listening for a TS push (the faulty one: a plain TCP push, `auth = "none"`, so
    the faults reach the demuxer) and a steady replayed dashcam."""
    port = free_port()
    pushed = Camera(
        TsPushSource(
            SourceSpec(
                name="bodycam",
                kind="ts_listen",
                listen_address="127.0.0.1",
                listen_port=port,
                read_timeout_s=1.0,
                open_timeout_s=2.0,
                backoff_min_s=0.05,
                backoff_max_s=0.2,
            ),
            admission=None,
        ),
        prerecord_s=2.0,
        ring_max_bytes=16 << 20,
    )
    steady = Camera(
        ReplaySource(SourceSpec(name="dashcam", kind="replay", url=str(clip))),
        prerecord_s=2.0,
        ring_max_bytes=16 << 20,
    )
    policy = RecorderPolicy(prerecord_s=2.0, default_trigger=TriggerPolicy(postrecord_s=0.5))
    window = gps.samples_between if gps is not None else (lambda _a, _b: [])
    with store_on(tmp_path, recipient) as store:
        service = CaptureService(
            store, [pushed, steady], policy, {}, gps_window=window, tick_s=0.05
        )
        await service.start()
        try:
            yield Rig(service, store, pushed, steady, port)
        finally:
            await service.stop()


async def record_for(service: CaptureService, seconds: float) -> None:
    await service.trigger("officer")
    await asyncio.sleep(seconds)
    await service.stop_recording()
    await wait_for(lambda: service.recording is None, "the recording to be sealed")


def decrypted(
    store: EvidenceStore, key: RecipientPrivateKey
) -> dict[str, tuple[ReadReport, bytes]]:
    out = {}
    for path in store.layout.sealed_files():
        media = io.BytesIO()
        with path.open("rb") as handle:
            report = read_evidence(handle, key, media_out=media)
        out[str(report.metadata[0]["camera"])] = (report, media.getvalue())
    return out


def newest_ns(camera: Camera) -> int:
    """When the newest packet in the camera's ring arrived (0 while the ring is empty)."""
    newest = camera.ring.snapshot(0)
    return newest[-1].at_mono_ns if newest else 0


def decodable_frames(media: bytes) -> int:
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        return sum(1 for _ in container.decode(video=0))


async def test_garbage_stream_is_reported_and_disturbs_nothing(
    tmp_path: Path, recipient: RecipientPrivateKey, clip: Path
) -> None:
    async with rig(tmp_path, recipient, clip) as r:
        with push_garbage(r.port):
            await wait_for(lambda: r.pushed.source.health.errors >= 1, "the garbage to be refused")
            await wait_for(lambda: r.steady.ring.span_ns() >= 2 * S, "the dashcam's ring")
            await record_for(r.service, 1.0)
        health = r.pushed.source.health
        assert health.packets == 0
        assert health.last_error is not None
        files = decrypted(r.store, recipient)
    assert set(files) == {"dashcam"}
    assert decodable_frames(files["dashcam"][1]) > 50


async def test_stalled_stream_times_out_and_keeps_what_came_before(
    tmp_path: Path, recipient: RecipientPrivateKey, clip: Path
) -> None:
    async with rig(tmp_path, recipient, clip) as r:
        # The dashcam's pre-record in its ring first (before the push, so the stall still falls
        # in the recording): on a loaded machine its replay starts late, and a recording that
        # starts before a camera's first keyframe has that camera only from it on.
        await wait_for(lambda: r.steady.ring.span_ns() >= 2 * S, "the dashcam's ring")
        with push_stalling_ts(r.port, clip, stall_after_bytes=clip.stat().st_size // 2):
            await wait_for(lambda: r.pushed.source.health.packets > 25, "packets before the stall")
            await r.service.trigger("officer")
            await wait_for(lambda: r.pushed.source.health.errors >= 1, "the stall to be noticed")
            noticed_ns = time.monotonic_ns()
            assert "TimeoutError" in str(r.pushed.source.health.last_error)
            # The dashcam records on through the bodycam's stall: a packet of it after the stall
            # was noticed, before the stop (the recording's end below must reach past it).
            await wait_for(lambda: newest_ns(r.steady) > noticed_ns, "the dashcam after the stall")
            await r.service.stop_recording()
            await wait_for(lambda: r.service.recording is None, "the recording to be sealed")
        files = decrypted(r.store, recipient)
    assert r.pushed.source.health.reconnects >= 1
    report, media = files["bodycam"]
    assert decodable_frames(media) > 0
    assert all(s["keyframe_start"] for s in segments(report))
    dashcam_report, dashcam_media = files["dashcam"]
    assert decodable_frames(dashcam_media) > 25
    assert segments(dashcam_report)[-1]["end_mono_ns"] > noticed_ns


async def test_drop_mid_gop_then_reconnect_continues_the_recording(
    tmp_path: Path, recipient: RecipientPrivateKey, clip: Path
) -> None:
    cut = mid_gop_offset(clip, gop_index=3)
    async with rig(tmp_path, recipient, clip) as r:
        with push_mid_gop_drop(r.port, clip, cut_after_bytes=cut):
            await wait_for(lambda: r.pushed.source.health.packets > 25, "the first connection")
            await r.service.trigger("officer")
            await wait_for(lambda: r.pushed.source.health.reconnects >= 1, "the drop")
        with ffmpeg_push_ts(f"tcp://127.0.0.1:{r.port}", clip):
            before = r.pushed.source.health.packets
            await wait_for(lambda: r.pushed.source.health.packets > before + 50, "the camera back")
            await r.service.stop_recording()
            await wait_for(lambda: r.service.recording is None, "the recording to be sealed")
        files = decrypted(r.store, recipient)
    report, media = files["bodycam"]
    connections = {s["connection"] for s in segments(report)}
    assert len(connections) == 2, "segments from before and after the drop"
    assert all(s["keyframe_start"] for s in segments(report))
    assert decodable_frames(media) > 50


async def test_gpsd_dying_mid_recording_leaves_the_recording_whole(
    tmp_path: Path, recipient: RecipientPrivateKey, clip: Path
) -> None:
    port = free_port()
    fake = Gpsfake(port, tmp_path, singleshot=False, sentence_interval_s=0.05)
    gps = GpsTracker(stale_after_s=0.5)
    client = GpsdClient(gps, "127.0.0.1", port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    client_task = asyncio.create_task(client.run())
    try:
        async with rig(tmp_path, recipient, clip, gps=gps) as r:
            await wait_for(lambda: gps.fix is not None, "a fix")
            await wait_for(lambda: r.steady.ring.span_ns() >= 2 * S, "the dashcam's ring")
            await r.service.trigger("officer")
            await asyncio.sleep(1.5)
            fake.crash()
            await wait_for(
                lambda: gps.status(time.monotonic_ns()) is GpsStatus.NO_GPSD,
                "the box to notice gpsd is gone",
            )
            await asyncio.sleep(1.5)
            await r.service.stop_recording()
            await wait_for(lambda: r.service.recording is None, "the recording to be sealed")
            files = decrypted(r.store, recipient)
    finally:
        client.stop()
        await asyncio.wait_for(client_task, 5)
        fake.stop()
    report, media = files["dashcam"]
    assert [m for m in report.metadata if m["type"] == "gps"], "GPS samples from before the crash"
    assert segments(report)[-1]["end_mono_ns"] > segments(report)[0]["start_mono_ns"] + 4 * S
    assert decodable_frames(media) > 75
