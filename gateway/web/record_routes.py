"""The recorder's routes (docs/webui.md 2): start, stop and flag a recording, a trigger from
another device of the vehicle, and a signed configuration bundle pushed to the box. Each asks
the port (gateway/port.py); the box decides. It never serves footage (RULES S2)."""

from __future__ import annotations

import re

from aiohttp import web

from config.fleet_client import MAX_RELEASE_BUNDLE_BYTES
from gateway.port import BoxPort
from gateway.web.identity import identity_of
from gateway.web.jsonbody import ApiError, answers_refusals
from gateway.web.status_source import StatusSource

MAX_BUNDLE_BYTES = 16 * 1024 * 1024  # config/fleet_client.py's bundle bound
MAX_PUSH_BYTES = MAX_RELEASE_BUNDLE_BYTES  # a bundle that carries a release (docs/releases.md 7)
READ_PIECE_BYTES = 1024 * 1024
TRIGGER_SOURCE = re.compile(r"[a-z][a-z0-9_]{0,31}")


async def read_bounded(request: web.Request, max_bytes: int) -> bytes:
    """The body, at most `max_bytes` (413 beyond): the app's client_max_size stays small for
    every other route; only a pushed bundle may carry a release."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=declared)
    body = bytearray()
    while piece := await request.content.read(READ_PIECE_BYTES):
        body += piece
        if len(body) > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=len(body))
    return bytes(body)


def routes(port: BoxPort, status: StatusSource) -> list[web.RouteDef]:
    """Every answer to a command carries the status document built after it (`status`): the
    page shows the command's effect at once, not at the next status of its event stream."""

    async def answer(members: dict[str, object]) -> web.Response:
        return web.json_response({**members, "status": await status.document()})

    @answers_refusals
    async def record_start(request: web.Request) -> web.Response:
        """Start (or extend) a recording (R2). A start the card refuses is 409 `card_full` with
        the reason, so the officer knows at once that nothing is being recorded."""
        return await answer({"state": await port.start_recording(identity_of(request))})

    @answers_refusals
    async def record_stop(request: web.Request) -> web.Response:
        return await answer({"state": await port.stop_recording(identity_of(request))})

    @answers_refusals
    async def record_flag(request: web.Request) -> web.Response:
        """The officer flags the running recording as an incident: it uploads first (P0)."""
        flagged = await port.flag_incident(identity_of(request))
        return await answer({"flagged_files": flagged, "upload_class": "P0"})

    @answers_refusals
    async def trigger(request: web.Request) -> web.Response:
        """A trigger from another device of the vehicle (a bodycam's record button, a control
        panel): `{"source": "bodycam"}`. The source is recorded with the trigger (R3)."""
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(400, "bad_json", "the body must be a JSON object") from exc
        source = body.get("source") if isinstance(body, dict) else None
        if not isinstance(source, str) or not TRIGGER_SOURCE.fullmatch(source):
            raise ApiError(400, "bad_request", "source must match [a-z][a-z0-9_]{0,31}")
        return await answer({"state": await port.trigger(source)})

    @answers_refusals
    async def config_bundle(request: web.Request) -> web.Response:
        """A signed configuration bundle pushed to the box (USB stick, web UI): verified like
        a download, then applied (200), kept to apply once the box's state allows (202,
        `deferred`) or refused (422). 409 when the box is not paired (no trust root)."""
        result = await port.push_bundle(await read_bounded(request, MAX_PUSH_BYTES))
        if result.config_serial is None:
            refused = {"applied": False, "reason": result.reason, "reason_code": result.reason_code}
            return web.json_response(refused, status=422)
        answer = {
            "applied": result.applied,
            "config_serial": result.config_serial,
            "sha256": result.sha256,
            "reason": result.reason,
            "reason_code": result.reason_code,
            "deferred": result.deferred,
        }
        status = 200 if result.applied else 202 if result.deferred else 422
        return web.json_response(answer, status=status)

    return [
        web.post("/api/record/start", record_start),
        web.post("/api/record/stop", record_stop),
        web.post("/api/record/flag", record_flag),
        web.post("/api/config/bundle", config_bundle),
        web.post("/api/trigger", trigger),
    ]
