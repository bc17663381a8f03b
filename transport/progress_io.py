"""The asyncio shell of transport/progress.py: runs one request under its RequestWatch.

A timer samples the request's counters every `poll_s` at most (and at the watch's deadline),
feeds them to the watch and, once the watch gives a reason, expires an asyncio timeout around
the request: the request is cancelled where it waits and NoProgress(reason), a
TransientNetworkError, is raised instead. The decision is the watch's; this module only keeps
time and cancels.

Each sample is a wake-up of the event loop, and on a slow link wake-ups, not bytes, are what the
upload costs in CPU (docs/benchmarks.md, uplink: about 0.2 ms each on a busy machine, cold
caches after a second of sleep). So the sampling is a loop.call_at callback (one loop iteration
per sample, no task), and a source that dates its progress (`Progress.moved_at_s`, HTTPS: the
socket's last ACK) is sampled every DATED_POLL_S only: its stall is found at the watch's deadline
all the same. Samples fall on a grid of the loop's clock (`next_sample_s`), so the watches of
requests in flight together wake the loop once, not once each.

Invariants:
- The request runs in the caller's task (cancellation and context as without the watch); no
  timer of the watch outlives `run_watched`.
- Only the watch's verdict cuts the request: a TimeoutError the request raises by itself
  propagates unchanged (the transport translates it as before).
- If sampling fails (a bug), the request is cut rather than left unbounded.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from transport.errors import TransientNetworkError
from transport.progress import Progress, RequestWatch

log = logging.getLogger(__name__)

POLL_S: Final = 1.0
"""How often an undated source's counters are sampled (HTTP/3: the acknowledgements it reports
arrive without an event to wait for, and progress counts at the sample that sees it). A second is
small next to any timeout (the stall timeout is 20 s by default): a stall is found within a
second of `stall_timeout_s`. The poller also samples at the watch's deadline, where progress seen
late still counts (transport/progress.py), so sampling less often never cuts a moving request."""

DATED_POLL_S: Final = 10.0
"""How often a source that dates its progress (`Progress.moved_at_s`) is sampled at most. The
date makes the deadline exact (the last ACK plus `stall_timeout_s`), so a dead link is found at
`stall_timeout_s` whatever the period; the period bounds only what a peer that keeps sending
ACKs without taking a byte can add (such an ACK dates the progress seen since the last sample).
A caller keeps it no longer than half its `stall_timeout_s` (so that case is found within 1.5x
`stall_timeout_s`: 30 s by default) and no longer than its answer's shortest bound
(`read_timeout_s`, `request_timeout_s`: the body's end is seen at a sample and dated, so seen
within that bound, the answer's deadline is kept exactly). 10 s rather than 5 s: on an EDGE-like
link each sample is a wake-up costing about 0.2 ms of CPU (docs/benchmarks.md, uplink)."""

T = TypeVar("T")


class NoProgress(TransientNetworkError):
    """The request's watch cut it: its body stalled, or its answer did not come in time. The
    outcome is unknown (a transient fault, as any cut)."""


async def run_watched(
    request: Coroutine[Any, Any, T],
    watch: RequestWatch,
    sample: Callable[[], Progress],
    what: str,
    *,
    poll_s: float = POLL_S,
) -> T:
    """Await `request` while `watch` says it progresses; NoProgress("{what}: reason") when it
    does not. `sample()` reads the request's counters (called on the loop's thread), at least
    every `poll_s` and at the watch's deadline."""
    loop = asyncio.get_running_loop()
    reason: list[str] = []
    timer: asyncio.Handle | None = None
    try:
        async with asyncio.timeout(None) as timeout:

            def poll() -> None:
                nonlocal timer
                now_s = loop.time()
                verdict = _sample_verdict(watch, sample, now_s)
                if verdict is not None:
                    timer = None
                    reason.append(verdict)
                    timeout.reschedule(loop.time())  # cancels the request where it waits
                    return
                timer = loop.call_at(next_sample_s(now_s, poll_s, watch.deadline_s), poll)

            timer = loop.call_soon(poll)
            try:
                return await request
            finally:
                if timer is not None:
                    timer.cancel()
    except TimeoutError as exc:
        if reason and timeout.expired():
            raise NoProgress(f"{what}: {reason[0]}") from exc
        raise


def next_sample_s(now_s: float, poll_s: float, deadline_s: float) -> float:
    """When to sample next: the watch's deadline, or before it the next multiple of `poll_s` on
    the loop's clock (never more than `poll_s` away). On a common grid, the watches of requests
    in flight together (the box uploads several files per link) sample in one wake-up of the
    loop instead of one each."""
    grid_s = (math.floor(now_s / poll_s) + 1) * poll_s
    return max(now_s, min(grid_s, deadline_s))


def _sample_verdict(
    watch: RequestWatch, sample: Callable[[], Progress], now_s: float
) -> str | None:
    try:
        watch.observe(now_s, sample())
        return watch.verdict(now_s)
    except Exception as exc:  # a bug in sampling must not leave the request unbounded
        log.exception("request watch failed")
        return f"the request watch failed ({type(exc).__name__})"
