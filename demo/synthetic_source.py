"""The synthetic camera as a live source: frames painted and encoded in real time (libx264).

Used by `make demo` and tests: the picture carries the camera's name and the wall clock, so a
decrypted recording shows by itself when it was made and by which camera.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from demo.synthetic import SyntheticEncoder
from gateway.capture.packet import CapturedPacket, StreamTemplate
from gateway.capture.source import SourceSpec, ThreadedSource, captured_now


class SyntheticSource(ThreadedSource):
    """A camera of `width`x`height` at `fps` and `bitrate_bps`, keyframe every `gop_s`."""

    def __init__(
        self,
        spec: SourceSpec,
        *,
        width: int = 640,
        height: int = 360,
        fps: int = 25,
        bitrate_bps: int = 1_000_000,
        gop_s: float = 1.0,
    ) -> None:
        super().__init__(spec)
        self.width, self.height, self.fps = width, height, fps
        self.bitrate_bps = bitrate_bps
        self.gop_frames = max(1, round(gop_s * fps))

    def produce(self, generation: int) -> Iterator[CapturedPacket]:
        with SyntheticEncoder(
            self.spec.name, self.width, self.height, self.fps, self.bitrate_bps, self.gop_frames
        ) as encoder:
            template = StreamTemplate(encoder.stream, generation)
            started = time.monotonic()
            frame_index = 0
            while not self.stopping():
                delay = started + frame_index / self.fps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                for packet in encoder.encode(frame_index, time.time_ns() // 1_000_000):
                    yield captured_now(packet, template)
                frame_index += 1
