"""Log in, who am I, log out: `/api/session` of docs/webui.md 1.1 (RULES U2, L4).

The access layer (gateway/web/access.py) has checked Origin for a login, and a live session
(plus its CSRF token for DELETE) for the other two.

Invariants:
- An unknown name and a wrong password get the same answer (401 `wrong_credentials`) after the
  same work; a banned client or name gets 423 `locked` with Retry-After, whatever the password
  (bans per client and per account: common/login_throttle.py).
- A correct password gives the browser a known-device cookie for that account, so that other
  clients' guesses never lock it out.
- The audit log names accounts only by `account_tag`, clients only by `client_tag`, and never
  sees a password.
"""

from __future__ import annotations

import hashlib
import math

from aiohttp import web

from common.login_throttle import KNOWN_DEVICE_MAX_S, Scope
from common.sessions import CSRF_TOKEN_BYTES, Session, random_token
from config.local_sections import AccountSection
from gateway.web.access import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    WEB_ACCESS,
    LoginBusy,
    WebAccess,
    account_tag,
    error_response,
    grant_of,
    session_of,
)
from gateway.web.identity import identity_of

MAX_USERNAME_CHARS = 64
MAX_PASSWORD_CHARS = 1024
LOGIN_MEMBERS = frozenset({"username", "password"})


def add_session_routes(app: web.Application) -> None:
    app.router.add_post("/api/session", _login)
    app.router.add_get("/api/session", _whoami)
    app.router.add_delete("/api/session", _logout)


async def _credentials(request: web.Request) -> tuple[str, str] | None:
    """`{"username", "password"}` as two bounded strings, or None when malformed."""
    try:
        body = await request.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) - LOGIN_MEMBERS:
        return None  # request bodies are closed (docs/api.yaml): an unknown member is refused
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not 1 <= len(username) <= MAX_USERNAME_CHARS:
        return None
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
        return None
    return username, password


async def _login(request: web.Request) -> web.StreamResponse:
    access = request.app[WEB_ACCESS]
    credentials = await _credentials(request)
    if credentials is None:
        return error_response(
            400, "bad_request", "Send JSON with a username and a password (strings)."
        )
    name, password = credentials
    client = access.client_of(request)
    known = access.known_device(request, name)
    async with access.one_login_at_a_time(name):
        policy = access.throttle_policy()
        retry_after_s = access.throttle.retry_after_s(client, name, known, access.clock(), policy)
        if retry_after_s > 0:
            return _locked(retry_after_s)
        account = access.account(name)
        try:
            matches = await access.verify(account, password)
        except LoginBusy:
            return error_response(
                503, "busy", "Too many logins at once. Try again.", {"Retry-After": "1"}
            )
        if account is None or not matches:
            return await _failed(access, client, name, known)
        access.throttle.succeeded(client, name)
    session = access.sessions.create(
        account.name, account.role, grant_of(account), access.clock(), access.limits()
    )
    await access.record("web.login", account=account_tag(name), role=account.role)
    response = web.json_response(_document(access, session, account))
    response.set_cookie(
        SESSION_COOKIE,
        session.session_id,
        secure=True,
        httponly=True,
        samesite="Strict",
        path="/",
    )
    _remember_device(access, response, account.name)
    return response


def _remember_device(access: WebAccess, response: web.Response, name: str) -> None:
    """A fresh known-device token for this browser and account (login_throttle.KnownDevices)."""
    token = random_token(CSRF_TOKEN_BYTES)
    access.devices.remember(token, name, access.clock())
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=int(KNOWN_DEVICE_MAX_S),
        secure=True,
        httponly=True,
        samesite="Strict",
        path="/api/session",
    )


def client_tag(client: str) -> str:
    """What the audit log says instead of a client's address: a 12-hex SHA-256 prefix."""
    return hashlib.sha256(client.encode()).hexdigest()[:12]


async def _failed(access: WebAccess, client: str, name: str, known: bool) -> web.Response:
    """A wrong password (or an unknown name): counted, audited; the one that bans says so.
    The answer is 423 when this failure banned this client for this name."""
    policy = access.throttle_policy()
    now_s = access.clock()
    engaged = access.throttle.failed(client, name, now_s, policy)
    await access.record("web.login_failed", account=account_tag(name), client=client_tag(client))
    if Scope.ACCOUNT in engaged:
        await access.record(
            "web.account_locked", account=account_tag(name), lockout_s=policy.lockout_s
        )
    if engaged - {Scope.ACCOUNT}:
        scopes = sorted(scope.value for scope in engaged - {Scope.ACCOUNT})
        await access.record(
            "web.client_locked",
            account=account_tag(name),
            client=client_tag(client),
            scope=",".join(scopes),
            lockout_s=policy.lockout_s,
        )
    retry_after_s = access.throttle.retry_after_s(client, name, known, now_s, policy)
    if engaged and retry_after_s > 0:
        return _locked(retry_after_s)
    return error_response(401, "wrong_credentials", "The username or the password is wrong.")


def _locked(retry_after_s: float) -> web.Response:
    seconds = max(1, math.ceil(retry_after_s))
    return error_response(
        423,
        "locked",
        f"Too many wrong passwords: this account cannot log in from here for {seconds} s.",
        {"Retry-After": str(seconds)},
    )


def _document(access: WebAccess, session: Session, account: AccountSection) -> dict[str, object]:
    limits = access.limits()
    return {
        "user": account.name,
        "role": account.role,
        "officer_id": account.officer_id,
        "csrf_token": session.csrf_token,
        "expires_in_s": max(0, math.floor(session.expires_at_s(limits) - access.clock())),
        "session_idle_s": limits.idle_s,
        "session_max_s": limits.max_s,
    }


async def _whoami(request: web.Request) -> web.Response:
    access = request.app[WEB_ACCESS]
    session = session_of(request)
    identity = identity_of(request)
    account = AccountSection(name=identity.user, role=identity.role, officer_id=identity.officer_id)
    return web.json_response(_document(access, session, account))


async def _logout(request: web.Request) -> web.Response:
    access = request.app[WEB_ACCESS]
    session = session_of(request)
    access.sessions.delete(session.session_id)
    await access.record("web.logout", account=account_tag(session.user))
    response = web.json_response({"logged_out": True})
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    return response
