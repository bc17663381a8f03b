"""Bind this browser as the vehicle display, see the binding, end it: `/api/display` of
docs/webui.md 1.4 (the rules are gateway/web/displays.py).

Invariants:
- Only a logged-in caller binds (POST needs a session, with its CSRF token), and only while a
  shift runs: the binding ends with that shift.
- GET and DELETE work with the session or with the display's own cookie; GET hands the
  display's CSRF token to the page, which is how a display without a session records.
- The audit names the account by its tag, never by name; a token is never logged.
"""

from __future__ import annotations

import math

from aiohttp import web

from gateway.web.access import (
    DISPLAY_COOKIE,
    WEB_ACCESS,
    WebAccess,
    account_tag,
    display_of,
    error_response,
    grant_of,
    session_of,
)
from gateway.web.displays import DISPLAY_MAX_S, Display, csrf_token_of


def add_display_routes(app: web.Application) -> None:
    app.router.add_post("/api/display", _bind)
    app.router.add_get("/api/display", _binding)
    app.router.add_delete("/api/display", _unbind)


def _document(access: WebAccess, display: Display | None, token: str) -> dict[str, object]:
    if display is None:
        return {"bound": False}
    return {
        "bound": True,
        "csrf_token": csrf_token_of(token),
        "expires_in_s": max(0, math.floor(display.expires_at_s() - access.clock())),
    }


async def _bind(request: web.Request) -> web.StreamResponse:
    access = request.app[WEB_ACCESS]
    session = session_of(request)
    shift_since_ms = access.shift_since_ms()
    account = access.account(session.user)
    if shift_since_ms is None or account is None:
        return error_response(409, "no_shift", "Start a shift first: a display is for a shift.")
    access.displays.unbind(request.cookies.get(DISPLAY_COOKIE, ""))
    tag = account_tag(account.name)
    token = access.displays.bind(tag, grant_of(account), shift_since_ms, access.clock())
    await access.save_displays()
    await access.record("web.display_bound", account=tag)
    display = access.displays.lookup(token, access.clock(), shift_since_ms, grant_of(account))
    response = web.json_response(_document(access, display, token))
    response.set_cookie(
        DISPLAY_COOKIE,
        token,
        max_age=int(DISPLAY_MAX_S),
        secure=True,
        httponly=True,
        samesite="Strict",
        path="/api",
    )
    return response


async def _binding(request: web.Request) -> web.Response:
    token = request.cookies.get(DISPLAY_COOKIE, "")
    return web.json_response(_document(request.app[WEB_ACCESS], display_of(request), token))


async def _unbind(request: web.Request) -> web.Response:
    access = request.app[WEB_ACCESS]
    display = display_of(request)
    if display is not None and access.displays.unbind(request.cookies.get(DISPLAY_COOKIE, "")):
        await access.save_displays()
        await access.record("web.display_unbound", account=display.account)
    response = web.json_response({"bound": False})
    response.del_cookie(DISPLAY_COOKIE, path="/api", secure=True, httponly=True, samesite="Strict")
    return response
