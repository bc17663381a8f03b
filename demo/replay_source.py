"""A camera that replays an encoded clip in real time, looping, with continuous timestamps.

For benchmarks and tests that need many cameras at a set bitrate without paying for an encoder:
the packets are the clip's own (stream copy), paced by their presentation time, and on every loop
their timestamps are shifted so the stream never jumps back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import av

from gateway.capture.packet import CapturedPacket, StreamTemplate
from gateway.capture.source import SourceSpec, ThreadedSource, captured_now


class ReplaySource(ThreadedSource):
    """`spec.url` is a path to an MPEG-TS (or any PyAV-readable) clip with one video stream."""

    def __init__(self, spec: SourceSpec, *, loops: int | None = None) -> None:
        super().__init__(spec)
        self.loops = loops

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        with av.open(self.spec.url) as container:
            stream = container.streams.video[0]
            template = StreamTemplate(stream, generation)
            packets = [p for p in container.demux(stream) if p.size and p.pts is not None]
        if not packets:
            raise ValueError("clip holds no video packets")
        yield from self._paced(packets, template)

    def _paced(self, packets: list[Any], template: StreamTemplate) -> Iterator[CapturedPacket]:
        time_base = packets[0].time_base
        first_pts = packets[0].pts
        span = packets[-1].pts - first_pts + (packets[1].pts - first_pts if len(packets) > 1 else 1)
        started = time.monotonic()
        loop = 0
        while self.loops is None or loop < self.loops:
            for original in packets:
                pts = original.pts - first_pts + loop * span
                due = started + float(pts * time_base)
                delay = due - time.monotonic()
                if delay > 0 and self._wait(delay):
                    return
                packet = av.Packet(bytes(original))
                packet.pts = pts
                packet.dts = original.dts - first_pts + loop * span
                packet.time_base = time_base
                packet.is_keyframe = original.is_keyframe
                yield captured_now(packet, template)
            loop += 1

    def _wait(self, seconds: float) -> bool:
        """Sleep until due; True if the source is being stopped."""
        return self._stop.wait(seconds)
