"""The request watch (transport/progress.py), driven directly: observations and `now` in, the
deadline and the verdict out. No sockets, no sleeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport.progress import (
    MIN_SEND_RATE_BYTES_PER_S,
    Phase,
    Progress,
    RequestTimeouts,
    RequestWatch,
)

TIMEOUTS = RequestTimeouts(
    connect_timeout_s=5.0, stall_timeout_s=10.0, read_timeout_s=3.0, request_timeout_s=60.0
)
CHUNK = 4 * 1024 * 1024


def watch(body_bytes: int = CHUNK, *, allowance_s: float = 0.0) -> RequestWatch:
    return RequestWatch(TIMEOUTS, body_bytes, 100.0, setup_allowance_s=allowance_s)


def test_a_slow_body_that_keeps_moving_is_never_cut() -> None:
    """The issue's case: 4 MiB at 200 kbit/s (25 kB/s) takes 168 s, far past every timeout."""
    request = watch()
    rate_bytes_per_s = 25_000
    now_s, sent = 100.0, 0
    while sent < CHUNK:
        now_s += 0.25
        sent = min(CHUNK, sent + rate_bytes_per_s // 4)
        request.observe(now_s, Progress(sent, 64 * 1024, 0))
        assert request.verdict(now_s) is None
    assert now_s - 100.0 > 160
    assert request.phase is Phase.SENDING  # handed over, not yet acknowledged


def test_a_stall_cuts_the_body_after_stall_timeout() -> None:
    request = watch()
    request.observe(101.0, Progress(100_000, 50_000, 0))
    request.observe(105.0, Progress(100_000, 50_000, 0))  # nothing moved

    assert request.deadline_s == 111.0
    assert request.verdict(110.9) is None
    reason = request.verdict(111.0)
    assert reason is not None
    assert reason.startswith("stalled: no body byte moved for 10 s")
    assert "100000 of 4194304 bytes handed over, 50000 unacknowledged" in reason


def test_acknowledgements_alone_keep_the_body_alive() -> None:
    """The socket took everything; the peer acknowledges it slowly: progress, not a stall."""
    request = watch(body_bytes=300_000)
    request.observe(101.0, Progress(300_000, 290_000, 0))
    for second in range(1, 29):
        request.observe(101.0 + second, Progress(300_000, 290_000 - second * 10_000, 0))
        assert request.verdict(101.0 + second) is None
    assert request.phase is Phase.SENDING


def test_the_read_timeout_starts_when_the_last_byte_is_acknowledged() -> None:
    request = watch(body_bytes=300_000)
    request.observe(101.0, Progress(300_000, 300_000, 0))  # all handed over
    phases = [request.phase]
    request.observe(130.0 - 1e-9, Progress(300_000, 1, 0))
    request.observe(130.0, Progress(300_000, 0, 0))  # the peer has it all
    phases.append(request.phase)

    assert phases == [Phase.SENDING, Phase.ANSWERING]
    assert request.deadline_s == 133.0
    assert request.verdict(133.0) == "no answer within 3 s of the request's end"


def test_without_acknowledgement_counts_the_body_ends_when_handed_over() -> None:
    request = watch(body_bytes=300_000)
    request.observe(101.0, Progress(200_000, None, 0))
    phases = [request.phase]
    request.observe(102.0, Progress(300_000, None, 0))
    phases.append(request.phase)

    assert phases == [Phase.SENDING, Phase.ANSWERING]
    assert request.deadline_s == 105.0


def test_each_response_byte_restarts_the_read_timer_until_the_answer_bound() -> None:
    request = watch(body_bytes=10)
    request.observe(101.0, Progress(10, 0, 0))
    for step in range(1, 30):
        now_s = 101.0 + 2 * step
        request.observe(now_s, Progress(10, 0, step))
        if now_s < 161.0:
            assert request.verdict(now_s) is None
    assert request.deadline_s == 161.0  # 101 + request_timeout_s: a trickle is cut
    assert request.verdict(161.0) == "the answer took longer than 60 s"


def test_an_answer_that_goes_silent_is_cut_by_the_read_timeout() -> None:
    request = watch(body_bytes=10)
    request.observe(101.0, Progress(10, 0, 0))
    request.observe(102.0, Progress(10, 0, 200))
    assert request.verdict(105.0) == "the answer stopped for 3 s"


def test_an_early_answer_ends_the_sending() -> None:
    """A refusal (413, 408) may come before the body is through: the answer is watched now."""
    request = watch()
    request.observe(101.0, Progress(65_536, 60_000, 0))
    request.observe(101.5, Progress(65_536, 60_000, 1))

    assert request.phase is Phase.ANSWERING
    assert request.deadline_s == 104.5


def test_a_request_without_body_waits_for_its_answer_after_the_setup_allowance() -> None:
    request = watch(body_bytes=0, allowance_s=5.0)
    assert request.phase is Phase.ANSWERING
    assert request.deadline_s == 108.0  # 100 + connect allowance 5 + read 3
    request.observe(107.0, Progress(0, None, 1))
    assert request.deadline_s == 110.0


def test_the_setup_allowance_delays_the_first_stall() -> None:
    assert watch(allowance_s=5.0).deadline_s == 115.0
    assert watch().deadline_s == 110.0


def test_a_trickling_body_is_cut_under_the_minimum_rate() -> None:
    """A byte every few seconds dodges the stall timer; the average rate does not."""
    request = watch(body_bytes=1_000_000)
    bound_s = 100.0 + 60.0 + 1_000_000 / MIN_SEND_RATE_BYTES_PER_S
    now_s, sent = 100.0, 0
    while now_s < bound_s - 5:
        now_s += 5.0
        sent += 1
        request.observe(now_s, Progress(sent, 0, 0))
    assert request.deadline_s == pytest.approx(bound_s)
    reason = request.verdict(bound_s)
    assert reason is not None
    assert reason.startswith("the body went under 1024 bytes/s")


def test_progress_just_past_the_deadline_still_counts() -> None:
    """The shell samples at the deadline: a byte that moved since its last sample is progress."""
    request = watch()
    request.observe(101.0, Progress(16_384, 16_384, 0))
    request.observe(111.0, Progress(32_768, 16_384, 0))
    assert request.verdict(111.0) is None
    assert request.deadline_s == 121.0


@pytest.mark.parametrize("name", ["connect", "stall", "read", "request"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True])
def test_a_timeout_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name}_timeout_s must be a number > 0"):
        RequestTimeouts(**{f"{name}_timeout_s": value})


@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=30.0),  # time to the next sample
            st.integers(min_value=0, max_value=100_000),  # bytes handed over since
            st.integers(min_value=-100_000, max_value=100_000),  # change of the unacked count
            st.integers(min_value=0, max_value=3),  # response bytes since
        ),
        max_size=50,
    )
)
def test_the_verdict_is_none_exactly_before_the_deadline(
    steps: list[tuple[float, int, int, int]],
) -> None:
    request = watch(body_bytes=1_000_000)
    now_s, handed, unacked, answered = 100.0, 0, 0, 0
    for gap_s, more, change, response in steps:
        now_s += gap_s
        handed = min(1_000_000, handed + more)
        unacked = max(0, unacked + change)
        answered += response
        request.observe(now_s, Progress(handed, unacked, answered))
        deadline_s = request.deadline_s
        assert deadline_s > 100.0
        assert request.verdict(deadline_s - 1e-6) is None
        assert request.verdict(deadline_s) is not None


# -- progress dated by its source (Progress.moved_at_s: HTTPS dates it by the socket's last ACK)


def test_dated_progress_seen_late_counts_when_it_happened() -> None:
    """Sampled seldom, a dead link is still cut stall_timeout_s after its last ACK, not after
    the sample that saw that ACK's effect."""
    request = watch()
    request.observe(101.0, Progress(100_000, 50_000, 0, moved_at_s=101.0))
    request.observe(108.0, Progress(100_000, 40_000, 0, moved_at_s=102.5))  # acked at 102.5

    assert request.deadline_s == 112.5
    assert request.verdict(112.4) is None
    reason = request.verdict(112.5)
    assert reason is not None
    assert reason.startswith("stalled: no body byte moved for 10 s")


def test_a_date_after_the_observation_counts_as_the_observation() -> None:
    request = watch()
    request.observe(101.0, Progress(100_000, 50_000, 0, moved_at_s=101.0))
    request.observe(103.0, Progress(100_000, 40_000, 0, moved_at_s=999.0))
    assert request.deadline_s == 113.0


def test_dated_progress_replaces_the_setup_allowance() -> None:
    """The allowance is for a connection still to open; a byte that moved shows it is up."""
    request = watch(allowance_s=5.0)  # progress counted until 105
    request.observe(102.0, Progress(16_384, 16_384, 0, moved_at_s=101.0))
    assert request.deadline_s == 111.0


def test_the_dated_end_of_the_body_starts_the_read_timeout() -> None:
    """The last byte acknowledged at 104, seen at 106: the answer is due by 104 + read 3 s."""
    request = watch(body_bytes=300_000)
    request.observe(101.0, Progress(300_000, 100_000, 0, moved_at_s=101.0))
    request.observe(106.0, Progress(300_000, 0, 0, moved_at_s=104.0))

    assert request.phase is Phase.ANSWERING
    assert request.deadline_s == 107.0
    assert request.verdict(107.0) == "no answer within 3 s of the request's end"


def test_without_a_date_progress_counts_at_the_observation() -> None:
    request = watch()
    request.observe(101.0, Progress(100_000, 50_000, 0))
    request.observe(108.0, Progress(100_000, 40_000, 0))
    assert request.deadline_s == 118.0
