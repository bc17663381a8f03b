"""The evidence as the back office sees it: decrypted files per camera, checked.

From `mvb-admin decrypt`'s output (media and metadata JSON per file): the duration by PTS, the
keyframe start, pre-record before the trigger, post-record after the stop, GPS samples on the
simulated route, trigger and stop sources; one frame per camera as PNG (PyAV, no PIL); and the
MPEG-TS sync pattern that gives away any plaintext footage.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from demo.gps_sim import route_position
from demo.live_box import LIGHTS, NS_PER_S, Incident, LivePlan
from demo.narration import DemoFailure, check, clock_text

MS_PER_S = 1000

TS_PACKET_BYTES = 188
TS_SYNC_BYTE = 0x47
TS_SYNC_RUN = 10  # packets: 10 sync bytes 188 apart happen by chance with p ~ 256**-10 per offset
ROUTE_TOLERANCE_M = 1.0

PRERECORD_SLACK_S = 2.0  # the snapshot starts at a keyframe up to one GOP (1 s) earlier
POSTRECORD_SLACK_S = 0.3  # the recorder ticks every 0.25 s; frames come every 40 ms


@dataclass(frozen=True, slots=True)
class DecryptedPart:
    """One decrypted evidence file: its metadata document (from mvb-admin decrypt) and media."""

    document: dict[str, Any]
    media: bytes

    @property
    def objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = self.document["metadata"]
        return objects

    @property
    def camera(self) -> str:
        recording = next(o for o in self.objects if o.get("type") == "recording")
        return str(recording.get("camera", ""))


def media_of(meta_path: Path) -> bytes:
    """The decrypted media next to a decrypted file's metadata JSON."""
    media = [p for p in meta_path.parent.glob(meta_path.stem + ".*") if p.suffix != ".json"]
    check(len(media) == 1, f"expected one media file for {meta_path.name}, found {len(media)}")
    return media[0].read_bytes()


def parts_by_camera(folder: Path, recording_id: str) -> dict[str, list[DecryptedPart]]:
    """The decrypted files of one recording, per camera, in file order."""
    parts: dict[str, list[DecryptedPart]] = {}
    for meta_path in sorted(folder.glob("*.json")):
        document = json.loads(meta_path.read_text())
        if document["recording_id"] == recording_id:
            part = DecryptedPart(document, media_of(meta_path))
            parts.setdefault(part.camera, []).append(part)
    for camera_parts in parts.values():
        camera_parts.sort(key=lambda p: int(p.document["file_seq"]))
    return parts


@dataclass(frozen=True, slots=True)
class VideoFacts:
    """What demuxing and decoding the media shows."""

    codec: str
    width: int
    height: int
    frames: int
    duration_s: float  # PTS of the last frame minus PTS of the first
    starts_on_keyframe: bool


def video_facts(media: bytes) -> VideoFacts:
    """Demux the MPEG-TS media; PTS give the duration, the first packet must be a keyframe."""
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        check(bool(packets), "the media holds no video packet")
        pts = [int(p.pts) for p in packets if p.pts is not None]
        time_base = stream_time_base(stream)
        return VideoFacts(
            codec=str(stream.codec_context.name),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            frames=len(packets),
            duration_s=float((max(pts) - min(pts)) * time_base),
            starts_on_keyframe=bool(packets[0].is_keyframe),
        )


def stream_time_base(stream: Any) -> Fraction:
    """A stream's time base (MPEG-TS: 1/90000)."""
    time_base = stream.time_base
    check(time_base is not None, "the video stream has no time base")
    return Fraction(time_base)


def save_frame_png(media: bytes, at_s: float, path: Path) -> float:
    """Decode the first frame at least `at_s` after the first one and save it as PNG (PyAV's png
    encoder, no PIL). Returns the frame's offset in seconds."""
    with av.open(io.BytesIO(media), mode="r", format="mpegts") as container:
        stream = container.streams.video[0]
        time_base = stream_time_base(stream)
        first_pts: int | None = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            first_pts = frame.pts if first_pts is None else first_pts
            offset_s = float((frame.pts - first_pts) * time_base)
            if offset_s >= at_s:
                path.write_bytes(encode_png(frame))
                return offset_s
    raise DemoFailure(f"no frame {at_s:.1f} s into the recording for {path.name}")


def encode_png(frame: Any) -> bytes:
    """One decoded video frame as a PNG file's bytes."""
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
    codec.time_base = Fraction(1, 25)
    rgb = frame.reformat(format="rgb24")
    return b"".join(bytes(p) for p in [*codec.encode(rgb), *codec.encode(None)])


def ts_sync_run(blob: bytes) -> int | None:
    """The offset of the first run of TS_SYNC_RUN bytes 0x47 spaced 188 apart (what plaintext
    MPEG-TS shows at every packet start), or None."""
    needle = bytes([TS_SYNC_BYTE]) * TS_SYNC_RUN
    found = []
    for phase in range(TS_PACKET_BYTES):
        index = blob[phase::TS_PACKET_BYTES].find(needle)
        if index >= 0:
            found.append(phase + index * TS_PACKET_BYTES)
    return min(found, default=None)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def off_route_m(sample: dict[str, Any], route_start_wall_ms: int) -> float:
    """How far a GPS sample lies from where the simulated route was at its GPS time."""
    t_s = (int(sample["gps_time_ms"]) - route_start_wall_ms) / MS_PER_S
    lat, lon, _speed, _track = route_position(t_s)
    return distance_m(float(sample["lat"]), float(sample["lon"]), lat, lon)


@dataclass(frozen=True, slots=True)
class CameraReport:
    """What the back office finds in one camera's part of the incident, checked."""

    camera: str
    serial: str
    file_ids: tuple[str, ...]
    media: bytes
    video: VideoFacts
    segments: int
    trigger_source: str
    trigger_at_ms: int
    stop_source: str
    prerecord_s: float  # metadata: trigger at_ms - first segment's start (wall clock)
    prerecord_mono_s: float  # the same on the monotonic clock, against the lights' edge
    postrecord_s: float  # metadata: last segment's end - stop at_ms (wall clock)
    postrecord_mono_s: float
    gps: tuple[dict[str, Any], ...]


def camera_report(camera: str, parts: list[DecryptedPart], incident: Incident) -> CameraReport:
    """Gather one camera's facts from its decrypted files (checks come separately)."""
    objects = [o for part in parts for o in part.objects]
    recording = next(o for o in objects if o.get("type") == "recording")
    segments = [o for o in objects if o.get("type") == "segment"]
    stops = [o for o in objects if o.get("type") == "event" and o.get("name") == "stop"]
    check(bool(segments), f"{camera}: no segment in the evidence")
    check(len(stops) == 1, f"{camera}: expected one stop event, found {len(stops)}")
    trigger, stop = recording["trigger"], stops[0]
    media = b"".join(part.media for part in parts)
    first, last = segments[0], segments[-1]
    return CameraReport(
        camera=camera,
        serial=str(recording.get("camera_serial", "")),
        file_ids=tuple(str(part.document["file_id"]) for part in parts),
        media=media,
        video=video_facts(media),
        segments=len(segments),
        trigger_source=str(trigger["source"]),
        trigger_at_ms=int(trigger["at_ms"]),
        stop_source=str(stop["source"]),
        prerecord_s=(int(trigger["at_ms"]) - int(first["start_wall_ms"])) / MS_PER_S,
        prerecord_mono_s=(incident.trigger_mono_ns - int(first["start_mono_ns"])) / NS_PER_S,
        postrecord_s=(int(last["end_wall_ms"]) - int(stop["at_ms"])) / MS_PER_S,
        postrecord_mono_s=(int(last["end_mono_ns"]) - incident.stop_mono_ns) / NS_PER_S,
        gps=tuple(o for o in objects if o.get("type") == "gps"),
    )


def check_report(report: CameraReport, plan: LivePlan, incident: Incident) -> None:
    """The protocol's promises about one camera's recording (RULES R1-R3, R5)."""
    name = report.camera
    check(report.video.starts_on_keyframe, f"{name}: the recording does not start on a keyframe")
    check(report.trigger_source == LIGHTS, f"{name}: trigger source {report.trigger_source!r}")
    check(report.stop_source == "officer", f"{name}: stop source {report.stop_source!r}")
    low, high = plan.prerecord_s - 0.05, plan.prerecord_s + PRERECORD_SLACK_S
    for label, value in (("", report.prerecord_s), (" (monotonic)", report.prerecord_mono_s)):
        check(low <= value <= high, f"{name}: pre-record{label} {value:.2f} s, not {low}..{high}")
    for label, value in (("", report.postrecord_s), (" (monotonic)", report.postrecord_mono_s)):
        floor = plan.postrecord_s - POSTRECORD_SLACK_S
        check(value >= floor, f"{name}: post-record{label} {value:.2f} s < {floor:.2f} s")
    expected_s = plan.prerecord_s + plan.incident_s + plan.postrecord_s
    check(
        report.video.duration_s >= expected_s - 1.0,
        f"{name}: {report.video.duration_s:.1f} s of video, expected about {expected_s:g} s",
    )
    check(
        len(report.gps) >= 0.75 * report.video.duration_s,
        f"{name}: only {len(report.gps)} GPS samples in {report.video.duration_s:.0f} s",
    )
    worst = max(off_route_m(s, incident.route_start_wall_ms) for s in report.gps)
    check(worst <= ROUTE_TOLERANCE_M, f"{name}: a GPS sample lies {worst:.1f} m off the route")
    check(ts_sync_run(report.media) is not None, f"{name}: decrypted media is not MPEG-TS")


def describe_report(report: CameraReport) -> list[str]:
    """What was recorded by one camera, in a few lines."""
    video, gps = report.video, report.gps
    first, last = gps[0], gps[-1]
    return [
        f"{report.camera} (serial {report.serial}): {video.duration_s:.2f} s of {video.codec} "
        f"{video.width}x{video.height} by PTS, {video.frames} frames, {report.segments} segments "
        f"in {len(report.file_ids)} file(s), {len(report.media):,} bytes",
        f"  starts on a keyframe: {'yes' if video.starts_on_keyframe else 'NO'}; trigger "
        f"{report.trigger_source!r} at {clock_text(report.trigger_at_ms)}, stop by "
        f"{report.stop_source!r}",
        f"  pre-record {report.prerecord_s:.2f} s before the trigger (monotonic "
        f"{report.prerecord_mono_s:.2f} s); post-record {report.postrecord_s:.2f} s after the "
        f"stop (monotonic {report.postrecord_mono_s:.2f} s)",
        f"  GPS: {len(gps)} samples, first {first['lat']:.5f}, {first['lon']:.5f} at "
        f"{first['speed_mps']:g} m/s, last {last['lat']:.5f}, {last['lon']:.5f}; all on the route",
    ]
