"""The report book's face (docs/webui.md 2 and 4): GET /api/reports, PUT /api/reports/{id} (a
recording's report), POST /api/reports/{id}/corrections (a later report linked to the first),
POST /api/warnings (a warning without a recording). What a report holds and when it may be filed
is the box's (gateway/officer/reports*.py); each is sealed as encrypted evidence."""

from __future__ import annotations

from aiohttp import web

from gateway.port import BoxPort
from gateway.web.identity import identity_of
from gateway.web.jsonbody import answers_refusals, read_json_object


def routes(port: BoxPort) -> list[web.RouteDef]:
    async def list_reports(_request: web.Request) -> web.Response:
        return web.json_response(port.reports_view())

    @answers_refusals
    async def file_report(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        body = await read_json_object(request)
        return web.json_response(await port.file_report(identity_of(request), recording_id, body))

    @answers_refusals
    async def correct_report(request: web.Request) -> web.Response:
        recording_id = request.match_info["recording_id"]
        body = await read_json_object(request)
        answer = await port.correct_report(identity_of(request), recording_id, body)
        return web.json_response(answer)

    @answers_refusals
    async def register_warning(request: web.Request) -> web.Response:
        body = await read_json_object(request)
        return web.json_response(await port.register_warning(identity_of(request), body))

    return [
        web.get("/api/reports", list_reports),
        web.put("/api/reports/{recording_id}", file_report),
        web.post("/api/reports/{recording_id}/corrections", correct_report),
        web.post("/api/warnings", register_warning),
    ]
