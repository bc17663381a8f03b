"""How big the next chunk is: a bounded time per chunk at the measured goodput. Pure.

A chunk is what the box sends again after a cut, and what one answer of the back office
confirms. Too big, and a slow link spends minutes on one request whose loss costs all of it (a
4 MiB chunk at 200 kbit/s takes almost three minutes); too small, and a fast link spends its
time on round trips. So the size follows the goodput measured on the chunks before:

    size = goodput x target_s, rounded down to ALIGN_BYTES, then bounded:
      - below by `min_bytes` (the floor: a chunk's round trip stays small beside its transfer),
      - above by `max_bytes` (the configured chunk size), by the largest chunk the server
        advertised, and by the largest it accepted after refusing one as too large (413);
      - growing at most MAX_GROWTH times per chunk (a chunk that measures a burst cannot make
        the next one huge); shrinking at once (a link that slowed down must not spend minutes
        per chunk while an average catches up).

goodput is measured per answered chunk: body bytes over its duration (sending, the answer's round
trip and the server's fsync: what one chunk costs). A lower sample replaces the estimate; a
higher one moves it by GOODPUT_GAIN. A chunk much smaller than the size in force (a file's tail)
measures the round trip, not the link: ignored.

Invariants: `size_bytes()` is always within [1, max_bytes]; it is >= min_bytes unless a server
limit is below min_bytes (the server's word wins: a chunk it refuses is useless); it never
exceeds a server limit once known. Starts at min_bytes: the first chunk on an unknown link is
short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_MIN_CHUNK_BYTES: Final = 256 * 1024
"""10.5 s at 200 kbit/s (EDGE), 2 s at 1 Mbit/s (3G): short enough that a cut costs little,
long enough that its round trip (150-300 ms there) stays a few per cent of it."""
DEFAULT_MAX_CHUNK_BYTES: Final = 4 * 1024 * 1024
DEFAULT_CHUNK_TARGET_S: Final = 8.0
"""Seconds one chunk should take: the middle of 5-10 s. A cut costs at most this much transfer,
and a round trip of 300 ms is under 4 % of it."""
GOODPUT_GAIN: Final = 0.5
MAX_GROWTH: Final = 16
"""From the floor to the ceiling (256 KiB to 4 MiB) in one chunk on a fast link: each step of
the ramp costs a round trip. The first chunks, on a new connection still in slow start, measure
the link low, never high."""
ALIGN_BYTES: Final = 4096
MIN_SAMPLE_S: Final = 0.001
"""No chunk is answered faster (a coarse clock may say 0): keeps every estimate finite."""
SMALL_SAMPLE_FRACTION: Final = 0.5
"""A chunk below this share of the size in force is a file's tail: not a goodput sample."""


@dataclass(frozen=True, slots=True)
class ChunkBounds:
    """The chunk policy: `min_bytes` <= size <= `max_bytes`, aiming at `target_s` per chunk.
    ValueError unless 1 <= min_bytes <= max_bytes and target_s > 0."""

    min_bytes: int = DEFAULT_MIN_CHUNK_BYTES
    max_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    target_s: float = DEFAULT_CHUNK_TARGET_S

    def __post_init__(self) -> None:
        if not 1 <= self.min_bytes <= self.max_bytes:
            raise ValueError(
                f"chunk bounds need 1 <= min_bytes <= max_bytes, got {self.min_bytes} and "
                f"{self.max_bytes}"
            )
        if not self.target_s > 0:
            raise ValueError(f"target_s must be > 0, got {self.target_s}")

    @classmethod
    def clamped(cls, min_bytes: int, max_bytes: int, target_s: float) -> ChunkBounds:
        """As configured: a floor above the largest chunk is the largest chunk (a fleet may
        lower `chunk_bytes` below a box's local floor)."""
        return cls(min(min_bytes, max_bytes), max_bytes, target_s)


class ChunkSizer:
    """The chunk size for one link (shared by its uploads); see the module docstring."""

    def __init__(self, bounds: ChunkBounds) -> None:
        self._bounds = bounds
        self._size_bytes = bounds.min_bytes  # before any limit
        self._goodput_bytes_per_s: float | None = None
        self._server_limit_bytes: int | None = None

    @property
    def bounds(self) -> ChunkBounds:
        return self._bounds

    @property
    def goodput_bytes_per_s(self) -> float | None:
        """The smoothed goodput of chunks so far; None before the first sample."""
        return self._goodput_bytes_per_s

    @property
    def server_limit_bytes(self) -> int | None:
        """The smallest chunk limit a server gave (advertised or taught by a 413), if any."""
        return self._server_limit_bytes

    def size_bytes(self) -> int:
        """The size of the next chunk."""
        if self._server_limit_bytes is None:
            return self._size_bytes
        return max(1, min(self._size_bytes, self._server_limit_bytes))

    def limit(self, limit_bytes: int | None) -> None:
        """A server's largest acceptable chunk (advertised, or learned from a 413): kept if it
        is the smallest so far. None changes nothing."""
        if limit_bytes is None:
            return
        if limit_bytes < 1:
            raise ValueError(f"a chunk limit must be >= 1, got {limit_bytes}")
        if self._server_limit_bytes is None or limit_bytes < self._server_limit_bytes:
            self._server_limit_bytes = limit_bytes

    def observe(self, body_bytes: int, duration_s: float) -> None:
        """One answered chunk of `body_bytes` that took `duration_s` (send, answer, fsync)."""
        if duration_s <= 0 or body_bytes < self.size_bytes() * SMALL_SAMPLE_FRACTION:
            return
        sample = body_bytes / max(duration_s, MIN_SAMPLE_S)
        previous = self._goodput_bytes_per_s
        if previous is None or sample < previous:
            goodput = sample
        else:
            goodput = previous + GOODPUT_GAIN * (sample - previous)
        self._goodput_bytes_per_s = goodput
        wanted_bytes = min(goodput * self._bounds.target_s, self._bounds.max_bytes)
        wanted = int(wanted_bytes) // ALIGN_BYTES * ALIGN_BYTES
        grown = min(wanted, self._size_bytes * MAX_GROWTH)
        self._size_bytes = min(max(grown, self._bounds.min_bytes), self._bounds.max_bytes)
