"""One recording timeline over a camera's connections, keeping the holes (pure).

A camera that reconnects starts its timestamps again (RTSP: near 0; a pushed stream: wherever its
sender's clock is). Left as they are, a file holding two connections runs backwards in the middle:
`ffprobe` then reports it as ~26 hours long (a wrap of the 33-bit MPEG-TS clock) and `ffmpeg -c
copy` to MP4 closes the hole, so a reviewer sees a continuous timeline that was not.

So each connection (generation) gets an offset, in seconds: the first connection of a recording
keeps its own timestamps (offset 0); a later one is placed so that its first packet lies after
the previous connection's last video packet by exactly the time that passed between their
arrivals on the box's monotonic clock. Within a connection the camera's own timing (and its A/V
sync) is untouched; across a reconnect the hole is as long as the box saw it.

Invariants: offsets are fixed once chosen (a packet's output time never changes); the output
timeline never runs backwards from one connection to the next; times are exact fractions until
they are rounded to a stream's time base.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Gap:
    """The hole before a connection: what the box saw between two connections' packets."""

    generation: int
    gap_s: float
    offset_s: float


class Timeline:
    def __init__(self) -> None:
        self._offsets_s: dict[int, Fraction] = {}
        self._last_out_s: Fraction | None = None
        self._last_mono_ns = 0

    def knows(self, generation: int) -> bool:
        return generation in self._offsets_s

    def anchor(self, generation: int, first_pts_s: Fraction, at_mono_ns: int) -> Gap | None:
        """Fix the offset of `generation`, whose first muxed packet (a video keyframe) has
        `first_pts_s` and arrived at `at_mono_ns`. Returns the gap before it (None for the
        recording's first connection)."""
        if generation in self._offsets_s:
            raise ValueError(f"connection {generation} is already on the timeline")
        if self._last_out_s is None:
            self._offsets_s[generation] = Fraction(0)
            return None
        gap_s = Fraction(max(0, at_mono_ns - self._last_mono_ns), NS_PER_S)
        offset_s = self._last_out_s + gap_s - first_pts_s
        self._offsets_s[generation] = offset_s
        return Gap(generation, float(gap_s), float(offset_s))

    def place(self, generation: int, pts_s: Fraction) -> Fraction:
        """The output time of a packet of `generation` (anchored) at camera time `pts_s`."""
        return pts_s + self._offsets_s[generation]

    def note_video(self, out_s: Fraction, at_mono_ns: int) -> None:
        """The latest video packet muxed: where the next connection is measured from."""
        if self._last_out_s is None or out_s >= self._last_out_s:
            self._last_out_s = out_s
            self._last_mono_ns = at_mono_ns


def ticks(seconds: Fraction, time_base: Fraction) -> int:
    """`seconds` in units of `time_base`, rounded to the nearest tick."""
    return round(seconds / time_base)
