"""The holds' routes (docs/webui.md 2, RULES S4): list, hold and release a recording. Who may
(an admin: the loopback channel, or an admin account on the web) and what a hold does are the
box's (gateway/hold_desk.py); the reason in a hold's body is passed on, never logged here."""

from __future__ import annotations

from aiohttp import web

from gateway.port import BoxPort
from gateway.web.identity import identity_of
from gateway.web.jsonbody import answers_refusals, read_json_object


def routes(port: BoxPort) -> list[web.RouteDef]:
    @answers_refusals
    async def list_holds(request: web.Request) -> web.Response:
        return web.json_response(await port.holds_view(identity_of(request)))

    @answers_refusals
    async def hold(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        body = await read_json_object(request)
        answer = await port.hold_recording(identity_of(request), recording_id, body)
        return web.json_response(answer)

    @answers_refusals
    async def release(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        return web.json_response(await port.release_hold(identity_of(request), recording_id))

    return [
        web.get("/api/holds", list_holds),
        web.put("/api/holds/{recording_id}", hold),
        web.delete("/api/holds/{recording_id}", release),
    ]
