"""Issue 15 item 2: a camera's gap is evidence, not a splice.

A real RTSP camera (gst-rtsp-server, on a fixed loopback port) is killed mid-recording and
started again on the same port. The box must retry it about every second while recording (the
slow standby backoff would cost seconds of evidence), note the loss and the return in the
recording's metadata and in the signed audit log, and keep the hole in the media timeline: the
ffprobe CLI reports the file as long as the wall time it covers (within a second; before issue
15 a restart inside one program made it ~26 hours), the hole shows as one jump in the video
timestamps as long as the outage, and `ffmpeg -c copy` to MP4 keeps that duration.

Issue 15's "camera back within 2 s" is not a timed assertion here (a loaded machine stretches
it): the unit tests below prove what the box decides (its retry schedule while recording, and
that a recording ends a long standby backoff at once); the real-parts test proves the camera
does come back into the recording, with a generous deadline; `make bench-reconnect`
(bench/camera_reconnect.py) measures the figure against the 2 s bound.

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
from collections.abc import Iterator
from pathlib import Path

import av

from gateway.capture.camera import Camera
from gateway.capture.packet import CapturedPacket
from gateway.capture.service import CaptureService
from gateway.capture.source import RECORDING_RETRY_S, PyavSource, SourceSpec, ThreadedSource
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from tests.cameras import free_port, rtsp_camera
from tests.capture_helpers import decrypt_all, segments, store_on, wait_for

S = 1_000_000_000
PRERECORD_S = 2.0
FPS = 25
# The box's part of a reconnect is its retry (at most RECORDING_RETRY_S while recording) and the
# RTSP setup; then FFmpeg's probe waits for the camera's next keyframe (its SPS), up to a GOP: the
# camera's part. A GOP of 0.5 s keeps the camera's part small (bench/camera_reconnect.py measures
# the whole against issue 15's 2 s).
GOP_FRAMES = FPS // 2
GOP_S = GOP_FRAMES / FPS
BACK_DEADLINE_S = 30.0  # a deadline on the camera's return, not a measurement of it
STANDBY_S = 3600.0  # a standby backoff no test waits out: only a recording's wake ends it


class FailingCamera(ThreadedSource):
    """A camera that is never there: every connection fails at once; counts the attempts."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.attempts = 0

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        self.attempts += 1
        raise OSError("connection refused")
        yield  # a generator, as the sources are


def test_the_retry_schedule_is_the_slow_backoff_in_standby_and_a_second_while_recording() -> None:
    """What decides the reconnect, as data: the delay before each next attempt (shipped spec)."""
    source = FailingCamera(SourceSpec(name="dashcam", kind="rtsp_pull"))
    assert source.spec.recording_retry_s == RECORDING_RETRY_S == 1.0
    standby_s = [source.retry_delay_s(attempt) for attempt in range(40)]
    assert all(source.spec.backoff_min_s <= d <= source.spec.backoff_max_s for d in standby_s)
    assert max(standby_s[10:]) > 5 * RECORDING_RETRY_S, "standby backs off far beyond a second"
    source.set_recording(True)
    recording_s = [source.retry_delay_s(attempt) for attempt in range(40)]
    assert all(source.spec.backoff_min_s <= d <= RECORDING_RETRY_S for d in recording_s)
    source.set_recording(False)
    assert max(source.retry_delay_s(attempt) for attempt in range(10, 40)) > RECORDING_RETRY_S


async def test_a_recording_ends_a_standby_backoff_and_retries_at_its_own_pace() -> None:
    """The loop waits what the schedule says: in standby an hour after the first failure; once
    recording, the next attempt comes at once and then at the recording's pace. An hour against
    a deadline of seconds: the test cannot pass by waiting the backoff out."""
    spec = SourceSpec(
        name="dashcam",
        kind="rtsp_pull",
        backoff_min_s=STANDBY_S,
        backoff_max_s=STANDBY_S,
        recording_retry_s=0.05,
    )
    source = FailingCamera(spec)
    assert source.retry_delay_s(0) == STANDBY_S
    source.start(asyncio.get_running_loop())
    try:
        await wait_for(lambda: source.health.reconnects == 1, "the first failed attempt")
        source.set_recording(True)
        await wait_for(lambda: source.attempts >= 5, "retries at the recording's pace")
    finally:
        await source.stop()
    assert source.health.errors == source.attempts
    assert source.health.last_error == "OSError: connection refused"


def facts(camera: Camera) -> str:
    """What the source did so far, for a failure's message."""
    h = camera.source.health
    return f"connected={h.connected} tries={h.reconnects} errors={h.errors} last={h.last_error!r}"


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
            # the service put the camera on the recording's retry schedule (tested above)
            assert camera.source.retry_delay_s(30) <= RECORDING_RETRY_S
            await asyncio.sleep(2.0)
        # the camera is gone (SIGTERM, its process waited for): the box sees the loss
        await wait_for(lambda: not health.connected, "the loss to be noticed")
        await asyncio.sleep(3.0)  # failed attempts pile up: in standby they would back off
        with rtsp_camera(port=port, fps=FPS, gop=GOP_FRAMES, audio="aac"):
            before = health.packets
            returned = facts(camera)
            try:
                await wait_for(lambda: health.packets > before, "the camera back", BACK_DEADLINE_S)
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}: at its return {returned}, now {facts(camera)}"
                ) from exc
            await asyncio.sleep(2.0)
            await service.stop_recording()
            await wait_for(lambda: service.recording is None, "the recording to finish")
            await service.stop()
        audit = [(e.event, dict(e.fields)) for e in store.audit.entries()]
        [(report, media)] = decrypt_all(store, recipient)

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
    # the hole in the media lasts from the last picture to the new connection's first keyframe,
    # both arrival stamps of the box: it holds the link's gap (from the lost connection's last
    # packet to the new one's first: exact, no tolerance), plus what arrived before the first
    # keyframe (pictures that are not decodable on their own: at most a GOP, the camera's part)
    hole_s = gapped[0]["gap_before_s"]
    assert back["gap_s"] <= hole_s <= back["gap_s"] + GOP_S + 0.1

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
    assert abs(jumps[0] - hole_s) <= 0.001, "the timeline places the hole as measured"
    mp4 = tmp_path / "recording.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0", "-c", "copy", str(mp4)],
        check=True,
    )
    assert abs(ffprobe_duration_s(mp4) - wall_s) <= 1.0, "a remux keeps the hole"
