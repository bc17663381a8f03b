"""The recording timeline over a camera's connections (pure): holes kept, never backwards."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.capture.timeline import Timeline, ticks

S = 1_000_000_000


def test_the_first_connection_keeps_its_own_times() -> None:
    timeline = Timeline()
    assert timeline.anchor(1, Fraction(5), at_mono_ns=100 * S) is None
    assert timeline.place(1, Fraction(7)) == Fraction(7)


def test_a_reconnect_starts_after_the_hole_the_box_saw() -> None:
    timeline = Timeline()
    timeline.anchor(1, Fraction(10), 100 * S)
    timeline.note_video(Fraction(20), 110 * S)  # 10 s recorded, last packet at 110 s
    gap = timeline.anchor(2, Fraction(0), 116 * S)  # the camera restarts its clock at 0
    assert gap is not None
    assert gap.gap_s == 6.0
    assert timeline.place(2, Fraction(0)) == Fraction(26)  # 20 s + 6 s of hole
    assert timeline.place(2, Fraction(3)) == Fraction(29)
    with pytest.raises(ValueError, match="already"):
        timeline.anchor(2, Fraction(0), 120 * S)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**6),  # the camera's first pts, ms
            st.integers(min_value=1, max_value=60_000),  # the connection's length, ms
            st.integers(min_value=0, max_value=60_000),  # the hole after it, ms
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_timeline_never_runs_backwards_and_keeps_each_hole(
    connections: list[tuple[int, int, int]],
) -> None:
    timeline = Timeline()
    arrival_ms = 0
    previous_end: Fraction | None = None
    hole_before_ms = 0
    for generation, (first_ms, length_ms, hole_ms) in enumerate(connections, start=1):
        timeline.anchor(generation, Fraction(first_ms, 1000), arrival_ms * 1_000_000)
        start = timeline.place(generation, Fraction(first_ms, 1000))
        if previous_end is not None:
            assert start - previous_end == Fraction(hole_before_ms, 1000)
        end = timeline.place(generation, Fraction(first_ms + length_ms, 1000))
        timeline.note_video(end, (arrival_ms + length_ms) * 1_000_000)
        previous_end = end
        hole_before_ms = hole_ms
        arrival_ms += length_ms + hole_ms


def test_ticks_round_to_the_time_base() -> None:
    assert ticks(Fraction(1, 3), Fraction(1, 90_000)) == 30_000
    assert ticks(Fraction(1, 48_000) * Fraction(1, 2), Fraction(1, 48_000)) == 0
