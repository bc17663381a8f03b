"""The loopback (`local`) channel of the API, for the `mvb` commands on the box itself
(docs/webui.md 1): every caller is a process on the box, trusted as LOCAL_IDENTITY
(config/local.py refuses a non-loopback [api] host)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.port import BoxPort
from gateway.web.app import api_application
from gateway.web.identity import LOCAL_IDENTITY, set_identity
from gateway.web.status_source import StatusSource


@web.middleware
async def _local_identity(request: web.Request, handler: Handler) -> web.StreamResponse:
    set_identity(request, LOCAL_IDENTITY)
    return await handler(request)


async def start_local_api(
    port: BoxPort, status: StatusSource, host: str, tcp_port: int
) -> Callable[[], Awaitable[None]]:
    """Serve the API on `host:tcp_port`; returns how to stop it."""
    app = api_application(port, status, [_local_identity])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, tcp_port).start()
    return runner.cleanup
