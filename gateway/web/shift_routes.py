"""GET /api/shift, POST /api/shift/start, /leave and /end (docs/webui.md 2): the shift's face.

Parses a request into a command for the port (gateway/port.py); the rules of a shift are the
box's (gateway/officer/shift.py). The channel decides whose shift it is: on the web the officer
id is the account's (an account without one cannot start a shift: 409 `no_officer_id`); the
local channel names it in the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from config.local import OFFICER_ID  # a service number, the same pattern as [[accounts]]
from gateway.caller import Identity
from gateway.officer.shift import ShiftStart, bodycam_serials
from gateway.port import BoxPort
from gateway.web.identity import identity_of
from gateway.web.jsonbody import (
    ApiError,
    answers_refusals,
    invalid,
    read_json_object,
    reject_unknown,
)


def parse_start(body: Mapping[str, Any], identity: Identity) -> ShiftStart:
    """Who starts a shift with which bodycams, or ApiError (409 `no_officer_id`, 422)."""
    reject_unknown(dict(body), frozenset({"bodycam_serials", "officer_id"}))
    try:
        serials = bodycam_serials(body.get("bodycam_serials", []))
    except ValueError as exc:
        raise invalid("bodycam_serials", str(exc)) from exc
    if identity.channel == "web":
        if "officer_id" in body:
            raise invalid("officer_id", "on the web the officer id comes from your account")
        if not identity.officer_id:
            raise ApiError(409, "no_officer_id", "this account has no officer id: ask the admin")
        return ShiftStart(identity.officer_id, serials)
    officer_id = body.get("officer_id")
    if not isinstance(officer_id, str) or not OFFICER_ID.fullmatch(officer_id):
        raise invalid("officer_id", f"officer_id must match {OFFICER_ID.pattern}")
    return ShiftStart(officer_id, serials)


def parse_leave(body: Mapping[str, Any], identity: Identity) -> str:
    """Who leaves: on the web the account's officer, on the local channel the body's."""
    reject_unknown(dict(body), frozenset({"officer_id"}))
    if identity.channel == "web":
        if "officer_id" in body:
            raise invalid("officer_id", "on the web the officer id comes from your account")
        if not identity.officer_id:
            raise ApiError(409, "no_officer_id", "this account has no officer id: ask the admin")
        return identity.officer_id
    officer_id = body.get("officer_id")
    if not isinstance(officer_id, str) or not OFFICER_ID.fullmatch(officer_id):
        raise invalid("officer_id", f"officer_id must match {OFFICER_ID.pattern}")
    return officer_id


def parse_end(body: Mapping[str, Any]) -> bool:
    """Whether the caller acknowledges missing reports (absent: false)."""
    reject_unknown(dict(body), frozenset({"acknowledge_missing_reports"}))
    acknowledge = body.get("acknowledge_missing_reports", False)
    if not isinstance(acknowledge, bool):
        raise invalid("acknowledge_missing_reports", "must be true or false")
    return acknowledge


def routes(port: BoxPort) -> list[web.RouteDef]:
    async def get_shift(_request: web.Request) -> web.Response:
        return web.json_response(port.shift_view())

    @answers_refusals
    async def start_shift(request: web.Request) -> web.Response:
        identity = identity_of(request)
        start = parse_start(await read_json_object(request), identity)
        return web.json_response(await port.start_shift(identity, start))

    @answers_refusals
    async def leave_shift(request: web.Request) -> web.Response:
        identity = identity_of(request)
        officer_id = parse_leave(await read_json_object(request), identity)
        return web.json_response(await port.leave_shift(identity, officer_id))

    @answers_refusals
    async def end_shift(request: web.Request) -> web.Response:
        acknowledge = parse_end(await read_json_object(request))
        return web.json_response(await port.end_shift(identity_of(request), acknowledge))

    return [
        web.get("/api/shift", get_shift),
        web.post("/api/shift/start", start_shift),
        web.post("/api/shift/leave", leave_shift),
        web.post("/api/shift/end", end_shift),
    ]
