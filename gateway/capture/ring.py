"""The pre-record ring (RULES R1): the last `window_ns` of one camera's packets, in RAM only.

Pure: it holds whatever items it is given and never touches a file, so the buffer can never be
persisted unless a recording asks for a snapshot (R1: "never written unless a recording starts").

Invariants:
- the ring always starts on a keyframe (items before the first keyframe are dropped), so a
  recording built from a snapshot starts decodable;
- it is evicted by whole GOPs: the oldest GOP goes once the next one starts at or before
  `newest - window_ns` (so a keyframe at or before the cutoff stays), or while the ring is over
  `max_bytes` and holds more than the current GOP;
- hence memory is bounded by max_bytes plus one GOP, plus the lead: the items `is_lead` picks
  (a camera's sound) that arrived up to `lead_ns` before the first keyframe, kept from the
  evicted GOP so a snapshot can start the sound with the picture (see `snapshot`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class RingItem(Protocol):
    @property
    def size_bytes(self) -> int: ...

    @property
    def is_keyframe(self) -> bool: ...

    @property
    def at_mono_ns(self) -> int: ...


T = TypeVar("T", bound=RingItem)


class PrerecordRing(Generic[T]):
    def __init__(
        self,
        window_ns: int,
        max_bytes: int,
        *,
        lead_ns: int = 0,
        is_lead: Callable[[T], bool] = lambda _item: False,
    ) -> None:
        if window_ns <= 0 or max_bytes <= 0:
            raise ValueError("the pre-record window and byte bound must be positive")
        self.window_ns = window_ns
        self.max_bytes = max_bytes
        self.lead_ns = lead_ns
        self._is_lead = is_lead
        self._lead: list[T] = []  # the lead of the first GOP, from the GOP evicted before it
        self._gops: deque[list[T]] = deque()
        self._bytes = 0
        self.dropped_before_keyframe = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def gops(self) -> int:
        return len(self._gops)

    def span_ns(self) -> int:
        """Time covered, from the oldest keyframe to the newest item."""
        if not self._gops:
            return 0
        return self._gops[-1][-1].at_mono_ns - self._gops[0][0].at_mono_ns

    def push(self, item: T) -> None:
        if item.is_keyframe:
            self._gops.append([item])
        elif self._gops:
            self._gops[-1].append(item)
        else:
            self.dropped_before_keyframe += 1
            return
        self._bytes += item.size_bytes
        self._evict(item.at_mono_ns)

    def _evict(self, newest_ns: int) -> None:
        cutoff_ns = newest_ns - self.window_ns
        while len(self._gops) > 1 and (
            self._gops[1][0].at_mono_ns <= cutoff_ns or self._bytes > self.max_bytes
        ):
            evicted = self._gops.popleft()
            self._bytes -= sum(i.size_bytes for i in evicted)
            self._lead = self._lead_of(evicted, self._gops[0][0].at_mono_ns)

    def _lead_of(self, gop: list[T], keyframe_ns: int) -> list[T]:
        return [i for i in gop if self._is_lead(i) and i.at_mono_ns >= keyframe_ns - self.lead_ns]

    def snapshot(self, since_mono_ns: int) -> list[T]:
        """Items from the last keyframe at or before `since_mono_ns` (or the oldest keyframe
        if the ring does not reach back that far) up to the newest, preceded by that keyframe's
        lead (what `is_lead` picks of the `lead_ns` before it: the sound a camera sends ahead of
        its picture; the muxer keeps what of it is timed at or after the keyframe)."""
        gops = list(self._gops)
        if not gops:
            return []
        start = 0
        for index, gop in enumerate(gops):
            if gop[0].at_mono_ns <= since_mono_ns:
                start = index
        lead = (
            self._lead if start == 0 else self._lead_of(gops[start - 1], gops[start][0].at_mono_ns)
        )
        return lead + [item for gop in gops[start:] for item in gop]

    def clear(self) -> None:
        self._gops.clear()
        self._lead = []
        self._bytes = 0
