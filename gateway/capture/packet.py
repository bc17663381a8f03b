"""What a camera source delivers: encoded packets, never decoded frames (stream copy).

A `StreamTemplate` freezes the codec parameters of one connection to a camera into a stream of a
never-written in-memory output, so muxers can copy them after the input connection is gone.
`generation` changes on every reconnect: a recording starts a new MPEG-TS program when it does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import av


class StreamTemplate:
    """Codec parameters of one video stream, owned independently of the input container."""

    def __init__(self, source_stream: Any, generation: int) -> None:
        self._holder = av.open(io.BytesIO(), mode="w", format="mpegts")
        self.stream = self._holder.add_stream_from_template(source_stream)
        self.generation = generation
        self.codec = str(source_stream.codec_context.name)
        self.width = int(getattr(source_stream.codec_context, "width", 0) or 0)
        self.height = int(getattr(source_stream.codec_context, "height", 0) or 0)


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    """One encoded packet with the box's own arrival times (camera clocks are not trusted)."""

    packet: Any  # av.Packet: refcounted, so the ring holds the camera's bytes without a copy
    template: StreamTemplate
    is_keyframe: bool
    size_bytes: int
    at_mono_ns: int
    at_wall_ms: int

    @property
    def pts(self) -> int | None:
        pts = self.packet.pts
        return None if pts is None else int(pts)
