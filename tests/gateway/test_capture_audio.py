"""Issue 15 item 1: a camera's sound is recorded (stream copy), in sync with its picture.

A real RTSP camera (gst-rtsp-server: `videotestsrc` and `audiotestsrc` ticks, encoded as a
camera sends them: AAC, Opus, G.711 A-law) is pulled by the box's own source into the pre-record
ring and a recording; the recording is decrypted at the back office (`mvb-admin decrypt` with
its recording key, logged in a viewing log) and read by the ffprobe CLI and PyAV. The sound must
be there from the pre-record on, start within one video frame of the picture, last as long as
the picture within one frame, and carry the codec the camera sent. With `record_audio` off,
neither the ring nor the file holds a byte of sound.

A/V offset measured here: the difference of the first audio and video presentation times in the
file (the camera's own RTP/RTCP timing, kept by stream copy), printed per codec; on the content
(a flash and a beep) in tests/gateway/test_capture_av_sync.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from backoffice.keys import create_recording_keys
from gateway.capture.camera import Camera
from gateway.capture.service import CaptureService
from gateway.capture.source import PyavSource, SourceSpec
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from storage.reader import ReadReport
from tests.cameras import rtsp_camera
from tests.capture_helpers import decrypt_all, segments, store_on, wait_for

MVB_ADMIN = Path(sys.executable).with_name("mvb-admin")
PRERECORD_S = 2.0
RECORD_S = 3.0
FPS = 25
FRAME_S = Fraction(1, FPS)


def ffprobe_streams(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    )
    streams: list[dict[str, Any]] = json.loads(out.stdout)["streams"]
    return streams


def span_s(media: bytes, kind: str) -> tuple[Fraction, Fraction]:
    """(first pts, end) of a stream in seconds; the end is the last packet's pts plus its
    duration (a video frame, or the audio packet's own duration)."""
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        streams = [s for s in container.streams if s.type == kind]
        timed = [
            (int(p.pts), int(p.duration or 0), Fraction(p.time_base))
            for p in container.demux(streams[0])
            if p.size and p.pts is not None
        ]
    time_base = timed[0][2]
    first = min(pts for pts, _, _ in timed) * time_base
    last_pts, last_duration, _ = max(timed)
    duration = last_duration * time_base if last_duration else FRAME_S
    return first, last_pts * time_base + duration


def back_office_decrypt(evidence: Path, key: Path, tmp_path: Path) -> bytes:
    """The media of `evidence` as the back office decrypts it (`mvb-admin decrypt`, logged in
    a viewing log), read from what the command wrote."""
    log, out = tmp_path / "viewing", tmp_path / "decrypted"
    subprocess.run([MVB_ADMIN, "viewing", "init", "--log", log], check=True, capture_output=True)
    subprocess.run(
        [MVB_ADMIN, "decrypt", evidence, "--key", key, "--out", out, "--log", log,
         "--reason", "test: issue 15 sound"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    [media] = out.glob("*.ts")
    return media.read_bytes()


async def record(
    tmp_path: Path, url: str, *, record_audio: bool
) -> tuple[ReadReport, bytes, dict[str, Any]]:
    """A recording of the camera at `url`: its metadata, its media as the back office decrypts
    it, and the service's status at its end."""
    key, _public = create_recording_keys(tmp_path / "keys")
    recipient = RecipientPrivateKey.load(key)
    with store_on(tmp_path, recipient) as store:
        spec = SourceSpec(name="dashcam", kind="rtsp_pull", url=url, serial="DC-A")
        camera = Camera(PyavSource(spec), prerecord_s=PRERECORD_S, ring_max_bytes=16 << 20)
        policy = RecorderPolicy(
            prerecord_s=PRERECORD_S, default_trigger=TriggerPolicy(postrecord_s=0.5)
        )
        service = CaptureService(
            store, [camera], policy, {"device_serial": "MVB-A"}, record_audio=record_audio
        )
        await service.start()
        try:
            # a ring that starts mid-stream (past the connection's first GOP), as in the field
            await wait_for(lambda: camera.source.health.packets > (PRERECORD_S + 2) * FPS, "ring")
            if not record_audio:
                assert not any(p.is_audio for p in camera.ring.snapshot(0)), "no sound in RAM"
            assert camera.source.health.audio_packets > 0, "the camera does send sound"
            await service.trigger("officer")
            await asyncio.sleep(RECORD_S)
            await service.stop_recording()
            await wait_for(lambda: service.recording is None, "the recording to finish")
            status = service.status()
        finally:
            await service.stop()
        [(report, media)] = decrypt_all(store, recipient)
        [evidence] = store.layout.sealed_files()
        decrypted = back_office_decrypt(evidence, key, tmp_path)
    assert decrypted == media, "the back office's decryption is the reader's"
    return report, decrypted, status


@pytest.mark.parametrize(("audio", "codec"), [("aac", "aac"), ("opus", "opus")])
async def test_camera_sound_is_recorded_in_sync(tmp_path: Path, audio: str, codec: str) -> None:
    with rtsp_camera(fps=FPS, gop=FPS, audio=audio) as url:
        report, media, status = await record(tmp_path, url, record_audio=True)
    assert status["cameras"]["dashcam"]["audio"] == "recorded"
    path = tmp_path / "recording.ts"
    path.write_bytes(media)
    kinds = {s["codec_type"]: s["codec_name"] for s in ffprobe_streams(path)}
    assert kinds == {"video": "h264", "audio": codec}

    video_start, video_end = span_s(media, "video")
    audio_start, audio_end = span_s(media, "audio")
    offset_s = audio_start - video_start
    print(f"{codec}: A/V start offset {float(offset_s) * 1000:.1f} ms")
    assert abs(offset_s) <= FRAME_S, "the sound starts with the picture"
    assert abs((audio_end - audio_start) - (video_end - video_start)) <= FRAME_S
    assert video_end - video_start >= PRERECORD_S + RECORD_S, "pre-record included"

    segs = segments(report)
    assert all(s["audio"]["codec"] == codec for s in segs)
    assert sum(s["audio"]["packets"] for s in segs) > 0
    assert report.metadata[0]["type"] == "recording"
    assert report.metadata[0]["record_audio"] is True


async def test_g711_is_kept_as_a_named_private_stream(tmp_path: Path) -> None:
    """MPEG-TS has no stream type for G.711: FFmpeg writes it as private data. The bytes are
    the camera's (stream copy), the metadata names codec and rate, so a reader decodes them."""
    with rtsp_camera(fps=FPS, gop=FPS, audio="pcma") as url:
        report, media, _ = await record(tmp_path, url, record_audio=True)
    [audio] = {s["audio"]["codec"]: s["audio"] for s in segments(report)}.values()
    assert audio["codec"] == "pcm_alaw"
    assert audio["sample_rate_hz"] == 8000
    assert audio["playable_in_ts"] is False
    video_start, video_end = span_s(media, "video")
    data_start, data_end = span_s(media, "data")
    assert abs(data_start - video_start) <= FRAME_S
    assert abs((data_end - data_start) - (video_end - video_start)) <= FRAME_S
    # a reader who knows the codec (from the metadata) decodes the private stream as A-law
    path = tmp_path / "recording.ts"
    path.write_bytes(media)
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:d:0",
            "-c",
            "copy",
            "-f",
            "data",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert len(raw) >= 8000 * (PRERECORD_S + RECORD_S), "a byte per sample at 8 kHz"


async def test_record_audio_off_keeps_no_sound(tmp_path: Path) -> None:
    with rtsp_camera(fps=FPS, gop=FPS, audio="aac") as url:
        report, media, status = await record(tmp_path, url, record_audio=False)
    assert status["record_audio"] is False
    assert status["cameras"]["dashcam"]["audio"] == "off"
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        assert [s.type for s in container.streams] == ["video"]
    assert all(s["audio"] is None for s in segments(report))
    assert report.metadata[0]["record_audio"] is False
