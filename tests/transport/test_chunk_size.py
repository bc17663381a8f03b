"""The chunk size policy (transport/chunk_size.py), driven directly: goodput samples and server
limits in, sizes out. No network, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport.chunk_size import ALIGN_BYTES, MAX_GROWTH, ChunkBounds, ChunkSizer

KIB = 1024
MIB = 1024 * 1024
BOUNDS = ChunkBounds(min_bytes=256 * KIB, max_bytes=4 * MIB, target_s=8.0)


def settle(sizer: ChunkSizer, rate_bytes_per_s: float, rtt_s: float, chunks: int = 12) -> None:
    """Upload `chunks` chunks over a link of this rate and round trip."""
    for _ in range(chunks):
        size = sizer.size_bytes()
        sizer.observe(size, rtt_s + size / rate_bytes_per_s)


def test_an_unknown_link_starts_at_the_floor() -> None:
    assert ChunkSizer(BOUNDS).size_bytes() == 256 * KIB


@pytest.mark.parametrize(
    ("rate_bytes_per_s", "rtt_s"),
    [(125_000, 0.15), (50_000, 0.3), (70_000, 0.2)],  # 1 Mbit/s 3G, 400 kbit/s, 560 kbit/s
)
def test_on_a_slow_link_a_chunk_takes_about_the_target_time(
    rate_bytes_per_s: float, rtt_s: float
) -> None:
    sizer = ChunkSizer(BOUNDS)
    settle(sizer, rate_bytes_per_s, rtt_s)
    chunk_s = rtt_s + sizer.size_bytes() / rate_bytes_per_s
    assert 7.0 <= chunk_s <= 8.5


def test_on_edge_the_floor_holds() -> None:
    """200 kbit/s: 8 s would be 200 kB; the floor (256 KiB, 10.5 s) is the smallest chunk."""
    sizer = ChunkSizer(BOUNDS)
    settle(sizer, 25_000, 0.3)
    assert sizer.size_bytes() == 256 * KIB


def test_on_a_fast_link_the_ceiling_is_reached_after_one_chunk() -> None:
    sizer = ChunkSizer(BOUNDS)
    sizes = []
    for _ in range(3):
        size = sizer.size_bytes()
        sizes.append(size)
        sizer.observe(size, 0.005 + size / 12_500_000)  # 100 Mbit/s
    assert sizes == [256 * KIB, 4 * MIB, 4 * MIB]


def test_growth_is_bounded_per_chunk() -> None:
    sizer = ChunkSizer(ChunkBounds(min_bytes=16 * KIB, max_bytes=64 * MIB, target_s=8.0))
    sizer.observe(16 * KIB, 0.001)  # a burst: 16 MB/s would want 128 MB
    assert sizer.size_bytes() == 16 * KIB * MAX_GROWTH


def test_a_link_that_slows_down_gets_shorter_chunks() -> None:
    sizer = ChunkSizer(BOUNDS)
    settle(sizer, 2_500_000, 0.06)  # 20 Mbit/s
    assert sizer.size_bytes() == 4 * MIB
    settle(sizer, 50_000, 0.3, chunks=6)  # the car left the city
    assert sizer.size_bytes() < 512 * KIB


def test_a_files_tail_is_not_a_goodput_sample() -> None:
    sizer = ChunkSizer(BOUNDS)
    settle(sizer, 2_500_000, 0.06)
    sizer.observe(10_000, 0.06)  # 10 kB in one round trip: the round trip, not the link
    assert sizer.goodput_bytes_per_s is not None
    assert sizer.goodput_bytes_per_s > 1_000_000
    assert sizer.size_bytes() == 4 * MIB


def test_a_server_limit_caps_every_size_even_below_the_floor() -> None:
    sizer = ChunkSizer(BOUNDS)
    settle(sizer, 2_500_000, 0.06)
    sizer.limit(1 * MIB)
    assert sizer.size_bytes() == 1 * MIB
    sizer.limit(2 * MIB)  # a larger one later does not lift the smaller
    assert sizer.size_bytes() == 1 * MIB
    sizer.limit(100 * KIB)  # a server that takes less than the floor: its word wins
    assert sizer.size_bytes() == 100 * KIB
    sizer.limit(None)
    assert sizer.server_limit_bytes == 100 * KIB


@pytest.mark.parametrize(
    ("min_bytes", "max_bytes", "target_s"), [(0, 10, 1.0), (11, 10, 1.0), (1, 10, 0.0)]
)
def test_bounds_are_checked(min_bytes: int, max_bytes: int, target_s: float) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        ChunkBounds(min_bytes, max_bytes, target_s)


def test_a_configured_floor_above_the_ceiling_is_the_ceiling() -> None:
    assert ChunkBounds.clamped(256 * KIB, 64 * KIB, 8.0) == ChunkBounds(64 * KIB, 64 * KIB, 8.0)


@given(
    samples=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=64 * MIB),
            st.floats(min_value=0.0, max_value=1000.0, allow_nan=False),
        ),
        max_size=40,
    ),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=64 * MIB)),
)
def test_sizes_stay_within_the_bounds_and_limits(
    samples: list[tuple[int, float]], limit: int | None
) -> None:
    sizer = ChunkSizer(BOUNDS)
    sizer.limit(limit)
    previous = sizer.size_bytes()
    for body_bytes, duration_s in samples:
        sizer.observe(body_bytes, duration_s)
        size = sizer.size_bytes()
        assert 1 <= size <= BOUNDS.max_bytes
        if limit is not None:
            assert size <= limit
            assert size >= min(BOUNDS.min_bytes, limit)
        else:
            assert size >= BOUNDS.min_bytes
            assert size <= previous * MAX_GROWTH
            assert size == BOUNDS.min_bytes or size % ALIGN_BYTES == 0 or size == BOUNDS.max_bytes
        previous = size
