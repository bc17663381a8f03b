"""`mvb import`: a docked bodycam's clip becomes evidence through the same writer as live capture.

The media bytes are stored exactly as they are in the clip (never transcoded); segments are the
byte ranges between keyframes, found by demuxing the clip with PyAV, so every segment boundary is
a durability point just as in live recording. The clip's sound stays in it (its bytes are
stored whole); the import event names its codec (`audio_codec`, null without sound).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from common.faults import RemoteFault
from storage.store import EvidenceStore
from storage.writer import SealedFile

_CONTAINERS = {"mpegts": "mpegts", "mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska"}
MIN_SEGMENT_S = 2.0


class ClipError(ValueError, RemoteFault):
    """The file is not a clip we can import; the message is one line for the CLI."""


@dataclass(frozen=True, slots=True)
class ClipProbe:
    container: str
    duration_s: float | None
    codec: str
    segment_offsets: tuple[int, ...]
    segment_starts_s: tuple[float, ...]
    audio_codec: str | None = None


def probe_clip(path: Path) -> ClipProbe:
    """Demux `path` and find keyframe byte offsets at least MIN_SEGMENT_S apart."""
    try:
        with av.open(str(path)) as container:
            video = next((s for s in container.streams if s.type == "video"), None)
            if video is None:
                raise ClipError(f"{path.name}: no video stream")
            offsets, starts = _keyframe_cuts(container, video)
            duration_s = float(container.duration) / 1_000_000 if container.duration else None
            name = _CONTAINERS.get(container.format.name, container.format.name)
            codec = video.codec_context.name
            audio = next((s for s in container.streams if s.type == "audio"), None)
            audio_codec = None if audio is None else str(audio.codec_context.name)
    except av.error.FFmpegError as exc:
        raise ClipError(f"{path.name}: not a readable media file ({exc.strerror})") from exc
    if not offsets:
        raise ClipError(f"{path.name}: no keyframe found; not importable evidence")
    return ClipProbe(name, duration_s, codec, tuple(offsets), tuple(starts), audio_codec)


def _keyframe_cuts(container: Any, video: Any) -> tuple[list[int], list[float]]:
    offsets: list[int] = []
    starts: list[float] = []
    for packet in container.demux(video):
        if not packet.is_keyframe or packet.pos is None or packet.pos < 0 or packet.pts is None:
            continue
        at_s = float(packet.pts * packet.time_base)
        if not starts or at_s - starts[-1] >= MIN_SEGMENT_S:
            offsets.append(0 if not offsets else int(packet.pos))
            starts.append(at_s)
    return offsets, starts


def import_clip(
    store: EvidenceStore, path: Path, *, camera: str, facts: dict[str, Any]
) -> list[SealedFile]:
    """Record `path` as one recording of `camera`; return the sealed evidence files."""
    probe = probe_clip(path)
    data = path.read_bytes()
    recording = store.start_recording({**facts, "trigger": {"source": "import"}})
    try:
        stream = recording.open_stream(camera, container=probe.container)
        stream.add_metadata(
            {
                "type": "event",
                "name": "import",
                "at_ms": store.clock_ms(),
                "source_name": path.name,
                "source_sha256": hashlib.sha256(data).hexdigest(),
                "codec": probe.codec,
                "audio_codec": probe.audio_codec,
                "duration_s": probe.duration_s,
            }
        )
        bounds = [*probe.segment_offsets[1:], len(data)]
        for index, (start, end) in enumerate(zip(probe.segment_offsets, bounds, strict=True)):
            stream.append_media(data[start:end])
            stream.end_segment(
                {
                    "index": index,
                    "media_offset": start,
                    "media_bytes": end - start,
                    "start_pts_s": probe.segment_starts_s[index],
                    "keyframe_start": True,
                }
            )
    finally:
        sealed = recording.close()
    return sealed
