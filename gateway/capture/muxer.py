"""One camera's part of a recording: packets in, keyframe-aligned MPEG-TS segments out.

Stream copy: packets are remuxed into MPEG-TS (PyAV, `flush_packets` so every packet's bytes come
out at once), never decoded. A segment ends at the first keyframe after `segment_min_s`; that
boundary is where the store makes everything durable (fsync) and acknowledges it. MPEG-TS stays
playable when cut, and a new camera connection (generation) starts a new TS program at its first
keyframe.

Synchronous: it runs on the camera's own worker thread (see `gateway.capture.service`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av

from gateway.capture.packet import CapturedPacket, StreamTemplate
from storage.store import StreamWriter
from storage.writer import DurablePoint

SEGMENT_JITTER_ALLOWANCE = 0.9

GpsWindow = Callable[[int, int], list[dict[str, Any]]]
"""(start_mono_ns, end_mono_ns) -> GPS samples taken in that window (JSON-able dicts)."""


class _Collect(io.RawIOBase):
    """A file-like the TS muxer writes into; we drain it after every packet."""

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
    """An MPEG-TS muxer for one stream template."""

    def __init__(self, template: StreamTemplate) -> None:
        self.template = template
        self.sink = _Collect()
        self.container = av.open(
            self.sink, mode="w", format="mpegts", options={"flush_packets": "1"}
        )
        self.stream = self.container.add_stream_from_template(template.stream)

    def mux(self, captured: CapturedPacket) -> bytes:
        packet = captured.packet
        packet.stream = self.stream
        self.container.mux(packet)
        return self.sink.drain()

    def close(self) -> bytes:
        self.container.close()
        return self.sink.drain()


@dataclass(slots=True)
class _Segment:
    index: int
    start_mono_ns: int
    start_wall_ms: int
    media_offset: int
    first_pts: int | None
    end_mono_ns: int = 0
    end_wall_ms: int = 0
    last_pts: int | None = None
    packets: int = 0
    media_bytes: int = 0
    time_base: str = ""
    generation: int = 0


@dataclass(slots=True)
class MuxerStats:
    segments: int = 0
    packets: int = 0
    skipped_until_keyframe: int = 0
    rejected_by_muxer: int = 0
    last_durable: DurablePoint | None = None


class SegmentMuxer:
    """Feeds one StreamWriter. Invariant: every segment starts on a keyframe."""

    def __init__(self, writer: StreamWriter, gps_window: GpsWindow, segment_min_s: float) -> None:
        self._writer = writer
        self._gps_window = gps_window
        self._segment_min_ns = int(segment_min_s * 1e9)
        self._muxer: _TsMuxer | None = None
        self._segment: _Segment | None = None
        self._media_offset = 0
        self.stats = MuxerStats()

    def feed(self, captured: CapturedPacket) -> DurablePoint | None:
        """Mux one packet; returns the durable point when it closed a segment."""
        durable = None
        if captured.is_keyframe and self._segment_is_due(captured):
            durable = self._end_segment(until_mono_ns=captured.at_mono_ns)
        if self._segment is None:
            if not captured.is_keyframe:
                self.stats.skipped_until_keyframe += 1  # a segment must start decodable
                return durable
            self._start_segment(captured)
        self._append(captured)
        return durable

    def close(self) -> DurablePoint | None:
        """Flush the muxer's trailer into the last segment and end it (durable)."""
        if self._muxer is not None:
            self._write_media(self._muxer.close())
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
        self._segment = _Segment(
            index=self.stats.segments,
            start_mono_ns=captured.at_mono_ns,
            start_wall_ms=captured.at_wall_ms,
            media_offset=self._media_offset,
            first_pts=captured.pts,
            time_base=str(captured.packet.time_base),
            generation=captured.template.generation,
        )

    def _switch_muxer(self, template: StreamTemplate) -> None:
        if self._muxer is not None:
            self._write_media(self._muxer.close())
        self._muxer = _TsMuxer(template)

    def _append(self, captured: CapturedPacket) -> None:
        assert self._muxer is not None
        assert self._segment is not None
        segment = self._segment
        try:
            muxed = self._muxer.mux(captured)
        except av.error.FFmpegError:
            # e.g. a camera's non-monotonic DTS: this packet cannot be stored; count it, go on
            self.stats.rejected_by_muxer += 1
            return
        self._write_media(muxed)
        segment.packets += 1
        segment.end_mono_ns = captured.at_mono_ns
        segment.end_wall_ms = captured.at_wall_ms
        segment.last_pts = captured.pts
        self.stats.packets += 1

    def _write_media(self, data: bytes) -> None:
        if not data:
            return
        self._writer.append_media(data)
        self._media_offset += len(data)
        if self._segment is not None:
            self._segment.media_bytes += len(data)

    def _end_segment(self, until_mono_ns: int) -> DurablePoint:
        """`until_mono_ns` is where the next segment starts: the GPS windows of consecutive
        segments meet, so no sample falls between them."""
        segment, self._segment = self._segment, None
        assert segment is not None
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
            }
        )
        self.stats.segments += 1
        self.stats.last_durable = durable
        return durable
