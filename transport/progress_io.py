"""The asyncio shell of transport/progress.py: runs one request under its RequestWatch.

A poller samples the request's counters every POLL_S (and at the watch's deadline), feeds them
to the watch and, once the watch gives a reason, expires an asyncio timeout around the request:
the request is cancelled where it waits and NoProgress(reason), a TransientNetworkError, is
raised instead.
The decision is the watch's; this module only keeps time and cancels.

Invariants:
- The request runs in the caller's task (cancellation and context as without the watch); the
  poller task never outlives `run_watched`.
- Only the watch's verdict cuts the request: a TimeoutError the request raises by itself
  propagates unchanged (the transport translates it as before).
- If sampling fails (a bug), the request is cut rather than left unbounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from transport.errors import TransientNetworkError
from transport.progress import Progress, RequestWatch

log = logging.getLogger(__name__)

POLL_S: Final = 1.0
"""How often a request's counters are sampled: the acknowledgements a socket reports arrive
without an event to wait for. A second is small next to any timeout (the stall timeout is 20 s
by default), and the poller also samples at the watch's deadline, where progress seen late still
counts (transport/progress.py), so sampling less often never cuts a moving request. Four
samples a second cost more CPU per GB on a slow link than the bytes themselves
(docs/benchmarks.md, uplink)."""

T = TypeVar("T")


class NoProgress(TransientNetworkError):
    """The request's watch cut it: its body stalled, or its answer did not come in time. The
    outcome is unknown (a transient fault, as any cut)."""


async def run_watched(
    request: Coroutine[Any, Any, T],
    watch: RequestWatch,
    sample: Callable[[], Progress],
    what: str,
) -> T:
    """Await `request` while `watch` says it progresses; NoProgress("{what}: reason") when it
    does not. `sample()` reads the request's counters (called on the loop's thread)."""
    reason: list[str] = []
    try:
        async with asyncio.timeout(None) as timeout:
            poller = asyncio.create_task(_poll(watch, sample, timeout, reason), name=what)
            try:
                return await request
            finally:
                poller.cancel()
                # The poller only sleeps and samples: it ends at once.
                await asyncio.gather(poller, return_exceptions=True)
    except TimeoutError as exc:
        if reason and timeout.expired():
            raise NoProgress(f"{what}: {reason[0]}") from exc
        raise


async def _poll(
    watch: RequestWatch,
    sample: Callable[[], Progress],
    timeout: asyncio.Timeout,
    reason: list[str],
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        now_s = loop.time()
        try:
            watch.observe(now_s, sample())
            verdict = watch.verdict(now_s)
        except Exception as exc:  # a bug in sampling must not leave the request unbounded
            log.exception("request watch failed")
            verdict = f"the request watch failed ({type(exc).__name__})"
        if verdict is not None:
            reason.append(verdict)
            timeout.reschedule(loop.time())  # cancels the request where it waits
            return
        await asyncio.sleep(max(0.0, min(POLL_S, watch.deadline_s - now_s)))
