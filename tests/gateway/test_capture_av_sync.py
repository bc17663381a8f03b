"""Issue 15 item 1: the A/V offset, measured on the content.

A camera whose picture flashes white and whose sound beeps at the same instant, every second
(made by the ffmpeg CLI from lavfi sources into an MP4: the flash is the frame at each whole
second, the beep a 50 ms 1 kHz tone from that second on), pushes by RTSP (ANNOUNCE/RECORD, RTP
with RTCP sender reports, ffmpeg's own RTSP muxer) to the box's `rtsp_listen` source. The
recording is decrypted with the back office's key and decoded: each flash's presentation time
and the onset of the beep nearest to it give the A/V offset. The same measure on the clip the
camera sent is the baseline (an AAC encoder's priming is the camera's own offset); the box must
not add more than one video frame to it. The first beep of a recording may decode late (an AAC
decoder primes on its first frame): the spread allows one frame.
"""

from __future__ import annotations

import array
import asyncio
import io
import statistics
import subprocess
from pathlib import Path

import av

from gateway.capture.camera import Camera
from gateway.capture.credentials import Credentials
from gateway.capture.rtsp_push import RtspPushSource
from gateway.capture.service import CaptureService
from gateway.capture.source import SourceSpec
from gateway.recorder import RecorderPolicy, TriggerPolicy
from storage.envelope import RecipientPrivateKey
from tests.cameras import ffmpeg_push_rtsp
from tests.capture_helpers import decrypt_all, store_on, wait_for

FPS = 25
FRAME_S = 1 / FPS
CLIP_S = 20
BEEP_LEVEL = 0.1  # |sample| above this is the beep (the rest is silence)
BEEP_GAP_S = 0.2  # a beep is 50 ms of tone in a second of silence
FLASH_LUMA = 128  # mean luma above this is the flash (the rest is black)


def make_flash_beep_clip(path: Path) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i",
         f"color=c=black:s=160x120:r={FPS},"
         "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t\\,1)\\,0.02)'",
         "-f", "lavfi", "-i",
         "aevalsrc=exprs='if(lt(mod(t\\,1)\\,0.05)\\,0.8*sin(2*PI*1000*t)\\,0)':s=48000",
         "-t", str(CLIP_S), "-c:v", "libx264", "-g", str(FPS), "-bf", "0",
         "-tune", "zerolatency", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip


def flashes_and_beeps(media: bytes, fmt: str) -> tuple[list[float], list[float]]:
    """Times (s) of the flash frames and of the beep onsets in a file of format `fmt`."""
    flashes: list[float] = []
    beeps: list[float] = []
    last_loud_s = float("-inf")
    with av.open(io.BytesIO(media), mode="r", format=fmt) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        for packet in container.demux(video, audio):
            time_base = packet.stream.time_base
            assert time_base is not None
            for frame in packet.decode():
                if not isinstance(frame, av.VideoFrame | av.AudioFrame) or frame.pts is None:
                    continue
                at_s = float(frame.pts * time_base)
                if isinstance(frame, av.VideoFrame):
                    luma = bytes(frame.planes[0])
                    if sum(luma) / len(luma) > FLASH_LUMA:
                        flashes.append(at_s)
                if not isinstance(frame, av.AudioFrame):
                    continue
                samples = array.array("f", bytes(frame.planes[0]))[: frame.samples]
                for index, sample in enumerate(samples):
                    if abs(sample) <= BEEP_LEVEL:
                        continue
                    sample_s = at_s + index / frame.sample_rate
                    if sample_s - last_loud_s > BEEP_GAP_S:
                        beeps.append(sample_s)  # an onset: loud after a silence
                    last_loud_s = sample_s
    return flashes, beeps


def av_offsets_s(media: bytes, fmt: str = "mpegts") -> list[float]:
    """For every flash, the nearest beep onset minus the flash (positive: sound late)."""
    flashes, beeps = flashes_and_beeps(media, fmt)
    assert len(flashes) >= 3, flashes
    assert len(beeps) >= 3, beeps
    return [min((b - f for b in beeps), key=abs) for f in flashes]


def listening(source: RtspPushSource) -> bool:
    try:
        return source.listener.port > 0
    except AssertionError:  # not bound yet
        return False


async def test_the_box_keeps_the_cameras_av_sync(
    tmp_path: Path, recipient: RecipientPrivateKey
) -> None:
    clip = tmp_path / "flash-beep.mp4"  # AAC with global headers, as ffmpeg's RTSP muxer wants
    make_flash_beep_clip(clip)
    camera_offset_s = statistics.median(av_offsets_s(clip.read_bytes(), "mp4"))

    with store_on(tmp_path, recipient) as store:
        spec = SourceSpec(
            name="bodycam", kind="rtsp_listen", listen_address="127.0.0.1", auth="digest"
        )
        source = RtspPushSource(spec, Credentials("bc1", "secret"))
        camera = Camera(source, prerecord_s=2.0, ring_max_bytes=8 << 20)
        service = CaptureService(
            store,
            [camera],
            RecorderPolicy(prerecord_s=2.0, default_trigger=TriggerPolicy(postrecord_s=0)),
            {},
            tick_s=0.1,
        )
        await service.start()
        try:
            await wait_for(lambda: listening(source), "the box listening")
            url = f"rtsp://bc1:secret@127.0.0.1:{source.listener.port}/bodycam"
            with ffmpeg_push_rtsp(url, clip):
                await wait_for(lambda: source.health.packets > 3 * FPS, "the camera", 30)
                await service.trigger("officer")
                await asyncio.sleep(6.0)
                await service.stop_recording()
                await wait_for(lambda: service.recording is None, "the recording to finish")
        finally:
            await service.stop()
        [(_report, media)] = decrypt_all(store, recipient)
    offsets = av_offsets_s(media)
    box_offset_s = statistics.median(offsets)
    print(
        f"A/V offset: camera's clip {camera_offset_s * 1000:.1f} ms, recording"
        f" {box_offset_s * 1000:.1f} ms (spread {min(offsets) * 1000:.1f}"
        f"..{max(offsets) * 1000:.1f} ms over {len(offsets)} flashes)"
    )
    assert abs(box_offset_s - camera_offset_s) <= FRAME_S
    assert max(offsets) - min(offsets) <= FRAME_S, "the offset holds across the recording"
