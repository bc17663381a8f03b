"""Driving one tus session over one transport, with tenacity retries for transient faults only.

The session (transport/tus_session.py) decides every request; this module only reads the file
slice it names, hands the request to the transport and feeds the answer back. On a transient fault
the session is told the connection was lost, so its next request asks the server for its offset:
at most the one in-flight chunk is ever sent twice. Pin, integrity and protocol faults propagate at
once (DESIGN principle 5: they are never retried blindly).

With a ChunkSizer (transport/chunk_size.py, one per link) the size of each chunk follows the
goodput measured on the chunks before it, so a chunk takes a bounded time on any link: the bytes
sent again after a cut are at most one chunk of the size in force at the cut.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from transport.chunk_size import ChunkSizer
from transport.errors import RETRYABLE, ServerError
from transport.http import BodySlice, Transport
from transport.tus_messages import UploadOutcome
from transport.tus_session import TusSession


class SliceReader:
    """Reads slices of one sealed (immutable) evidence file without ever blocking the event loop.

    A slice whole in the page cache is copied on the loop (preadv2 with RWF_NOWAIT: the kernel
    refuses rather than waits for the card); anything else is read in a worker thread, so a
    stalled or dying card blocks only that thread. Why not always the thread: each hop costs a
    thread wake-up and two or three loop iterations, which on a slow link are much of an
    upload's CPU (docs/benchmarks.md, uplink). `reads_on_loop` counts the slices read the
    first way.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.reads_on_loop = 0

    async def read(self, body: BodySlice) -> bytes | bytearray:
        data: bytes | bytearray | None = self._read_cached(body)
        if data is None:
            data = await asyncio.to_thread(os.pread, self._fd, body.length_bytes, body.offset_bytes)
        if len(data) != body.length_bytes:
            raise OSError(f"evidence file shorter than expected at offset {body.offset_bytes}")
        return data

    def _read_cached(self, body: BodySlice) -> bytearray | None:
        """The slice if the page cache holds all of it, else None (read it in a thread)."""
        nowait = getattr(os, "RWF_NOWAIT", None)
        if nowait is None or body.length_bytes == 0:
            return None
        buffer = bytearray(body.length_bytes)
        try:
            count = os.preadv(self._fd, [buffer], body.offset_bytes, nowait)
        except OSError:  # EAGAIN (not cached), EOPNOTSUPP (no such reads here): the thread
            return None  # reads it, and raises what the card raises
        if count != body.length_bytes:  # partly cached, or a short file: the thread decides
            return None
        self.reads_on_loop += 1
        # The buffer is the chunk: checksummed and sent from here without a copy.
        return buffer

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One finished request: what the shell learns for link health, budgets and stats."""

    body_bytes: int
    duration_s: float
    status: int


ExchangeHook = Callable[[TusSession, Exchange], Awaitable[None]]
Pacer = Callable[[int], Awaitable[None]]


async def _no_pacing(_body_bytes: int) -> None:
    return None


async def drive(
    session: TusSession,
    transport: Transport,
    reader: SliceReader,
    *,
    on_exchange: ExchangeHook | None = None,
    pace: Pacer = _no_pacing,
    clock_s: Callable[[], float] = time.monotonic,
    sizer: ChunkSizer | None = None,
) -> UploadOutcome:
    """Run `session` to its end over `transport`; raise the first fault by its kind.

    `pace(n)` is awaited before each body of n bytes is sent (the link's rate cap);
    `on_exchange` after each answered request (the shell's health, budget and ledger updates).
    `sizer` sets each chunk's size and learns from each answered chunk (goodput) and from the
    server's limits (advertised, or taught by a 413).
    """
    while True:
        if sizer is not None:
            sizer.limit(session.chunk_limit_bytes)
            session.set_chunk_bytes(sizer.size_bytes())
        request = session.next_request()
        if request is None:
            break
        started_s = clock_s()
        try:
            body = await reader.read(request.body) if request.body is not None else None
            body_bytes = 0 if body is None else len(body)
            if body_bytes:
                await pace(body_bytes)
                started_s = clock_s()
            response = await transport.request(request, body)
        except BaseException:
            # Whatever stopped the request (cut, pin, cancellation, a read error), its outcome
            # is unknown: the session asks the server for its offset before sending more.
            session.connection_lost()
            raise
        duration_s = clock_s() - started_s
        session.receive(response)  # raises ServerError, HostileServer, ... by fault
        if sizer is not None and body_bytes and response.status in (201, 204):
            sizer.observe(body_bytes, duration_s)
        if on_exchange is not None:
            await on_exchange(session, Exchange(body_bytes, duration_s, response.status))
    if session.outcome is None:
        raise RuntimeError("tus session ended without an outcome (terminated?)")
    return session.outcome


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter (seconds), for transient faults on one link assignment."""

    initial_s: float = 2.0
    max_s: float = 300.0
    attempts: int = 6


def _wait_with_retry_after(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Backoff with jitter, but never shorter than a server's Retry-After (capped at max_s)."""
    backoff = wait_exponential_jitter(multiplier=policy.initial_s, max=policy.max_s)

    def wait(state: RetryCallState) -> float:
        delay_s = float(backoff(state))
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, ServerError) and exc.retry_after_s is not None:
            delay_s = max(delay_s, min(exc.retry_after_s, policy.max_s))
        return delay_s

    return wait


async def drive_with_retries(
    attempt: Callable[[], Awaitable[UploadOutcome]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[BaseException, float], None] = lambda _exc, _delay_s: None,
) -> UploadOutcome:
    """Call `attempt` until it succeeds, retrying only RETRYABLE faults, at most policy.attempts.

    Each attempt resumes the same session (it already knows to ask for the server's offset).
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay_s = state.next_action.sleep if state.next_action is not None else 0.0
        if exc is not None:
            on_retry(exc, delay_s)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RETRYABLE),
        wait=_wait_with_retry_after(policy),
        stop=stop_after_attempt(policy.attempts),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for try_ in retrying:
        with try_:
            return await attempt()
    raise AssertionError("tenacity ends by returning or re-raising")  # pragma: no cover
