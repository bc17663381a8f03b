"""A camera that replays an encoded clip in real time, looping, with continuous timestamps.

For benchmarks and tests that need many cameras at a set bitrate without paying for an encoder:
the packets are the clip's own (stream copy), paced by their presentation time, and on every loop
their timestamps are shifted so the stream never jumps back. A clip with sound replays its first
audio stream too, interleaved by presentation time, shifted by the same loop span (an audio
packet that would overlap the previous loop's last one is left out, so its timestamps only grow).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av

from gateway.capture.packet import CapturedPacket, StreamTemplate
from gateway.capture.source import SourceSpec, ThreadedSource, captured_now


class ReplaySource(ThreadedSource):
    """`spec.url` is a path to an MPEG-TS (or any PyAV-readable) clip with one video stream and
    at most one audio stream that is replayed."""

    def __init__(self, spec: SourceSpec, *, loops: int | None = None) -> None:
        super().__init__(spec)
        self.loops = loops

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        with av.open(self.spec.url) as container:
            video = container.streams.video[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            template = StreamTemplate(video, generation, audio)
            wanted = [video] if audio is None else [video, audio]
            packets = [
                (p, audio is not None and p.stream_index == audio.index)
                for p in container.demux(wanted)
                if p.size and p.pts is not None
            ]
        if not any(not is_audio for _, is_audio in packets):
            raise ValueError("clip holds no video packets")
        yield from self._paced(packets, template)

    def _paced(
        self, packets: list[tuple[Any, bool]], template: StreamTemplate
    ) -> Iterator[CapturedPacket]:
        video = [p for p, is_audio in packets if not is_audio]
        video_tb = Fraction(video[0].time_base)
        first_s = min(p.pts * Fraction(p.time_base) for p, _ in packets)
        frame_s = (video[1].pts - video[0].pts) * video_tb if len(video) > 1 else video_tb
        span_s = (video[-1].pts - video[0].pts) * video_tb + frame_s
        ordered = sorted(packets, key=lambda item: item[0].pts * Fraction(item[0].time_base))
        started = time.monotonic()
        last_audio_dts: int | None = None
        loop = 0
        while self.loops is None or loop < self.loops:
            for original, is_audio in ordered:
                time_base = Fraction(original.time_base)
                shift = round((loop * span_s - first_s) / time_base)
                pts, dts = original.pts + shift, original.dts + shift
                if is_audio:
                    if last_audio_dts is not None and dts <= last_audio_dts:
                        continue  # the loop's seam: this sound overlaps the previous loop's
                    last_audio_dts = dts
                due = started + float(pts * time_base)
                delay = due - time.monotonic()
                if delay > 0 and self._wait(delay):
                    return
                packet = av.Packet(bytes(original))
                packet.pts, packet.dts = pts, dts
                packet.time_base = original.time_base
                packet.is_keyframe = original.is_keyframe
                yield captured_now(packet, template, is_audio=is_audio)
            loop += 1

    def _wait(self, seconds: float) -> bool:
        """Sleep until due; True if the source is being stopped."""
        return self._stop.wait(seconds)
