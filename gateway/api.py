"""The box's JSON API (docs/webui.md): what the officer's page and the `mvb` commands use.

This module holds the recording and configuration routes and the loopback (`local`) channel;
gateway/web/ holds the HTTPS channel with accounts, and the shift, report and event routes.

It reads state and sends commands. It never serves footage (RULES S2).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from common.faults import IllegalTransition
from gateway.web.identity import LOCAL_IDENTITY, set_identity
from gateway.web.jsonbody import ApiError, error_response
from gateway.web.routes import add_feature_routes

if TYPE_CHECKING:
    from gateway.run import RunningBox

RUNNING: web.AppKey[RunningBox] = web.AppKey("running")


def _status(running: RunningBox, document: dict[str, Any]) -> None:
    """Completes the status document (gateway/web/status_view.py builds the rest) with the
    members owned outside it, one line each: they reach GET /api/status and every `status`
    event of GET /api/events alike. Runs on the event loop: cheap members only."""
    document["web"] = None if running.web is None else running.web.status()


MAX_BUNDLE_BYTES = 16 * 1024 * 1024  # config/fleet_client.py's bundle bound


async def _config_bundle(request: web.Request) -> web.Response:
    """A signed configuration bundle pushed to the box (USB stick, web UI): verified like a
    download, then applied. 409 when the box is not paired (no trust root to verify against)."""
    fleet = request.app[RUNNING].fleet
    if fleet is None:
        return error_response(
            ApiError(409, "not_paired", "the box is not paired with the back office")
        )
    bundle = await request.read()
    outcome = await fleet.push(bundle)
    if isinstance(outcome, str):
        return web.json_response({"applied": False, "reason": outcome}, status=422)
    status = 200 if outcome.applied else 422
    return web.json_response(
        {
            "applied": outcome.applied,
            "config_serial": outcome.config_serial,
            "sha256": outcome.sha256,
            "reason": outcome.reason,
        },
        status=status,
    )


async def _record_flag(request: web.Request) -> web.Response:
    """The officer flags the running recording as an incident: it uploads first (P0)."""
    service = request.app[RUNNING].service
    recording = service.recording
    if recording is None:
        return error_response(NOT_RECORDING)
    changed = await asyncio.to_thread(service.store.flag_incident, recording.recording_id)
    return web.json_response({"flagged_files": len(changed), "upload_class": "P0"})


NOT_RECORDING = ApiError(409, "not_recording", "the box is not recording")


async def _record_start(request: web.Request) -> web.Response:
    """Start (or extend) a recording (R2). A start the card refuses is 409 `card_full` with the
    reason, so the officer knows at once that nothing is being recorded."""
    service = request.app[RUNNING].service
    await service.trigger("officer", via="api")
    if service.recording is None:
        reason = service.alarms.get("card_full", "the recording could not start")
        return error_response(ApiError(409, "card_full", reason))
    return web.json_response({"state": service.recorder.state.value})


TRIGGER_SOURCE = re.compile(r"[a-z][a-z0-9_]{0,31}")


async def _trigger(request: web.Request) -> web.Response:
    """A trigger from another device of the vehicle (a bodycam's record button, a control
    panel): `{"source": "bodycam"}`. The source is recorded with the trigger (R3)."""
    try:
        body = await request.json()
    except ValueError:
        return error_response(ApiError(400, "bad_json", "the body must be a JSON object"))
    source = body.get("source") if isinstance(body, dict) else None
    if not isinstance(source, str) or not TRIGGER_SOURCE.fullmatch(source):
        return error_response(
            ApiError(400, "bad_request", "source must match [a-z][a-z0-9_]{0,31}")
        )
    service = request.app[RUNNING].service
    await service.trigger(source, via="api")
    return web.json_response({"state": service.recorder.state.value})


async def _record_stop(request: web.Request) -> web.Response:
    service = request.app[RUNNING].service
    try:
        await service.stop_recording("officer")
    except IllegalTransition:
        return error_response(NOT_RECORDING)
    return web.json_response({"state": service.recorder.state.value})


def add_routes(app: web.Application) -> None:
    """The JSON routes of docs/webui.md section 2 that this module serves; the same on both
    channels (the access layer in front of them decides who may call)."""
    app.router.add_post("/api/record/start", _record_start)
    app.router.add_post("/api/record/stop", _record_stop)
    app.router.add_post("/api/record/flag", _record_flag)
    app.router.add_post("/api/config/bundle", _config_bundle)
    app.router.add_post("/api/trigger", _trigger)
    add_feature_routes(app, app[RUNNING], _status)


@web.middleware
async def _local_identity(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The loopback channel: every caller is a process on the box itself (docs/webui.md 1)."""
    set_identity(request, LOCAL_IDENTITY)
    return await handler(request)


def api_application(running: RunningBox, middlewares: Sequence[Middleware]) -> web.Application:
    """The API as an aiohttp application; `middlewares` decide the caller's identity."""
    app = web.Application(client_max_size=MAX_BUNDLE_BYTES, middlewares=list(middlewares))
    app[RUNNING] = running
    add_routes(app)
    return app


async def start_api(running: RunningBox, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """The loopback (`local`) channel, for the `mvb` commands on the box."""
    runner = web.AppRunner(api_application(running, [_local_identity]), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner.cleanup
