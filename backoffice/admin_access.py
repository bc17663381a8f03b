"""Who may use the fleet admin page (docs/fleet-admin.md 7.2): logins, sessions, CSRF, headers.

The same rules as the officer's page (docs/webui.md 1.1, 1.2), on the same pure cores in common/:
PBKDF2 hashes (common/passwords.py), sessions in memory with an idle and an absolute limit
(common/sessions.py), and the lockout per client and per account together with known devices
(common/login_throttle.py: 5 wrong passwords from one client for one account, 20 from one client
or against one account, ban for 15 minutes, even for the right password).

Invariants:
- No route behind /api/ but `POST /api/session` runs without a live session of an account that
  still exists with the password it logged in with (`grant`); no POST or DELETE without the
  session's CSRF token in X-CSRF-Token and, when the browser sends one, its own Origin.
- Every answer carries SECURITY_HEADERS (CSP without inline script or style) and API answers
  `Cache-Control: no-store`.
- Logins are verified off the event loop, at most 2 at once (uploads keep the rest), at most 16
  waiting (more: 503 `busy`); an unknown name costs the same work as a wrong password and gets
  the same answer.
- Nothing logs a name, a password, an address, a cookie or a token: names and clients appear
  as 12-hex SHA-256 prefixes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from backoffice.admin_accounts import AdminAccountsUnreadable, load_accounts
from common.login_throttle import (
    KNOWN_DEVICE_MAX_S,
    KnownDevices,
    LoginThrottle,
    ThrottlePolicy,
    client_key,
)
from common.passwords import hash_password, verify_password
from common.sessions import CSRF_TOKEN_BYTES, Session, SessionLimits, SessionTable, random_token
from common.web_headers import security_headers

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "mvb_admin_session"
DEVICE_COOKIE: Final = "mvb_admin_device"
CSRF_HEADER: Final = "X-CSRF-Token"
LOGIN_PATH: Final = "/api/session"
STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
POLICY: Final = ThrottlePolicy(max_failed_logins=5, lockout_s=900.0)
LIMITS: Final = SessionLimits(idle_s=1800.0, max_s=8 * 3600.0)
"""An admin's working session: 30 minutes idle, 8 hours at most."""
MAX_CONCURRENT_VERIFICATIONS: Final = 2
MAX_WAITING_LOGINS: Final = 16
"""Beyond this a login flood is answered 503 `busy` instead of queued."""
MAX_USERNAME_CHARS: Final = 64
MAX_PASSWORD_CHARS: Final = 1024
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = security_headers(CSP)
_DUMMY_HASH: Final = hash_password("an unknown account costs a wrong password's work")


def tag(text: str) -> str:
    """What logs say instead of a name or an address."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """`{"error": code, "message": English}`: the page translates the code, never the message."""
    body = json.dumps({"error": code, "message": message})
    return web.Response(
        status=status, text=body, content_type="application/json", headers=headers or {}
    )


def grant_of(password_hash: str) -> str:
    """What a session was granted on: a changed password ends it."""
    return hashlib.sha256(password_hash.encode()).hexdigest()


@dataclass
class AdminAccess:
    """The admin page's login state, in memory (a restart logs everyone out)."""

    state_dir: Path
    clock: Callable[[], float] = time.monotonic
    sessions: SessionTable = field(default_factory=SessionTable)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    devices: KnownDevices = field(default_factory=KnownDevices)
    _verifying: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_VERIFICATIONS)
    )
    _waiting: int = 0

    def accounts(self) -> dict[str, str]:
        try:
            return load_accounts(self.state_dir)
        except (OSError, AdminAccountsUnreadable) as exc:
            log.error("admin accounts unreadable, nobody logs in: %s", exc)
            return {}

    async def login(self, request: web.Request) -> web.Response:
        credentials = await _credentials(request)
        if credentials is None:
            return error(400, "bad_request", "Send JSON with a username and a password.")
        name, password = credentials
        client = client_key(request.remote)
        known = self.devices.knows(request.cookies.get(DEVICE_COOKIE), name, self.clock())
        retry_after_s = self.throttle.retry_after_s(client, name, known, self.clock(), POLICY)
        if retry_after_s > 0:
            return _locked(retry_after_s)
        stored = (await asyncio.to_thread(self.accounts)).get(name)
        if self._waiting >= MAX_WAITING_LOGINS:
            return error(503, "busy", "Too many logins at once. Try again.", {"Retry-After": "1"})
        self._waiting += 1
        try:
            async with self._verifying:
                matches = await asyncio.to_thread(verify_password, stored or _DUMMY_HASH, password)
        finally:
            self._waiting -= 1
        if stored is None or not matches:
            engaged = self.throttle.failed(client, name, self.clock(), POLICY)
            log.warning("admin login failed account=%s client=%s", tag(name), tag(client))
            if engaged:
                log.warning("admin login locked account=%s client=%s", tag(name), tag(client))
                wait_s = self.throttle.retry_after_s(client, name, known, self.clock(), POLICY)
                if wait_s > 0:
                    return _locked(wait_s)
            return error(401, "wrong_credentials", "The username or the password is wrong.")
        self.throttle.succeeded(client, name)
        session = self.sessions.create(name, "admin", grant_of(stored), self.clock(), LIMITS)
        log.info("admin login account=%s", tag(name))
        response = web.json_response({"user": name, "csrf_token": session.csrf_token})
        response.set_cookie(
            SESSION_COOKIE, session.session_id, secure=True, httponly=True, samesite="Strict"
        )
        device = random_token(CSRF_TOKEN_BYTES)
        self.devices.remember(device, name, self.clock())
        response.set_cookie(
            DEVICE_COOKIE,
            device,
            max_age=int(KNOWN_DEVICE_MAX_S),
            secure=True,
            httponly=True,
            samesite="Strict",
            path=LOGIN_PATH,
        )
        return response

    async def session_of(self, request: web.Request) -> Session | None:
        """The live session of this request's cookie whose account still holds its grant (the
        accounts file is read off the event loop: a slow disk must not stall every request)."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            return None
        session = self.sessions.lookup(session_id, self.clock(), LIMITS)
        if session is None:
            return None
        stored = (await asyncio.to_thread(self.accounts)).get(session.user)
        if stored is None or not hmac.compare_digest(grant_of(stored), session.grant):
            self.sessions.delete_all_for(session.user)  # removed, or its password changed
            return None
        return self.sessions.touch(session_id, self.clock())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Security headers on every answer; the session and CSRF rules on /api/."""
        try:
            if request.path.startswith("/api/"):
                response = await self._api(request, handler)
                response.headers["Cache-Control"] = "no-store"
            else:
                response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404, 405, 413: JSON with a code too
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
            response = error(exc.status, code.get(exc.status, "bad_request"), exc.reason)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _api(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in STATE_CHANGING and not _same_origin(request):
            return error(403, "csrf", "This request did not come from this page.")
        if request.path == LOGIN_PATH and request.method == "POST":
            return await self.login(request)
        session = await self.session_of(request)
        if session is None:
            return error(401, "login_required", "Log in first.")
        if request.method in STATE_CHANGING and not session.csrf_matches(
            request.headers.get(CSRF_HEADER, "")
        ):
            return error(403, "csrf", "This request did not carry the page's CSRF token.")
        request[SESSION_KEY] = session
        return await handler(request)


SESSION_KEY: Final = web.RequestKey("admin_session", Session)
ACCESS_KEY: Final = web.AppKey("admin_access", AdminAccess)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"https://{request.host}"


async def _credentials(request: web.Request) -> tuple[str, str] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) != {"username", "password"}:
        return None
    name, password = body["username"], body["password"]
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_USERNAME_CHARS:
        return None
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
        return None
    return name, password


def _locked(retry_after_s: float) -> web.Response:
    seconds = max(1, math.ceil(retry_after_s))
    return error(
        423,
        "locked",
        f"Too many wrong passwords: no login for this account from here for {seconds} s.",
        {"Retry-After": str(seconds)},
    )
