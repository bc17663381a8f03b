"""The web channel's access layer (docs/webui.md 1.1, 1.2): who is calling, and may they.

Middlewares in front of the one API application (gateway/web/app.py), outermost first:
1. `json_errors`: every error leaves as `{"error": "<code>", "message": "<plain English>"}`,
   including aiohttp's own 404, 405 and 413 and an unexpected exception (logged, not shown).
2. `access_control`: for /api/*, authentication comes before routing, so a route that does not
   exist answers an unauthenticated caller 401 like one that does. It bounds the body (64 KiB,
   16 MiB for a configuration bundle), checks the session cookie, the CSRF token and Origin of a
   state change, and sets the caller's Identity from the account as the *current* configuration
   has it (a fleet document can remove an account or change its role: its sessions end).
Security headers and `Cache-Control: no-store` are added to every response as it is prepared
(`add_security_headers`), so static files and errors carry them too.

Invariants: no handler behind /api/ runs without a live session, except `POST /api/session`
(login, Origin-checked), `GET /api/display` (answers only whether this browser is a bound
display) and, for a bound vehicle display, exactly DISPLAY_ROUTES (gateway/web/displays.py);
no state change runs without the session's (or on a display route the display's) CSRF token;
nothing here logs a name, a password, an address, a cookie or a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from common.durable import atomic_write_bytes, make_dirs
from common.faults import TransientFault
from common.login_throttle import KnownDevices, LoginThrottle, ThrottlePolicy, client_key
from common.passwords import MIN_ITERATIONS, PasswordHash, parse_password_hash, verify_password
from common.sessions import Session, SessionLimits, SessionTable
from common.web_headers import security_headers
from config.local import LocalConfig
from config.local_sections import AccountSection
from gateway.caller import account_tag as account_tag  # the audit's name for an account
from gateway.web.displays import DISPLAY_ROUTES, Display, DisplayTable, csrf_token_of
from gateway.web.identity import Identity, set_identity, set_still_authorised
from gateway.web.jsonbody import ApiError
from gateway.web.jsonbody import error_response as api_error_response

log = logging.getLogger(__name__)

SESSION_COOKIE = "mvb_session"
DISPLAY_COOKIE = "mvb_display"  # a bound vehicle display (gateway/web/displays.py)
DEVICE_COOKIE = "mvb_device"  # a known device of an account (common/login_throttle.py)
CSRF_HEADER = "X-CSRF-Token"
MAX_BODY_BYTES = 64 * 1024
BUNDLE_PATH = "/api/config/bundle"  # bounded by the application's own 16 MiB instead
LOGIN_PATH = "/api/session"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The page's own status reads: they need a session but do not keep it alive (webui.md 1.1).
PASSIVE_READS = frozenset({("GET", "/api/status"), ("GET", "/api/events")})
DISPLAY_QUESTION = ("GET", "/api/display")  # answered `{"bound": false}` to anyone
LOCAL_ONLY = frozenset({("POST", "/api/trigger")})  # another device of the vehicle (webui.md 2)
MAX_CONCURRENT_VERIFICATIONS = 2  # PBKDF2 is ~0.1-1 s of a core: recording keeps the rest
MAX_WAITING_LOGINS = 16  # beyond this a login flood is answered 503 instead of queued
IDLE_HOLD_TICK_S = 5.0  # how often the shell stops the idle clocks while the box records

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = security_headers(CSP)

ANONYMOUS = Identity(channel="web", user="", role="", officer_id="")
"""The identity of a web request outside /api/ (the page, /metrics with its own token check)."""

_SESSION_KEY: web.RequestKey[Session] = web.RequestKey("web_session", Session)
_DISPLAY_KEY: web.RequestKey[Display] = web.RequestKey("web_display", Display)

Clock = Callable[[], float]
Audit = Callable[..., Awaitable[None]]
"""The port's `audit`: returns when the entry is durable."""


def grant_of(account: AccountSection) -> str:
    """What a session was granted on: its role and password. When either changes, the
    session ends (a password reset must log out a stolen session)."""
    material = f"{account.role}\0{account.password_hash}".encode()
    return hashlib.sha256(material).hexdigest()


class LoginBusy(TransientFault):
    """More logins are waiting for a verification slot than MAX_WAITING_LOGINS."""


@dataclass
class WebAccess:
    """The web channel's state: sessions, the login throttle and the known devices (in memory),
    the configuration as the box runs it now (`config_of`), the clock (monotonic seconds), the
    audit log, and whether the recorder records or runs its post-record (`recorder_busy`: the
    sessions' idle clock stands still meanwhile, docs/webui.md 1.1)."""

    config_of: Callable[[], LocalConfig]
    audit: Audit
    clock: Clock = time.monotonic
    recorder_busy: Callable[[], bool] = lambda: False
    shift_since_ms: Callable[[], int | None] = lambda: None
    sessions: SessionTable = field(default_factory=SessionTable)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    devices: KnownDevices = field(default_factory=KnownDevices)
    displays: DisplayTable = field(default_factory=DisplayTable)
    displays_path: Path | None = None  # where the bindings outlive a restart (digests only)
    _verifications: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_VERIFICATIONS)
    )
    _waiting: int = 0
    _name_locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)
    _dummy_hashes: dict[int, str] = field(default_factory=dict)

    def limits(self) -> SessionLimits:
        webui = self.config_of().webui
        return SessionLimits(idle_s=webui.session_idle_s, max_s=webui.session_max_s)

    def throttle_policy(self) -> ThrottlePolicy:
        webui = self.config_of().webui
        return ThrottlePolicy(webui.max_failed_logins, webui.lockout_s)

    def account(self, name: str) -> AccountSection | None:
        return next((a for a in self.config_of().accounts if a.name == name), None)

    async def record(self, event: str, **fields: Any) -> None:
        """An audit entry, durable when this returns."""
        await self.audit(event, **fields)

    @contextlib.asynccontextmanager
    async def one_login_at_a_time(self, name: str) -> AsyncIterator[None]:
        """Attempts for one name run one after another, so a burst of parallel guesses cannot
        slip past the lock; the lock is dropped when nobody holds or waits for it."""
        lock, users = self._name_locks.get(name, (asyncio.Lock(), 0))
        self._name_locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._name_locks[name]
            if users == 1:
                del self._name_locks[name]
            else:
                self._name_locks[name] = (lock, users - 1)

    async def verify(self, account: AccountSection | None, password: str) -> bool:
        """The password check, with the same work for an unknown name (a dummy hash of the same
        cost) so that timing does not tell which names exist. Runs on a worker thread, at most
        MAX_CONCURRENT_VERIFICATIONS at once; raises LoginBusy when too many wait."""
        stored = account.password_hash if account is not None else self.dummy_hash()
        if self._waiting >= MAX_WAITING_LOGINS:
            raise LoginBusy
        self._waiting += 1
        try:
            async with self._verifications:
                matches = await asyncio.to_thread(verify_password, stored, password)
        finally:
            self._waiting -= 1
        return matches and account is not None

    def dummy_hash(self) -> str:
        """A hash nobody's password matches, as costly as the dearest configured one."""
        iterations = max(
            (_iterations(a.password_hash) for a in self.config_of().accounts),
            default=MIN_ITERATIONS,
        )
        if iterations not in self._dummy_hashes:
            unmatchable = PasswordHash(iterations, b"mvb-unmatchable", bytes(32))
            self._dummy_hashes[iterations] = unmatchable.text()
        return self._dummy_hashes[iterations]

    def current_session(self, request: web.Request, *, touch: bool = True) -> Session | None:
        """The caller's live session, or None. A session whose account is gone, or whose role or
        password changed, is ended here; so are all sessions of accounts that are gone.
        `touch` restarts the idle timer: only for what the officer does, not for the page's own
        status reads (PASSIVE_READS), or an unattended tablet would never log out; and always
        while the recorder is busy (a recording never logs the officer out)."""
        self._end_sessions_of_vanished_accounts()
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            return None
        touch = touch or self.recorder_busy()
        now_s = self.clock()
        session = self.sessions.lookup(session_id, now_s, self.limits())
        if session is None:
            return None
        account = self.account(session.user)
        if account is None or grant_of(account) != session.grant:
            self.sessions.delete(session_id)
            return None
        return self.sessions.touch(session_id, now_s) if touch else session

    def hold_idle_while_recording(self) -> bool:
        """While the recorder is busy, every live session's idle timer starts again (the shell
        calls this at least every IDLE_HOLD_TICK_S); True when it did."""
        if not self.recorder_busy():
            return False
        self.sessions.touch_all(self.clock(), self.limits())
        return True

    def current_display(self, request: web.Request) -> Display | None:
        """The vehicle display this browser was bound as, while its binding holds (the same
        shift runs, the officer's account unchanged: gateway/web/displays.py)."""
        token = request.cookies.get(DISPLAY_COOKIE)
        if not token:
            return None
        tag = self.displays.account_of(token)
        if tag is None:
            return None
        account = self.account_tagged(tag)
        grant = None if account is None else grant_of(account)
        return self.displays.lookup(token, self.clock(), self.shift_since_ms(), grant)

    def account_tagged(self, tag: str) -> AccountSection | None:
        return next((a for a in self.config_of().accounts if account_tag(a.name) == tag), None)

    def display_identity(self, display: Display) -> Identity:
        """A display acts for the officer who bound it, with the role `display` that no
        service grants anything beyond DISPLAY_ROUTES."""
        account = self.account_tagged(display.account)
        name, officer_id = ("", "") if account is None else (account.name, account.officer_id)
        return Identity(channel="web", user=name, role="display", officer_id=officer_id)

    def load_displays(self) -> None:
        """The bindings kept before a restart; a file that cannot be read binds nothing."""
        path = self.displays_path
        if path is None or not path.exists():
            return
        try:
            self.displays.load_json(path.read_bytes(), self.clock())
        except (OSError, ValueError) as exc:
            log.warning("web: vehicle display bindings not restored: %s", exc)

    async def save_displays(self) -> None:
        """Durable before the answer: a power cut after a bind keeps the tablet bound."""
        if self.displays_path is None:
            return
        try:
            await asyncio.to_thread(_write_private, self.displays_path, self.displays.to_json())
        except OSError as exc:  # the binding still holds until the next restart
            log.warning("web: vehicle display bindings not saved: %s", exc.strerror or exc)

    def client_of(self, request: web.Request) -> str:
        """Who the throttle counts a login against (common/login_throttle.py)."""
        return client_key(request.remote)

    def known_device(self, request: web.Request, name: str) -> bool:
        return self.devices.knows(request.cookies.get(DEVICE_COOKIE), name, self.clock())

    def _end_sessions_of_vanished_accounts(self) -> None:
        names = {account.name for account in self.config_of().accounts}
        for user in self.sessions.users() - names:
            self.sessions.delete_all_for(user)

    def identity(self, session: Session) -> Identity:
        account = self.account(session.user)
        officer_id = account.officer_id if account is not None else ""
        return Identity(channel="web", user=session.user, role=session.role, officer_id=officer_id)


def _write_private(path: Path, data: bytes) -> None:
    make_dirs(path.parent)
    atomic_write_bytes(path, data, mode=0o600)


def _iterations(stored: str) -> int:
    try:
        return parse_password_hash(stored).iterations
    except ValueError:
        return MIN_ITERATIONS


WEB_ACCESS: web.AppKey[WebAccess] = web.AppKey("web_access", WebAccess)


def session_of(request: web.Request) -> Session:
    """The session `access_control` found for this request (session routes only)."""
    session = request.get(_SESSION_KEY)
    if not isinstance(session, Session):
        raise RuntimeError("no session on the request: the access middleware is not installed")
    return session


def display_of(request: web.Request) -> Display | None:
    """The live vehicle display of this browser, on the display routes; else None."""
    display = request.get(_DISPLAY_KEY)
    return display if isinstance(display, Display) else None


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The access layer's refusals in the one error shape of gateway/web/jsonbody.py."""
    return api_error_response(ApiError(status, code, message), headers)


_CODES = {
    400: ("bad_request", "The request is malformed."),
    401: ("login_required", "Log in first."),
    403: ("forbidden", "This is not allowed."),
    404: ("not_found", "There is nothing here."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("too_large", "The request body is too large."),
    415: ("unsupported_media_type", "This content type is not accepted."),
}
_KEPT_HEADERS = ("Allow", "Retry-After")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's and the handlers' HTTP errors, and crashes, as JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise  # redirects are answers, and a handler's JSON error is already one
        code, message = _CODES.get(exc.status, ("http_error", exc.reason))
        kept = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
        return error_response(exc.status, code, message, kept)
    except Exception:
        log.exception("web request %s %s failed", request.method, request.path)
        return error_response(500, "internal", "The box could not answer this request.")


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def origin_allowed(request: web.Request) -> bool:
    """An `Origin` header, when a browser sends one, must be the box's own HTTPS origin."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"https://{request.host}"


def _body_too_large(request: web.Request) -> bool:
    limit = None if request.path == BUNDLE_PATH else MAX_BODY_BYTES
    length = request.content_length
    return limit is not None and length is not None and length > limit


@web.middleware
async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication, CSRF and identity for the web channel (docs/webui.md 1.1, 1.2)."""
    access = request.app[WEB_ACCESS]
    if not is_api(request.path):
        set_identity(request, ANONYMOUS)
        return await handler(request)
    if _body_too_large(request):
        return error_response(413, "too_large", "The request body is too large.")
    if request.path != BUNDLE_PATH:
        # a chunked body has no Content-Length: the bound is enforced while it is read
        request = request.clone(client_max_size=MAX_BODY_BYTES)
    if request.method == "POST" and request.path == LOGIN_PATH:
        if not origin_allowed(request):
            return _csrf_refused()
        set_identity(request, ANONYMOUS)
        return await handler(request)
    route = (request.method, request.path)
    session = access.current_session(request, touch=route not in PASSIVE_READS)
    display = access.current_display(request) if route in DISPLAY_ROUTES else None
    if session is None and display is None:
        if route == DISPLAY_QUESTION:
            set_identity(request, ANONYMOUS)  # "not bound" tells a stranger nothing
            return await handler(request)
        return error_response(401, "login_required", "Log in first.")
    if request.method in STATE_CHANGING and not _csrf_ok(request, session, display):
        return _csrf_refused()
    if route in LOCAL_ONLY:
        return error_response(403, "forbidden", "Only devices of the vehicle may call this.")
    if display is not None:
        request[_DISPLAY_KEY] = display
    if session is not None:
        request[_SESSION_KEY] = session
        set_identity(request, access.identity(session))
        set_still_authorised(
            request, lambda: access.current_session(request, touch=False) is not None
        )
    elif display is not None:
        set_identity(request, access.display_identity(display))
        set_still_authorised(request, lambda: access.current_display(request) is not None)
    return await handler(request)


def _csrf_ok(request: web.Request, session: Session | None, display: Display | None) -> bool:
    """The session's token, or on a display route the display's own."""
    token = request.headers.get(CSRF_HEADER, "")
    display_token = csrf_token_of(request.cookies.get(DISPLAY_COOKIE, ""))
    matches = (session is not None and session.csrf_matches(token)) or (
        display is not None and hmac.compare_digest(display_token.encode(), token.encode())
    )
    return origin_allowed(request) and matches


def _csrf_refused() -> web.Response:
    return error_response(
        403, "csrf", "The request did not come from the box's own page. Reload the page."
    )


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the headers of docs/webui.md 1.2 on every response."""
    response.headers.update(SECURITY_HEADERS)
    if is_api(request.path):
        response.headers["Cache-Control"] = "no-store"


def install(app: web.Application, access: WebAccess) -> None:
    """Give `app` (built with `middlewares()`) its access state and the header hook."""
    app[WEB_ACCESS] = access
    app.on_response_prepare.append(add_security_headers)


def middlewares() -> list[Any]:
    return [json_errors, access_control]
