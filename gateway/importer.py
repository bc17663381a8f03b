"""`mvb import`: a docked bodycam's clip becomes evidence through the same writer as live capture,
attributed by its bodycam serial to the officer who held that bodycam at the clip's time
(`attribute_clip`, from the shift history).

The media bytes are stored exactly as they are in the clip (never transcoded); segments are the
byte ranges between keyframes, found by demuxing the clip with PyAV, so every segment boundary is
a durability point just as in live recording. The clip's sound stays in it (its bytes are
stored whole); the import event names its codec (`audio_codec`, null without sound).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av

from common.faults import RemoteFault
from gateway.officer.shift import BODYCAM_SERIAL
from gateway.officer.shift_history import bodycam_tag, holder_at, tag_key
from gateway.officer.shift_history_io import load_history
from storage.store import EvidenceStore
from storage.writer import SealedFile

_CONTAINERS = {"mpegts": "mpegts", "mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska"}
MIN_SEGMENT_S = 2.0


class ClipError(ValueError, RemoteFault):
    """The file is not a clip we can import; the message is one line for the CLI."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Whose clip it is (RULES R5): the facts the recording carries, and a line for the CLI."""

    facts: dict[str, Any]
    note: str


def attribute_clip(
    state_dir: Path, sign: Callable[[bytes], bytes], path: Path, serial: str, at_ms: int | None
) -> Attribution:
    """The officer who held bodycam `serial` when the clip was shot, from the shift history
    (gateway/officer/shift_history.py): sealed for the back office, as the history keeps it.
    The clip's time is `at_ms` (given), else its container's `creation_time`, else the file's
    modification time; the facts say which (`clip_time_source`)."""
    if not BODYCAM_SERIAL.fullmatch(serial):
        raise ClipError(f"a bodycam serial must match {BODYCAM_SERIAL.pattern}")
    time_source = "given"
    if at_ms is None:
        at_ms, time_source = clip_created_ms(path), "clip"
    if at_ms is None:
        at_ms, time_source = path.stat().st_mtime_ns // 1_000_000, "file_mtime"
    history = load_history(state_dir)
    holding = holder_at(history, bodycam_tag(tag_key(sign), serial), at_ms)
    facts = {
        "bodycam_serial": serial,
        "officer_id_sealed": None if holding is None else holding.officer_sealed,
        "clip_time_ms": at_ms,
        "clip_time_source": time_source,
    }
    who = "no officer held it" if holding is None else "attributed to the officer who held it"
    return Attribution(facts, f"bodycam {serial} at {at_ms} ms ({time_source}): {who}")


def recorded_at_ms(text: str) -> int:
    """`mvb import --recorded-at`: ISO 8601 with a zone (ClipError otherwise: a clip's time is
    never guessed in the box's zone)."""
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ClipError(f"--recorded-at {text!r} is not an ISO 8601 time") from exc
    if stamp.tzinfo is None:
        raise ClipError("--recorded-at needs a zone (Z or +01:00)")
    return int(stamp.timestamp() * 1000)


def clip_created_ms(path: Path) -> int | None:
    """The clip's `creation_time` tag (ISO 8601, as cameras and ffmpeg write it), or None."""
    try:
        with av.open(str(path)) as container:
            text = container.metadata.get("creation_time")
    except av.error.FFmpegError:
        return None
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


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
