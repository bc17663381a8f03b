"""GET /api/status, and the one build of the status document that every reader shares: the
shell around gateway/web/status_view.py. It asks the port (gateway/port.py) for the facts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.port import BoxPort
from gateway.web.status_view import build_status, with_alerts

Extras = Callable[[dict[str, Any]], None]
"""Adds members owned outside the box's facts to a finished document (the web listener's own
state, added by the composition root)."""


def no_extras(_document: dict[str, Any]) -> None:
    return None


class StatusSource:
    """Builds the status document of one running box.

    `document()` builds a fresh one; `shared(max_age_s)` hands every caller within `max_age_s`
    the same build, and callers arriving while a build runs wait for that one (the event
    streams of several tablets cost one catalog read, not one each).
    """

    def __init__(
        self,
        port: BoxPort,
        extras: Extras = no_extras,
        *,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self._extras = extras
        self._clock_s = clock_s
        self._last: tuple[float, dict[str, Any]] | None = None
        self._building: asyncio.Future[dict[str, Any]] | None = None

    async def document(self) -> dict[str, Any]:
        """A fresh build; it also becomes the shared one, so that an event stream does not send
        a build older than what a command's answer just showed."""
        started_s = self._clock_s()
        document = with_alerts(build_status(await self.port.status_inputs()))
        self._extras(document)
        if self._last is None or self._last[0] <= started_s:  # a slower, older build never wins
            self._last = (started_s, document)
        return document

    async def shared(self, max_age_s: float) -> dict[str, Any]:
        now_s = self._clock_s()
        if self._last is not None and now_s - self._last[0] <= max_age_s:
            return self._last[1]
        if self._building is None:
            self._building = asyncio.ensure_future(self._build_shared())
        return await asyncio.shield(self._building)

    async def _build_shared(self) -> dict[str, Any]:
        try:
            return await self.document()
        finally:
            self._building = None


def routes(source: StatusSource) -> list[web.RouteDef]:
    async def status(_request: web.Request) -> web.Response:
        """A fresh document: a command that just changed something sees the change."""
        return web.json_response(await source.document())

    return [web.get("/api/status", status)]
