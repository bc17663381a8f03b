"""One camera's part of a recording: packets in, keyframe-aligned MPEG-TS segments out.

Stream copy: packets are remuxed into MPEG-TS (PyAV, `flush_packets` so every packet's bytes come
out at once), never decoded. A segment ends at the first keyframe after `segment_min_s`; that
boundary is where the store makes everything durable (fsync) and acknowledges it. MPEG-TS stays
playable when cut, and a new camera connection (generation) starts a new segment and a new TS
program at its first keyframe, placed on the recording's timeline after the hole the box saw
(gateway/capture/timeline.py): players and ffprobe show the real duration and the gap.

Audio (when the recording keeps it, `with_audio`) goes into the same program as a second stream,
with the same offset as its connection's video, so the camera's A/V sync is kept. Video packets
of a connection before its first keyframe are skipped: a segment starts decodable. Audio that
arrived before that keyframe (a camera's encoder delays the picture more than the sound) is held
back, and what of it is timed at or after the keyframe goes in right behind it: the sound starts
within one audio frame of the picture instead of a video encoder's delay later.

The packets are the ring's (shared, refcounted): their timestamps are shifted only for the
muxer's call and restored at once, so a later recording from the same ring sees them unchanged.

Batches (issue 18): `feed_many` muxes what the camera's loop handed over together and gives the
store its bytes in one `append_media`, not one per packet. The bytes are the same, in the same
order, and reach the store before anything that ends a segment, starts another muxer or adds
metadata: a segment's bytes, offsets and durable point do not depend on how packets were batched.

Synchronous: it runs on the camera's own worker thread (see `gateway.capture.service`).
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from gateway.capture.packet import CapturedPacket, StreamTemplate
from gateway.capture.timeline import Timeline, ticks
from storage.store import StreamWriter
from storage.writer import DurablePoint

SEGMENT_JITTER_ALLOWANCE = 0.9
# With two streams FFmpeg's muxer interleaves by timestamp and holds packets until every stream
# has one, up to `max_interleave_delta` (default 10 s): a camera whose sound stops would then
# hold the picture back from the card (and from the segment's fsync) for 10 s. 0.1 s bounds it.
MAX_INTERLEAVE_DELTA_US = 100_000
LEADING_AUDIO_PACKETS = 256  # audio held before a connection's first keyframe (seconds of it)

GpsWindow = Callable[[int, int], list[dict[str, Any]]]
"""(start_mono_ns, end_mono_ns) -> GPS samples taken in that window (JSON-able dicts)."""


class _Collect(io.RawIOBase):
    """A file-like the TS muxer writes into; drained into the store once per batch and before
    a segment ends (`SegmentMuxer._flush_media`)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


class _TsMuxer:
    """An MPEG-TS muxer for one stream template: its video, and its audio when kept."""

    def __init__(self, template: StreamTemplate, with_audio: bool) -> None:
        self.template = template
        self.sink = _Collect()
        self.container = av.open(
            self.sink,
            mode="w",
            format="mpegts",
            options={"flush_packets": "1", "max_interleave_delta": str(MAX_INTERLEAVE_DELTA_US)},
        )
        self.stream = self.container.add_stream_from_template(template.stream)
        self.audio = None
        if with_audio and template.audio is not None:
            self.audio = self.container.add_stream_from_template(template.audio)

    def mux(self, captured: CapturedPacket, shift: int) -> None:
        """Mux one packet shifted by `shift` ticks of its time base into the sink; the shared
        packet is left as it was."""
        packet = captured.packet
        pts, dts, time_base = packet.pts, packet.dts, packet.time_base
        try:
            packet.stream = self.audio if captured.is_audio else self.stream
            if shift:
                packet.pts = None if pts is None else pts + shift
                packet.dts = None if dts is None else dts + shift
            self.container.mux(packet)
        finally:
            packet.time_base = time_base  # mux rebases the packet in place
            packet.pts, packet.dts = pts, dts

    def close(self) -> None:
        """Write the trailer into the sink (drained by the caller)."""
        self.container.close()


@dataclass(slots=True)
class _Segment:
    index: int
    start_mono_ns: int
    start_wall_ms: int
    media_offset: int
    first_pts: int | None
    end_mono_ns: int = 0
    end_wall_ms: int = 0
    last_pts: int | None = None  # the latest video pts written (shifted)
    last_pts_mono_ns: int = 0  # when that picture arrived
    packets: int = 0
    media_bytes: int = 0
    time_base: str = ""
    generation: int = 0
    gap_before_s: float | None = None
    offset_s: Fraction = Fraction(0)
    # the offset in ticks of the video's and the audio's time base (computed once: Fractions
    # per packet would cost more than the mux)
    shift_ticks: dict[bool, int] = field(default_factory=dict)  # is_audio -> ticks
    audio_packets: int = 0
    audio: dict[str, Any] | None = None  # the connection's audio, when the recording keeps it


@dataclass(slots=True)
class MuxerStats:
    segments: int = 0
    packets: int = 0
    skipped_until_keyframe: int = 0
    audio_packets: int = 0
    audio_not_kept: int = 0  # audio the camera sent while the recording keeps none
    rejected_by_muxer: int = 0
    last_durable: DurablePoint | None = None


class SegmentMuxer:
    """Feeds one StreamWriter. Invariant: every segment starts on a keyframe."""

    def __init__(
        self,
        writer: StreamWriter,
        gps_window: GpsWindow,
        segment_min_s: float,
        *,
        with_audio: bool = True,
    ) -> None:
        self._writer = writer
        self._with_audio = with_audio
        self._timeline = Timeline()
        self._leading_audio: deque[CapturedPacket] = deque(maxlen=LEADING_AUDIO_PACKETS)
        self._gps_window = gps_window
        self._segment_min_ns = int(segment_min_s * 1e9)
        self._muxer: _TsMuxer | None = None
        self._segment: _Segment | None = None
        self._media_offset = 0
        self.stats = MuxerStats()

    def feed(self, captured: CapturedPacket) -> DurablePoint | None:
        """Mux one packet; returns the durable point when it closed a segment."""
        durable = self._take(captured)
        self._flush_media()
        return durable

    def feed_many(self, packets: list[CapturedPacket]) -> None:
        """Mux packets in order, their bytes to the store once at the end (and before every
        segment end among them): the same file as `feed` one at a time, fewer calls."""
        for captured in packets:
            self._take(captured)
        self._flush_media()

    def _take(self, captured: CapturedPacket) -> DurablePoint | None:
        if captured.is_audio and not self._with_audio:
            self.stats.audio_not_kept += 1
            return None
        durable = None
        if captured.is_keyframe and self._segment_is_due(captured):
            durable = self._end_segment(until_mono_ns=captured.at_mono_ns)
        if self._segment is None and captured.is_keyframe:
            self._start_segment(captured)
            self._append(captured)
            self._append_leading_audio(captured)
            return durable
        if self._segment is None or captured.template.generation != self._segment.generation:
            # before a (new) connection's first keyframe: not decodable yet, not ours yet
            if captured.is_audio:
                self._leading_audio.append(captured)
            else:
                self.stats.skipped_until_keyframe += 1  # a segment must start decodable
            return durable
        self._append(captured)
        return durable

    def _append_leading_audio(self, keyframe: CapturedPacket) -> None:
        """The held-back audio of the keyframe's connection timed at or after it."""
        start_s = _pts_s(keyframe)
        for audio in self._leading_audio:
            if audio.template is keyframe.template and _pts_s(audio) >= start_s:
                self._append(audio)
        self._leading_audio.clear()

    def close(self) -> DurablePoint | None:
        """Flush the muxer's trailer into the last segment and end it (durable)."""
        if self._muxer is not None:
            self._muxer.close()
            self._flush_media()
            self._muxer = None
        if self._segment is None:
            return None
        return self._end_segment(until_mono_ns=self._segment.end_mono_ns + 1)

    def _segment_is_due(self, captured: CapturedPacket) -> bool:
        segment = self._segment
        if segment is None:
            return False
        new_connection = captured.template.generation != segment.generation
        # Arrival times jitter by milliseconds: with a GOP equal to segment_min_s, a keyframe
        # arriving a hair early would otherwise miss the cut and double the segment at random.
        elapsed_ns = captured.at_mono_ns - segment.start_mono_ns
        long_enough = elapsed_ns >= self._segment_min_ns * SEGMENT_JITTER_ALLOWANCE
        return new_connection or long_enough

    def _start_segment(self, captured: CapturedPacket) -> None:
        if self._muxer is None or self._muxer.template is not captured.template:
            self._switch_muxer(captured.template)
        generation = captured.template.generation
        gap = None
        if not self._timeline.knows(generation):
            gap = self._timeline.anchor(generation, _pts_s(captured), captured.at_mono_ns)
        offset_s = self._timeline.place(generation, Fraction(0))
        self._segment = _Segment(
            index=self.stats.segments,
            start_mono_ns=captured.at_mono_ns,
            start_wall_ms=captured.at_wall_ms,
            media_offset=self._media_offset,
            first_pts=None if captured.pts is None else captured.pts + _ticks(captured, offset_s),
            time_base=str(captured.packet.time_base),
            generation=generation,
            gap_before_s=None if gap is None else round(gap.gap_s, 3),
            offset_s=offset_s,
            audio=captured.template.audio_facts() if self._with_audio else None,
        )

    def _switch_muxer(self, template: StreamTemplate) -> None:
        if self._muxer is not None:
            self._muxer.close()
            self._flush_media()
        self._muxer = _TsMuxer(template, self._with_audio)

    def _append(self, captured: CapturedPacket) -> None:
        assert self._muxer is not None
        assert self._segment is not None
        segment = self._segment
        try:
            shift = segment.shift_ticks.get(captured.is_audio)
            if shift is None:
                shift = segment.shift_ticks[captured.is_audio] = _ticks(captured, segment.offset_s)
            self._muxer.mux(captured, shift)
        except av.error.FFmpegError:
            # e.g. a camera's non-monotonic DTS: this packet cannot be stored; count it, go on
            self.stats.rejected_by_muxer += 1
            return
        segment.end_mono_ns = max(segment.end_mono_ns, captured.at_mono_ns)
        segment.end_wall_ms = max(segment.end_wall_ms, captured.at_wall_ms)
        if captured.is_audio:
            segment.audio_packets += 1
            self.stats.audio_packets += 1
            return
        segment.packets += 1
        self.stats.packets += 1
        if captured.pts is not None:
            out_pts = captured.pts + shift
            if segment.last_pts is None or out_pts > segment.last_pts:
                segment.last_pts = out_pts  # the latest picture: where a next connection follows
                segment.last_pts_mono_ns = captured.at_mono_ns

    def _flush_media(self) -> None:
        """What the muxer wrote since the last flush, to the store (and the current segment)."""
        if self._muxer is None or not self._muxer.sink.chunks:
            return
        data = self._muxer.sink.drain()
        self._writer.append_media(data)
        self._media_offset += len(data)
        if self._segment is not None:
            self._segment.media_bytes += len(data)

    def _end_segment(self, until_mono_ns: int) -> DurablePoint:
        """`until_mono_ns` is where the next segment starts: the GPS windows of consecutive
        segments meet, so no sample falls between them."""
        self._flush_media()  # the segment's bytes, before its end is recorded
        segment, self._segment = self._segment, None
        assert segment is not None
        if segment.last_pts is not None:  # where a next connection is measured from
            last_s = segment.last_pts * Fraction(segment.time_base)
            self._timeline.note_video(last_s, segment.last_pts_mono_ns)
        for sample in self._gps_window(segment.start_mono_ns, until_mono_ns):
            self._writer.add_metadata({"type": "gps", **sample})
        durable = self._writer.end_segment(
            {
                "index": segment.index,
                "start_wall_ms": segment.start_wall_ms,
                "start_mono_ns": segment.start_mono_ns,
                "end_wall_ms": segment.end_wall_ms,
                "end_mono_ns": segment.end_mono_ns,
                "media_offset": segment.media_offset,
                "media_bytes": segment.media_bytes,
                "first_pts": segment.first_pts,
                "last_pts": segment.last_pts,
                "time_base": segment.time_base,
                "packets": segment.packets,
                "keyframe_start": True,
                "connection": segment.generation,
                # seconds the camera was away before this segment (a new connection), else null
                "gap_before_s": segment.gap_before_s,
                "audio": None
                if segment.audio is None
                else {**segment.audio, "packets": segment.audio_packets},
            }
        )
        self.stats.segments += 1
        self.stats.last_durable = durable
        return durable


def _pts_s(captured: CapturedPacket) -> Fraction:
    pts = captured.pts
    return Fraction(0) if pts is None else pts * Fraction(captured.packet.time_base)


def _ticks(captured: CapturedPacket, offset_s: Fraction) -> int:
    """`offset_s` in ticks of the packet's time base."""
    return ticks(offset_s, Fraction(captured.packet.time_base)) if offset_s else 0
