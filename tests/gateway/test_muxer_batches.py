"""Issue 18 item 1: a batch of packets muxed in one call (`SegmentMuxer.feed_many`) makes the same
recording as the packets muxed one at a time: the same MPEG-TS bytes, the same segments (offsets,
sizes, first and last picture, audio packets), the sound interleaved with the picture in the
sealed file; only the store is called less often.

The camera is a real clip (ffmpeg CLI: H.264 at 25 fps, a keyframe a second, AAC sound at 48 kHz)
read with PyAV; arrival times are its presentation times (a camera in real time). One side is a
recording `StreamWriter` stand-in (the three calls the muxer makes), to see the calls and bytes;
the other the real evidence store, sealed and decrypted.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import pytest

from gateway.capture.muxer import SegmentMuxer
from gateway.capture.packet import CapturedPacket, StreamTemplate
from storage.envelope import RecipientPrivateKey
from storage.store import StreamWriter
from storage.writer import DurablePoint
from tests.capture_helpers import decrypt_all, segments, store_on, write_sound_clip

CLIP_S = 4
FPS = 25
NS_PER_S = 1_000_000_000


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sound_clip(tmp_path_factory.mktemp("clips") / "av.ts", seconds=CLIP_S, fps=FPS)


@pytest.fixture(scope="module")
def camera(clip: Path) -> Iterator[list[CapturedPacket]]:
    """The clip's packets as a camera delivers them: in presentation order, stamped on
    arrival (here: the presentation time itself, from a monotonic origin)."""
    container = av.open(str(clip))
    try:
        video, audio = container.streams.video[0], container.streams.audio[0]
        template = StreamTemplate(video, 1, audio)
        timed = [
            (int(p.pts) * Fraction(p.time_base), p)
            for p in container.demux(video, audio)
            if p.size and p.pts is not None
        ]
        timed.sort(key=lambda item: item[0])
        origin_ns = 10 * NS_PER_S
        captured = []
        for pts_s, packet in timed:
            at_ns = origin_ns + int(pts_s * NS_PER_S)
            is_audio = packet.stream_index == audio.index
            captured.append(
                CapturedPacket(
                    packet,
                    template,
                    not is_audio and bool(packet.is_keyframe),
                    int(packet.size),
                    at_ns,
                    1_700_000_000_000 + at_ns // 1_000_000,
                    is_audio,
                )
            )
        yield captured
    finally:
        container.close()


class RecordingWriter:
    """What the muxer asks of a `StreamWriter`, recorded: media bytes, metadata, segments."""

    def __init__(self) -> None:
        self.media = bytearray()
        self.media_calls = 0
        self.segments: list[dict[str, Any]] = []
        self.metadata: list[dict[str, Any]] = []

    def append_media(self, data: bytes) -> None:
        self.media_calls += 1
        self.media += data

    def add_metadata(self, obj: dict[str, Any]) -> None:
        self.metadata.append(obj)

    def end_segment(self, segment: dict[str, Any]) -> DurablePoint:
        self.segments.append(segment)
        return DurablePoint(len(self.segments), len(self.media), len(self.media))


def bridge_batches(packets: list[CapturedPacket]) -> list[list[CapturedPacket]]:
    """Batches as the source's bridge hands them over: each ends with a keyframe."""
    batches: list[list[CapturedPacket]] = [[]]
    for captured in packets:
        batches[-1].append(captured)
        if captured.is_keyframe:
            batches.append([])
    return [batch for batch in batches if batch]


def random_batches(packets: list[CapturedPacket], seed: int) -> list[list[CapturedPacket]]:
    """Batches cut anywhere (a flush, the item bound, a backlog the loop took at once)."""
    rng = random.Random(seed)
    batches, start = [], 0
    while start < len(packets):
        end = start + rng.randint(1, 40)
        batches.append(packets[start:end])
        start = end
    return batches


def one_at_a_time(packets: list[CapturedPacket]) -> tuple[RecordingWriter, SegmentMuxer]:
    writer = RecordingWriter()
    muxer = SegmentMuxer(cast(StreamWriter, writer), lambda _a, _b: [], 1.0)
    for captured in packets:
        muxer.feed(captured)
    muxer.close()
    return writer, muxer


def in_batches(batches: list[list[CapturedPacket]]) -> tuple[RecordingWriter, SegmentMuxer]:
    writer = RecordingWriter()
    muxer = SegmentMuxer(cast(StreamWriter, writer), lambda _a, _b: [], 1.0)
    for batch in batches:
        muxer.feed_many(batch)
    muxer.close()
    return writer, muxer


def timed_packets(media: bytes) -> list[tuple[str, int, int]]:
    """(kind, dts, pts) of every packet of a TS, in file order."""
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        return [
            (p.stream.type, int(p.dts), int(p.pts))
            for p in container.demux()
            if p.size and p.dts is not None and p.pts is not None
        ]


def kept_audio(camera: list[CapturedPacket]) -> int:
    """Sound the recording keeps: what is timed at or after the first keyframe (the encoder's
    priming before the first picture is left out, by design: gateway/capture/muxer.py)."""
    start = next(c.at_mono_ns for c in camera if c.is_keyframe)
    return sum(1 for c in camera if c.is_audio and c.at_mono_ns >= start)


def test_the_clip_is_a_camera_with_sound(camera: list[CapturedPacket]) -> None:
    audio = [c for c in camera if c.is_audio]
    keyframes = [c for c in camera if c.is_keyframe]
    assert len(camera) - len(audio) == CLIP_S * FPS
    assert len(audio) > len(camera) - len(audio)  # AAC: more sound packets than frames
    assert len(keyframes) == CLIP_S


@pytest.mark.parametrize("cut", ["bridge", "random-1", "random-2", "whole"])
def test_a_batch_in_one_call_makes_the_same_recording(
    camera: list[CapturedPacket], cut: str
) -> None:
    batches = {
        "bridge": bridge_batches(camera),
        "random-1": random_batches(camera, 1),
        "random-2": random_batches(camera, 2),
        "whole": [camera],
    }[cut]
    assert [c for batch in batches for c in batch] == camera
    single, single_muxer = one_at_a_time(camera)
    batched, batched_muxer = in_batches(batches)

    assert bytes(batched.media) == bytes(single.media)
    assert batched.segments == single.segments
    assert batched_muxer.stats == single_muxer.stats
    assert len(batched.segments) == CLIP_S
    # one store call per batch at most, plus one per segment end and the trailer
    assert batched.media_calls <= len(batches) + len(batched.segments) + 1
    assert batched.media_calls < single.media_calls / 2


def test_segments_account_for_every_byte_in_order(camera: list[CapturedPacket]) -> None:
    writer, muxer = in_batches(bridge_batches(camera))
    offset = 0
    for segment in writer.segments:
        assert segment["media_offset"] == offset
        offset += segment["media_bytes"]
    assert offset == len(writer.media)
    assert sum(s["audio"]["packets"] for s in writer.segments) == kept_audio(camera)
    assert sum(s["packets"] for s in writer.segments) == CLIP_S * FPS
    assert muxer.stats.rejected_by_muxer == 0


def test_sealed_file_from_batches_holds_the_sound_interleaved_with_the_picture(
    tmp_path: Path, camera: list[CapturedPacket], recipient: RecipientPrivateKey
) -> None:
    single, _ = one_at_a_time(camera)
    with store_on(tmp_path, recipient) as store:
        recording = store.start_recording({"trigger": {"source": "officer"}})
        stream = recording.open_stream("dashcam", record_audio=True)
        muxer = SegmentMuxer(stream, lambda _a, _b: [], 1.0)
        for batch in bridge_batches(camera):
            muxer.feed_many(batch)
        muxer.close()
        recording.close()
        (report, media), *others = decrypt_all(store, recipient)
    assert others == []
    assert media == bytes(single.media)  # what was sealed is what one-at-a-time muxing makes
    assert len(segments(report)) == CLIP_S

    timed = timed_packets(media)
    kinds = [kind for kind, _, _ in timed]
    assert kinds.count("video") == CLIP_S * FPS
    assert kinds.count("audio") == kept_audio(camera)
    for kind in ("video", "audio"):  # each stream's own timestamps only grow
        dts = [d for k, d, _ in timed if k == kind]
        assert dts == sorted(dts)
    # interleaved through the file, not the sound after the picture: in every second of
    # picture there is sound, and the file order keeps the two within the muxer's bound
    video_at = [i for i, kind in enumerate(kinds) if kind == "video"]
    audio_at = [i for i, kind in enumerate(kinds) if kind == "audio"]
    assert audio_at[0] < video_at[FPS]
    assert audio_at[-1] > video_at[-FPS]
    for second in range(CLIP_S):
        first, last = video_at[second * FPS], video_at[(second + 1) * FPS - 1]
        assert any(first < i < last for i in audio_at)
