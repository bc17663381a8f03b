"""The minimum pace of a request body: slower than X bytes/s for Y seconds, and it is cut.

Both listeners (backoffice/server.py, backoffice/h3_server.py) read bodies under a BodyPace. A
request holds a slot of its box (backoffice/in_flight.py) and of the server for as long as its
body streams, so a body that trickles must end. The rule: time from the request's start is cut
into windows of `window_s` (Y); every window must bring at least `min_rate_bytes_per_s * window_s`
(X·Y) bytes, else the read that waits past its window's end times out (TimeoutError; TusApp
answers 408 and the shell closes the connection).

What it bounds: a body of N bytes that is not cut ends within `window_s + N / min_rate` of its
start: no window may fall short, so N bytes last at most N / (X·Y) windows, plus the one in which
it ended. With the defaults (1 KiB/s over 30 s) the box's 4 MiB chunk ends within 68 minutes,
the largest chunk (64 MiB) within 18 hours; a slow-loris trickle of a few bytes is cut after
30 s. No byte banked early lets a later window go idle (the old average rule did: 60 MB in a
burst bought hours of silence).

Invariants: pure (the caller passes monotonic `now_s`); windows are back to back from
`started_at_s`; a window that ended short stays the current one, so `read_timeout_s` is 0 from
then on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final

from aiohttp import StreamReader

DEFAULT_MIN_BODY_RATE_BYTES_PER_S: Final = 1024.0
"""Far below a poor 2G uplink (~5 KB/s); a slow-loris trickle of a few bytes falls under it."""
DEFAULT_PACE_WINDOW_S: Final = 30.0
"""Long enough for a mobile link's fade (a tunnel, a handover) inside one window."""


@dataclass
class BodyPace:
    """How long the next body read may wait; see the module docstring."""

    window_s: float
    min_rate_bytes_per_s: float
    started_at_s: float
    received_bytes: int = 0
    window_start_s: float = field(init=False)
    window_bytes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.min_rate_bytes_per_s <= 0:
            raise ValueError("window_s and min_rate_bytes_per_s must be > 0")
        self.window_start_s = self.started_at_s

    @property
    def window_need_bytes(self) -> float:
        return self.min_rate_bytes_per_s * self.window_s

    def record(self, piece_bytes: int, now_s: float) -> None:
        """`piece_bytes` arrived at `now_s`."""
        self._roll(now_s)
        self.received_bytes += piece_bytes
        self.window_bytes += piece_bytes

    def read_timeout_s(self, now_s: float) -> float:
        """Seconds the next read may wait: to the end of the first window still short."""
        self._roll(now_s)
        deadline_s = self.window_start_s + self.window_s
        if self.window_bytes >= self.window_need_bytes:
            deadline_s += self.window_s  # this window is met: the next one must be by its end
        return max(0.0, deadline_s - now_s)

    def _roll(self, now_s: float) -> None:
        """Move past every window that ended and was met."""
        while (
            now_s >= self.window_start_s + self.window_s
            and self.window_bytes >= self.window_need_bytes
        ):
            self.window_start_s += self.window_s
            self.window_bytes = 0


class PacedBody:
    """An aiohttp request body as TusApp's AsyncIterator[bytes], paced by a BodyPace.

    Raises TimeoutError (and sets `timed_out`) when the pace is not kept; whatever the stream
    was given to raise (RequestWithdrawn: `StreamReader.set_exception`) passes through."""

    def __init__(self, content: StreamReader, pace: BodyPace, *, piece_bytes: int) -> None:
        self._content = content
        self._pace = pace
        self._piece_bytes = piece_bytes
        self.timed_out = False

    def __aiter__(self) -> PacedBody:
        return self

    async def __anext__(self) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._pace.read_timeout_s(loop.time())):
                piece = await self._content.read(self._piece_bytes)
        except TimeoutError:
            self.timed_out = True
            raise
        if not piece:
            raise StopAsyncIteration
        self._pace.record(len(piece), loop.time())
        return piece


async def read_whole_body(
    content: StreamReader, max_bytes: int, pace: BodyPace | None = None
) -> bytes | None:
    """The whole body of a small request (to its end), or None as soon as it is known to be
    longer than `max_bytes`. TimeoutError when `pace` is given and not kept.

    Why a loop: `StreamReader.read(n)` returns what has arrived so far, not n bytes. A body longer
    than one TLS record (16 KiB) arrives in pieces, and a single read judged its first piece as
    the whole body: the ext4 power-loss soak's audit appends were refused (400, "whole lines")
    from the moment a box's backlog outgrew one record, and never recovered (docs/soak.md)."""
    body = bytearray()
    loop = asyncio.get_running_loop()
    while True:
        if pace is None:
            piece = await content.read(max_bytes + 1 - len(body))
        else:
            async with asyncio.timeout(pace.read_timeout_s(loop.time())):
                piece = await content.read(max_bytes + 1 - len(body))
            pace.record(len(piece), loop.time())
        if not piece:
            return bytes(body)
        body += piece
        if len(body) > max_bytes:
            return None
