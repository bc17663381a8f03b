"""The box's JSON API as one aiohttp application (docs/webui.md 2), served on both channels:
HTTPS with accounts (gateway/web/server.py) and loopback for the `mvb` commands
(gateway/web/local_channel.py). The access layer in front of it decides who may call.

Every route reaches the box through the port (gateway/port.py) and nothing else. Each channel
has its own application and event streams (ended when that channel shuts down); both share one
StatusSource, so the documents they serve are one build.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.port import BoxPort
from gateway.web import (
    events,
    hold_routes,
    metrics,
    pair_route,
    record_routes,
    report_routes,
    shift_routes,
    upload_routes,
)
from gateway.web import status_source as status_routes
from gateway.web.status_source import StatusSource

PORT: web.AppKey[BoxPort] = web.AppKey("box_port")


def api_application(
    port: BoxPort, status: StatusSource, middlewares: Sequence[Middleware]
) -> web.Application:
    """The API as an aiohttp application; `middlewares` decide the caller's identity."""
    app = web.Application(
        client_max_size=record_routes.MAX_BUNDLE_BYTES, middlewares=list(middlewares)
    )
    app[PORT] = port
    streams = events.EventStreams(status)
    app.on_shutdown.append(streams.close)
    app.router.add_routes(
        [
            *record_routes.routes(port, status),
            *status_routes.routes(status),
            web.get("/api/events", streams.handle),
            *shift_routes.routes(port),
            *report_routes.routes(port),
            *hold_routes.routes(port),
            *pair_route.routes(port),
            *upload_routes.routes(port),
            *metrics.routes(
                status,
                lambda: port.effective_config().webui.metrics_token_sha256,
                lambda: streams.open_streams,
            ),
        ]
    )
    return app
