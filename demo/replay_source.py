"""A camera that replays an encoded clip in real time, looping, with continuous timestamps.

For benchmarks and tests that need many cameras at a set bitrate without paying for an encoder:
the packets are the clip's own (stream copy), paced by their presentation time, and on every loop
their timestamps are shifted so the stream never jumps back. A clip with sound replays its first
audio stream too, interleaved by presentation time, shifted by the same loop span (an audio
packet that would overlap the previous loop's last one is left out, so its timestamps only grow).

The schedule (bytes, timestamps, due times) is worked out once per connection and each loop's
shift once per time base, so what the replay itself costs per packet is a wait and a packet copy
(as a camera's demuxer costs a read and a packet): the capture benchmark counts this thread as
the box's, and Fractions per packet were a third of it (issue 18).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from gateway.capture.packet import CapturedPacket, StreamTemplate
from gateway.capture.source import SourceSpec, ThreadedSource, captured_now

SLEEP_MAX_S = 0.05
"""A wait up to this long is a plain sleep (cheaper than an Event's timed wait, which allocates a
lock per call); a stop is then seen within it. Longer waits end early on a stop."""


@dataclass(frozen=True, slots=True)
class _Planned:
    """One packet of the clip as it is replayed: its bytes and timestamps, worked out once."""

    data: bytes
    pts: int
    dts: int
    time_base: Any  # the packet's own (PyAV's Fraction), set on every copy
    seconds_per_tick: float
    time_base_exact: Fraction  # the same, exact: the shift per loop is computed in it
    is_keyframe: bool
    is_audio: bool


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
        plan = [_plan(original, is_audio) for original, is_audio in ordered]
        started = time.monotonic()
        last_audio_dts: int | None = None
        loop = 0
        while self.loops is None or loop < self.loops:
            shifts: dict[Fraction, int] = {}  # time base -> this loop's shift in its ticks
            for planned in plan:
                time_base = planned.time_base_exact
                shift = shifts.get(time_base)
                if shift is None:
                    shift = shifts[time_base] = round((loop * span_s - first_s) / time_base)
                pts, dts = planned.pts + shift, planned.dts + shift
                if planned.is_audio:
                    if last_audio_dts is not None and dts <= last_audio_dts:
                        continue  # the loop's seam: this sound overlaps the previous loop's
                    last_audio_dts = dts
                delay = started + pts * planned.seconds_per_tick - time.monotonic()
                if delay > 0 and self._wait(delay):
                    return
                packet = av.Packet(planned.data)
                packet.pts, packet.dts = pts, dts
                packet.time_base = planned.time_base
                packet.is_keyframe = planned.is_keyframe
                yield captured_now(packet, template, is_audio=planned.is_audio)
            loop += 1

    def _wait(self, seconds: float) -> bool:
        """Sleep until due; True if the source is being stopped."""
        if seconds <= SLEEP_MAX_S:
            time.sleep(seconds)
            return self._stop.is_set()
        return self._stop.wait(seconds)


def _plan(original: Any, is_audio: bool) -> _Planned:
    time_base = Fraction(original.time_base)
    return _Planned(
        data=bytes(original),
        pts=int(original.pts),
        dts=int(original.dts),
        time_base=original.time_base,
        seconds_per_tick=float(time_base),
        time_base_exact=time_base,
        is_keyframe=bool(original.is_keyframe),
        is_audio=is_audio,
    )
