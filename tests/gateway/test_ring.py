"""The pre-record ring: keyframe-aligned, bounded in time and bytes, RAM only."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.ring import PrerecordRing

S = 1_000_000_000


@dataclass(frozen=True)
class Item:
    at_mono_ns: int
    is_keyframe: bool
    size_bytes: int = 100


def feed(ring: PrerecordRing[Item], seconds: float, fps: int = 10, gop: int = 20) -> list[Item]:
    items = [Item(int(i * S / fps), is_keyframe=i % gop == 0) for i in range(int(seconds * fps))]
    for item in items:
        ring.push(item)
    return items


def test_starts_on_a_keyframe_at_or_before_the_window() -> None:
    ring: PrerecordRing[Item] = PrerecordRing(window_ns=10 * S, max_bytes=10**9)
    items = feed(ring, 60)
    newest = items[-1].at_mono_ns
    snap = ring.snapshot(newest - 10 * S)
    assert snap[0].is_keyframe
    assert snap[0].at_mono_ns <= newest - 10 * S
    assert newest - snap[0].at_mono_ns < 10 * S + 2 * S  # at most one GOP (2 s) more
    assert snap[-1] == items[-1]


def test_items_before_the_first_keyframe_are_dropped() -> None:
    ring: PrerecordRing[Item] = PrerecordRing(window_ns=5 * S, max_bytes=10**9)
    ring.push(Item(0, False))
    ring.push(Item(1, False))
    assert ring.bytes == 0
    assert ring.dropped_before_keyframe == 2
    ring.push(Item(2, True))
    assert ring.snapshot(0) == [Item(2, True)]


def test_byte_bound_evicts_whole_gops_but_keeps_the_current_one() -> None:
    ring: PrerecordRing[Item] = PrerecordRing(window_ns=100 * S, max_bytes=2500)
    feed(ring, 30)  # 100 bytes per item, 20 items per GOP = 2000 bytes per GOP
    assert ring.gops == 1
    assert ring.snapshot(0)[0].is_keyframe
    assert ring.bytes <= 2500 + 2000


def test_snapshot_when_the_ring_is_shorter_than_asked() -> None:
    ring: PrerecordRing[Item] = PrerecordRing(window_ns=30 * S, max_bytes=10**9)
    items = feed(ring, 5)
    assert ring.snapshot(-100 * S) == items


@settings(max_examples=50, deadline=None)
@given(
    window_s=st.integers(1, 20),
    gop=st.integers(1, 40),
    seconds=st.integers(1, 90),
    max_bytes=st.integers(100, 100_000),
)
def test_invariants(window_s: int, gop: int, seconds: int, max_bytes: int) -> None:
    ring: PrerecordRing[Item] = PrerecordRing(window_ns=window_s * S, max_bytes=max_bytes)
    items = feed(ring, seconds, gop=gop)
    snap = ring.snapshot(items[-1].at_mono_ns - window_s * S)
    assert snap[0].is_keyframe
    assert ring.bytes == sum(i.size_bytes for i in ring.snapshot(-(10**18)))
    assert ring.bytes <= max_bytes + gop * 100
    if ring.bytes + gop * 100 <= max_bytes:  # not byte-bound: the time window is honoured
        assert snap[0].at_mono_ns <= max(0, items[-1].at_mono_ns - window_s * S)


def test_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError, match="positive"):
        PrerecordRing[Item](window_ns=0, max_bytes=1)


@dataclass(frozen=True)
class AvItem:
    at_mono_ns: int
    is_keyframe: bool
    is_audio: bool = False
    size_bytes: int = 100


def test_the_sound_ahead_of_the_oldest_keyframe_survives_its_gop() -> None:
    """Issue 15: a snapshot starts with the `lead_ns` of sound before its keyframe, also when
    the GOP that sound arrived in was evicted; video of that GOP never comes along."""
    ring: PrerecordRing[AvItem] = PrerecordRing(
        window_ns=2 * S, max_bytes=10**9, lead_ns=S // 2, is_lead=lambda i: i.is_audio
    )
    items = []
    for ms in range(0, 10_000, 50):  # video every 100 ms (GOP 1 s), sound every 50 ms
        at = ms * 1_000_000
        if ms % 100 == 0:
            items.append(AvItem(at, is_keyframe=ms % 1000 == 0))
        else:
            items.append(AvItem(at, is_keyframe=False, is_audio=True))
    for item in items:
        ring.push(item)
    oldest = ring.snapshot(0)
    start = next(i for i, item in enumerate(oldest) if item.is_keyframe)
    lead = oldest[:start]
    assert lead, "the evicted GOP's sound is kept as the lead"
    assert all(item.is_audio for item in lead)
    assert all(oldest[start].at_mono_ns - S // 2 <= item.at_mono_ns for item in lead)
    newest = items[-1].at_mono_ns
    middle = ring.snapshot(newest - S)  # a keyframe inside the ring: its lead from its GOP
    start = next(i for i, item in enumerate(middle) if item.is_keyframe)
    assert middle[:start]
    assert all(item.is_audio for item in middle[:start])
    ring.clear()
    assert ring.snapshot(0) == []
