"""The capture proof (issue 3, section 5) with real peers on loopback: a gst-rtsp-server camera,
gpsd replaying the shipped track through gpsfake, and the box's own sources, recorder and store.

Pre-record 10 s; a trigger; 5 s; a stop; post-record. The recording, decrypted with the back
office's key and demuxed with PyAV, must start on a keyframe at least `prerecord_s` before the
trigger, end at least `postrecord_s` after the stop, have no gap in its timestamps, and carry GPS
samples from the replayed track.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.source import PyavSource, SourceSpec
from gateway.gps import GpsdClient, GpsTracker
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from tests.cameras import rtsp_camera
from tests.capture_helpers import decrypt_all, segments, store_on, video_packets, wait_for
from tests.gpsfake import Gpsfake, free_port, read_route

S = 1_000_000_000
PRERECORD_S = 10.0
RECORD_S = 5.0
POSTRECORD_S = 3.0


@contextlib.asynccontextmanager
async def gps_from_gpsfake(tmp_path: Path) -> AsyncIterator[GpsTracker]:
    port = free_port()
    fake = Gpsfake(port, tmp_path, singleshot=True, sentence_interval_s=0.5)  # real time, 60 s
    tracker = GpsTracker(stale_after_s=3.0)
    client = GpsdClient(tracker, "127.0.0.1", port, reconnect_min_s=0.1, reconnect_max_s=0.5)
    task = asyncio.create_task(client.run())
    try:
        yield tracker
    finally:
        client.stop()
        await asyncio.wait_for(task, 5)
        fake.stop()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_rtsp_camera_prerecord_trigger_stop_postrecord_with_gps(
    tmp_path: Path, recipient: RecipientPrivateKey, transport: str
) -> None:
    route = read_route()
    with (
        rtsp_camera(width=320, height=240, fps=25, gop=25, kbps=400) as url,
        store_on(tmp_path, recipient) as store,
    ):
        async with gps_from_gpsfake(tmp_path) as gps:
            spec = SourceSpec(
                name="dashcam", kind="rtsp_pull", url=url, rtsp_transport=transport, serial="DC-77"
            )
            camera = Camera(PyavSource(spec), prerecord_s=PRERECORD_S, ring_max_bytes=32 << 20)
            policy = RecorderPolicy(  # a policy that sets a post-record for the officer's stop
                prerecord_s=PRERECORD_S,
                default_trigger=TriggerPolicy(postrecord_s=POSTRECORD_S),
                officer_stop_postrecord_s=POSTRECORD_S,
            )
            service = CaptureService(
                store,
                [camera],
                policy,
                {"device_serial": "MVB-P"},
                gps_window=gps.samples_between,
                tick_s=0.1,
            )
            await service.start()
            try:
                await wait_for(
                    lambda: camera.ring.span_ns() >= PRERECORD_S * S,
                    "a full pre-record ring",
                )
                await wait_for(lambda: gps.fix is not None, "a GPS fix")
                trigger_ns = time.monotonic_ns()
                await service.trigger("officer")
                await asyncio.sleep(RECORD_S)
                stop_ns = time.monotonic_ns()
                await service.stop_recording()
                await wait_for(lambda: service.recording is None, "post-record to finish")
                await service.sealed()  # the post-record's end seals after its tick
                health = camera.source.health
                assert health.dropped == 0
            finally:
                await service.stop()

        [(report, media)] = decrypt_all(store, recipient)
    segs = segments(report)
    packets = video_packets(media)
    assert packets[0].is_keyframe, "the recording starts decodable"
    assert segs[0]["start_mono_ns"] <= trigger_ns - PRERECORD_S * S
    assert segs[-1]["end_mono_ns"] >= stop_ns + (POSTRECORD_S - 0.2) * S
    pts_steps = {b.pts - a.pts for a, b in itertools.pairwise(packets)}
    assert pts_steps == {3600}, f"gap or repeat in presentation timestamps: {pts_steps}"
    duration_s = (packets[-1].pts - packets[0].pts) / 90_000
    assert duration_s >= PRERECORD_S + RECORD_S + POSTRECORD_S - 0.5

    gps_samples = [m for m in report.metadata if m["type"] == "gps"]
    assert len(gps_samples) >= RECORD_S, "about one sample a second while GPS had a fix"
    for sample in gps_samples:
        fix = route[sample["gps_time_ms"]]
        assert abs(sample["lat"] - fix.lat) < 1e-5
        assert abs(sample["lon"] - fix.lon) < 1e-5
        assert sample["clock_offset_ms"] is not None
    times = [s["gps_time_ms"] for s in gps_samples]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
