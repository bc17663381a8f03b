"""Issue 15 item 2: a camera's gap is evidence, not a splice.

A real RTSP camera (gst-rtsp-server, on a fixed loopback port) is killed mid-recording and
started again on the same port. The box must retry it about every second while recording (the
slow standby backoff would cost seconds of evidence), note the loss and the return in the
recording's metadata and in the signed audit log, and keep the hole in the media timeline: the
ffprobe CLI reports the file as long as the wall time it covers (within a second; before issue
15 a restart inside one program made it ~26 hours), the hole shows as one jump in the video
timestamps as long as the outage, and `ffmpeg -c copy` to MP4 keeps that duration.

Left out: a camera that comes back with other codec parameters (a new program with the same
timeline rule, not exercised here); a push camera's gap (same service path, LinkEvents from the
same source loop).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import subprocess
import time
from pathlib import Path

import av

from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.source import PyavSource, SourceSpec
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from tests.cameras import free_port, rtsp_camera
from tests.capture_helpers import decrypt_all, segments, store_on, wait_for

S = 1_000_000_000
PRERECORD_S = 2.0
FPS = 25
RECONNECT_BOUND_S = 2.0  # issue 15: a camera back is recorded again within 2 s
# The box's part of the reconnect is its retry (at most 1 s while recording) and the RTSP setup;
# then FFmpeg's probe waits for the camera's next keyframe (its SPS), up to a GOP: the camera's
# part. A GOP of 0.5 s keeps the camera's part from deciding the test (with 1 s GOPs the worst
# case is 1 s + setup + 1 s). Measured: 0.7-1.3 s.
GOP_FRAMES = FPS // 2
GOP_S = GOP_FRAMES / FPS


def ffprobe_duration_s(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


async def test_camera_killed_and_restarted_mid_recording_leaves_a_marked_gap(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    port = free_port()
    with store_on(tmp_path, recipient) as store:
        # standby backoff as shipped (up to 30 s): the recording's retry must override it
        spec = SourceSpec(
            name="dashcam", kind="rtsp_pull", url=f"rtsp://127.0.0.1:{port}/cam", serial="DC-G"
        )
        camera = Camera(PyavSource(spec), prerecord_s=PRERECORD_S, ring_max_bytes=16 << 20)
        policy = RecorderPolicy(
            prerecord_s=PRERECORD_S, default_trigger=TriggerPolicy(postrecord_s=0.5)
        )
        service = CaptureService(store, [camera], policy, {"device_serial": "MVB-G"}, tick_s=0.1)
        health = camera.source.health
        with rtsp_camera(port=port, fps=FPS, gop=GOP_FRAMES, audio="aac") as _url:
            await service.start()
            await wait_for(lambda: health.packets > (PRERECORD_S + 1) * FPS, "a full ring")
            await service.trigger("officer")
            await asyncio.sleep(2.0)
        # the camera is gone (SIGTERM, its process waited for): the box sees the loss
        await wait_for(lambda: not health.connected, "the loss to be noticed")
        await asyncio.sleep(3.0)  # failed attempts pile up: in standby they would back off
        with rtsp_camera(port=port, fps=FPS, gop=GOP_FRAMES, audio="aac"):
            ready_ns = time.monotonic_ns()
            before = health.packets
            await wait_for(lambda: health.packets > before, "the camera back in the recording")
            back_after_s = (time.monotonic_ns() - ready_ns) / S
            await asyncio.sleep(2.0)
            await service.stop_recording()
            await wait_for(lambda: service.recording is None, "the recording to finish")
            await service.stop()
        audit = [(e.event, dict(e.fields)) for e in store.audit.entries()]
        [(report, media)] = decrypt_all(store, recipient)

    print(f"camera back in the recording {back_after_s:.2f} s after it served again")
    assert back_after_s <= RECONNECT_BOUND_S

    events = [m for m in report.metadata if m["type"] == "event"]
    [lost] = [e for e in events if e["name"] == "camera_lost"]
    [back] = [e for e in events if e["name"] == "camera_back"]
    assert lost["camera"] == back["camera"] == "dashcam"
    assert lost["reason"]
    assert back["gap_s"] >= 3.0
    assert back["at_ms"] - lost["at_ms"] >= 3000
    assert [name for name, _ in audit if name.startswith("gateway.camera_")] == [
        "gateway.camera_lost",
        "gateway.camera_back",
    ]
    [audited_back] = [f for name, f in audit if name == "gateway.camera_back"]
    assert audited_back["gap_s"] == back["gap_s"]

    segs = segments(report)
    gapped = [s for s in segs if s["gap_before_s"] is not None]
    assert [s["connection"] for s in gapped] == [segs[-1]["connection"]]
    # the hole in the media lasts from the last picture to the new connection's first keyframe:
    # the link's gap, plus at most a GOP of pictures that are not decodable on their own
    hole_s = gapped[0]["gap_before_s"]
    assert back["gap_s"] - 0.1 <= hole_s <= back["gap_s"] + GOP_S + 0.1

    # the timeline keeps the hole: duration = wall time covered, one jump the size of the gap
    wall_s = (segs[-1]["end_mono_ns"] - segs[0]["start_mono_ns"]) / S
    path = tmp_path / "recording.ts"
    path.write_bytes(media)
    probed_s = ffprobe_duration_s(path)
    print(f"wall {wall_s:.2f} s, ffprobe {probed_s:.2f} s, gap {back['gap_s']} s, hole {hole_s} s")
    assert abs(probed_s - wall_s) <= 1.0
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        pts = [p.pts for p in container.demux(video=0) if p.size and p.pts is not None]
    steps_s = [(b - a) / 90_000 for a, b in itertools.pairwise(pts)]
    assert all(step > 0 for step in steps_s), "the timeline never runs backwards"
    jumps = [step for step in steps_s if step > 0.5]
    assert len(jumps) == 1
    assert abs(jumps[0] - hole_s) < 0.2
    mp4 = tmp_path / "recording.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0", "-c", "copy", str(mp4)],
        check=True,
    )
    assert abs(ffprobe_duration_s(mp4) - wall_s) <= 1.0, "a remux keeps the hole"
