"""GET /api/events: the status document as a server-sent event stream (docs/webui.md 2).

A stream sends `retry: 1000` once, the event `status` (the document of GET /api/status, one
JSON line) at once on connect and then every `interval_s`, and a `: heartbeat` comment every
`heartbeat_every` events so idle proxies keep it open. All streams share one build of the
document per interval (StatusSource.shared).

Invariants: a stream ends when its session does (expiry, logout, account changed): it is
checked before every event, since a stream is one request that may outlive its session; at
most `max_streams` streams run per channel (the next one gets 503 `busy` with
Retry-After, so a forgotten tab cannot starve the box); a stream ends when its client goes
away (the next write fails) and when the listener shuts down (`close`), so stopping the
service never waits for a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from gateway.web.identity import still_authorised
from gateway.web.jsonbody import ApiError, error_response
from gateway.web.status_source import StatusSource

MAX_STREAMS = 8
INTERVAL_S = 0.5  # the contract: at least every 0.5 s
HEARTBEAT_EVERY = 20  # events between heartbeat comments (10 s at the default interval)
RETRY_MS = 1000  # how soon a browser's EventSource reconnects after a drop


def encode_event(name: str, data: Any) -> bytes:
    """One event in text/event-stream framing; `data` as a single JSON line (JSON escapes
    every newline inside strings, so the frame cannot be split or injected)."""
    line = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"event: {name}\ndata: {line}\n\n".encode()


class EventStreams:
    """The event streams of one listener: counts them and ends them at shutdown."""

    def __init__(
        self,
        source: StatusSource,
        *,
        max_streams: int = MAX_STREAMS,
        interval_s: float = INTERVAL_S,
        heartbeat_every: int = HEARTBEAT_EVERY,
    ) -> None:
        self.source = source
        self.max_streams = max_streams
        self.interval_s = interval_s
        self.heartbeat_every = heartbeat_every
        self.open_streams = 0
        self._closing = asyncio.Event()

    async def close(self, _app: web.Application | None = None) -> None:
        """End every stream (aiohttp's on_shutdown runs this before it waits for handlers)."""
        self._closing.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._closing.is_set():
            return error_response(ApiError(503, "stopping", "the box is stopping"))
        if self.open_streams >= self.max_streams:
            busy = ApiError(503, "busy", f"at most {self.max_streams} event streams at once")
            return error_response(busy, headers={"Retry-After": "5"})
        self.open_streams += 1
        try:
            return await self._stream(request)
        finally:
            self.open_streams -= 1

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # a reverse proxy must not hold events back
            }
        )
        await response.prepare(request)
        sent = 0
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            while not self._closing.is_set() and still_authorised(request):
                document = await self.source.shared(self.interval_s)
                await response.write(encode_event("status", document))
                sent += 1
                if sent % self.heartbeat_every == 0:
                    await response.write(b": heartbeat\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.interval_s)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away: nothing to tell it
        return response
