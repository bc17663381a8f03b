"""The watch's asyncio shell (transport/progress_io.py) around a request that is only a future:
real event loop, real timers; the counters come from the test (a fake behind `sample`)."""

from __future__ import annotations

import asyncio

import pytest

from transport.progress import Progress, RequestTimeouts, RequestWatch
from transport.progress_io import NoProgress, next_sample_s, run_watched

GUARD_S = 5.0
"""Bound on a step that must end by the watch's own (much shorter) deadline."""


async def waiting_on(future: asyncio.Future[None]) -> None:
    """A request that never ends by itself."""
    await future


TIMEOUTS = RequestTimeouts(
    connect_timeout_s=0.1, stall_timeout_s=0.3, read_timeout_s=0.3, request_timeout_s=0.3
)


async def test_a_dated_stall_is_cut_at_its_deadline_however_long_the_poll_period() -> None:
    """poll_s far past the guard: only sampling at the watch's deadline can cut in time."""
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    watch = RequestWatch(TIMEOUTS, 1000, started_s)
    samples: list[float] = []

    def sample() -> Progress:
        samples.append(loop.time())
        return Progress(500, 500, 0, moved_at_s=started_s)  # half handed, nothing acknowledged

    never: asyncio.Future[None] = loop.create_future()
    async with asyncio.timeout(GUARD_S):
        with pytest.raises(NoProgress, match=r"stalled: no body byte moved for 0\.3 s"):
            await run_watched(waiting_on(never), watch, sample, "test", poll_s=3600.0)
    assert samples[-1] >= started_s + TIMEOUTS.stall_timeout_s
    assert len(samples) <= 3  # the start, (a sample that saw the handover,) the deadline
    assert never.cancelled()


async def test_a_request_that_keeps_moving_is_not_cut_and_no_timer_outlives_it() -> None:
    loop = asyncio.get_running_loop()
    watch = RequestWatch(TIMEOUTS, 10_000_000, loop.time())
    samples: list[float] = []

    def sample() -> Progress:
        samples.append(loop.time())
        return Progress(len(samples), None, 0, moved_at_s=loop.time())

    async def request() -> str:
        await asyncio.sleep(3 * TIMEOUTS.stall_timeout_s)  # past the stall timeout, moving
        return "answered"

    assert await run_watched(request(), watch, sample, "test", poll_s=0.05) == "answered"
    count = len(samples)
    await asyncio.sleep(0.2)  # four poll periods: a live timer would sample again
    assert len(samples) == count


async def test_a_failing_sample_cuts_the_request() -> None:
    loop = asyncio.get_running_loop()
    watch = RequestWatch(TIMEOUTS, 1000, loop.time())

    def sample() -> Progress:
        raise RuntimeError("a bug")

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(NoProgress, match="the request watch failed"):
            await run_watched(waiting_on(loop.create_future()), watch, sample, "test")


async def test_a_timeout_of_the_request_itself_propagates_unchanged() -> None:
    loop = asyncio.get_running_loop()
    watch = RequestWatch(TIMEOUTS, 0, loop.time(), setup_allowance_s=60.0)

    async def request() -> None:
        raise TimeoutError("the request's own")

    with pytest.raises(TimeoutError, match="the request's own") as caught:
        await run_watched(request(), watch, lambda: Progress(), "test")
    assert not isinstance(caught.value, NoProgress)


def test_samples_fall_on_a_common_grid_never_more_than_a_period_apart() -> None:
    """Two requests started apart sample at the same moments (one wake-up for both)."""
    assert next_sample_s(101.3, 5.0, 200.0) == 105.0
    assert next_sample_s(103.9, 5.0, 200.0) == 105.0
    assert next_sample_s(105.0, 5.0, 200.0) == 110.0  # on the grid: a whole period on


def test_the_deadline_comes_before_the_grid() -> None:
    assert next_sample_s(101.3, 5.0, 102.0) == 102.0
    assert next_sample_s(101.3, 5.0, 90.0) == 101.3  # past due: at once
