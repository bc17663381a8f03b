"""GET /api/reports and PUT /api/reports/{recording_id} (docs/webui.md 2 and 4): the report
book's face. What a report holds and when it may be filed is the box's
(gateway/officer/reports.py); the report is sealed as encrypted evidence of its recording."""

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

    return [
        web.get("/api/reports", list_reports),
        web.put("/api/reports/{recording_id}", file_report),
    ]
