"""The web channel's listeners: HTTPS for the officer's page and API, plain HTTP that redirects.

`start_web(port, status, config)` serves the one API application (gateway/web/app.py) behind
the access layer (gateway/web/access.py) with the session routes and the page
(gateway/web/static/) on `[web] host:https_port`, and a redirect-only site on `http_port` (0:
none).

The HTTPS port looks at each connection's first byte before TLS: a TLS handshake goes to the
HTTPS application; anything else (someone typed http:// with the HTTPS port) gets the same
301 redirect as the HTTP port, instead of a silently dropped connection.

A web listener that cannot start (port taken, unusable certificate) is logged, raised as an
alarm and shown in the status document; it never stops the box from recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from config.local import LocalConfig, is_san_entry
from gateway.port import BoxPort
from gateway.web import access
from gateway.web.access import WebAccess, error_response
from gateway.web.app import api_application
from gateway.web.certs import (
    WebCertificate,
    WebCertificateError,
    ensure_self_signed,
    load_configured,
    server_context,
    wanted_names,
)
from gateway.web.display_routes import add_display_routes
from gateway.web.session_routes import add_session_routes
from gateway.web.status_source import StatusSource

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello
FIRST_BYTE_TIMEOUT_S = 10.0  # a connection that says nothing is closed
HANDSHAKE_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 2.0  # event streams never finish on their own
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (recognising, not binding)
ALARM = "web_listener"
DISPLAYS_FILE = "displays.json"  # vehicle display bindings (digests only: displays.py)


@dataclass
class WebListener:
    """A started (or failed) web channel: what `mvb status` shows, and how to stop it."""

    state: str  # "listening" or "failed"
    url: str
    certificate_sha256: str = ""
    reason: str = ""
    certificate_self_signed: bool = True
    access: WebAccess | None = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        """The status document's "web" member."""
        document: dict[str, Any] = {"state": self.state, "url": self.url}
        if self.certificate_sha256:
            document["certificate_sha256"] = self.certificate_sha256
        if self.reason:
            document["reason"] = self.reason
        return document

    def banner(self) -> str:
        """What `mvb run` prints at start: where the page is and which certificate it shows
        (the fingerprint the officer compares on the tablet, or trusts through the page CA)."""
        if self.state != "listening":
            return f"mvb: the officer's page is not running: {self.reason}"
        how = (
            "self-signed: trust exactly this fingerprint on the tablet"
            if self.certificate_self_signed
            else "configured certificate: a tablet that trusts its CA accepts it"
        )
        return (
            f"mvb: the officer's page: {self.url} "
            f"(certificate SHA-256 {self.certificate_sha256}; {how})"
        )

    async def stop(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._closers.clear()


def web_url(host: str, https_port: int, hostname: str) -> str:
    name = hostname if host in WILDCARD_HOSTS else host
    if ":" in name:
        name = f"[{name}]"
    return f"https://{name}:{https_port}/"


async def start_web(
    port: BoxPort,
    status: StatusSource,
    config: LocalConfig,
    *,
    clock: access.Clock = time.monotonic,
) -> WebListener | None:
    """Start the web channel of `config.web`; None when it is disabled. Accounts and [webui]
    are read from the port's effective configuration at each request (a fleet document applied
    since the start counts from the next request)."""
    web_config = config.web
    if not web_config.enabled:
        return None
    hostname = socket.gethostname()
    url = web_url(web_config.host, web_config.https_port, hostname)
    web_access = WebAccess(
        port.effective_config,
        port.audit,
        clock,
        recorder_busy=port.recorder_busy,
        shift_since_ms=lambda: shift_since_ms(port.shift_view()),
        displays_path=config.state_dir / "web" / DISPLAYS_FILE,
    )
    web_access.load_displays()
    listener = WebListener("listening", url, access=web_access)
    try:
        certificate = await asyncio.to_thread(_certificate, config, hostname)
        listener.certificate_sha256 = certificate.fingerprint_sha256
        listener.certificate_self_signed = certificate.self_signed
        app = api_application(port, status, access.middlewares())
        await _serve(listener, web_access, app, config, certificate)
    except (OSError, WebCertificateError, ssl.SSLError) as exc:
        await listener.stop()
        reason = f"the web UI cannot start: {exc}"
        log.error("%s", reason)
        port.raise_alarm(ALARM, reason)
        return WebListener("failed", url, listener.certificate_sha256, reason)
    return listener


def shift_since_ms(view: dict[str, Any]) -> int | None:
    """The running shift's start from the port's shift view; None when no shift runs."""
    since = view.get("since_ms")
    return since if view.get("active") is True and isinstance(since, int) else None


async def _hold_idle_while_recording(web_access: WebAccess) -> None:
    """While the box records, no session idles out (docs/webui.md 1.1): the idle clocks are
    restarted every IDLE_HOLD_TICK_S, so one ends at the earliest `session_idle_s` after the
    recording (and its post-record) ended."""
    while True:
        web_access.hold_idle_while_recording()
        await asyncio.sleep(access.IDLE_HOLD_TICK_S)


def _certificate(config: LocalConfig, hostname: str) -> WebCertificate:
    web_config = config.web
    if web_config.tls_cert_file:
        cert = config.resolve(web_config.tls_cert_file)
        return load_configured(cert, config.resolve(web_config.tls_key_file))
    names = wanted_names(hostname, web_config.san)
    now = datetime.datetime.now(datetime.UTC)
    return ensure_self_signed(config.state_dir / "web", names, now)


async def _serve(
    listener: WebListener,
    web_access: WebAccess,
    app: web.Application,
    config: LocalConfig,
    certificate: WebCertificate,
) -> None:
    """Set up both applications and their sockets; every part is registered for `stop`
    as soon as it runs, so a failure half-way stops what already started."""
    web_config = config.web
    access.install(app, web_access)
    add_session_routes(app)
    add_display_routes(app)
    _add_page_routes(app)
    https = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await https.setup()
    listener._closers.append(https.cleanup)
    redirect = web.AppRunner(
        redirect_application(web_config.https_port),
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await redirect.setup()
    listener._closers.append(redirect.cleanup)
    if web_config.http_port:
        await web.TCPSite(redirect, web_config.host, web_config.http_port).start()
    context = server_context(certificate.cert_path, certificate.key_path)
    sniffer = FirstByteListener(_protocols(https), _protocols(redirect), context)
    await sniffer.start(web_config.host, web_config.https_port)
    listener._closers.append(sniffer.stop)
    holder = asyncio.create_task(_hold_idle_while_recording(web_access), name="web-idle-hold")
    listener._closers.append(lambda: _cancel(holder))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _protocols(runner: web.AppRunner) -> web.Server:
    """The set-up runner's protocol factory (one HTTP connection handler per call)."""
    if runner.server is None:
        raise RuntimeError("the runner is not set up")
    return runner.server


def _add_page_routes(app: web.Application) -> None:
    """The page: `/` is index.html, the rest under /static/. No data is in them (webui.md 6)."""

    async def index(_request: web.Request) -> web.StreamResponse:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return error_response(404, "not_found", "The page is not installed.")
        return web.FileResponse(page)

    async def static_file(request: web.Request) -> web.StreamResponse:
        # Not aiohttp's add_static: its FileResponse answers a missing file with an empty
        # octet-stream 404 and a directory with 403, where the API's errors are JSON 404s.
        path = await asyncio.to_thread(page_file, request.match_info["path"])
        if path is None:
            return error_response(404, "not_found", "There is nothing here.")
        return web.FileResponse(path)

    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static_file)


def page_file(relative: str, root: Path = STATIC_DIR) -> Path | None:
    """The regular file `root/relative`, or None: nothing there, a directory, or a path that
    leads out of `root` (`..`, an absolute path, a symbolic link pointing out)."""
    try:
        base = root.resolve()
        candidate = (base / relative).resolve()
        inside = candidate.is_relative_to(base) and candidate.is_file()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        return None
    return candidate if inside else None


def redirect_application(https_port: int) -> web.Application:
    """Plain HTTP: every request is answered 301 to the same host and path over HTTPS."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        host = request_host_name(request.host)
        if host is None:
            return error_response(400, "bad_request", "The Host header is not a host name.")
        name = f"[{host}]" if ":" in host else host
        raise web.HTTPMovedPermanently(f"https://{name}:{https_port}{request.rel_url}")

    app = web.Application(middlewares=[access.json_errors])
    app.router.add_route("*", "/{tail:.*}", redirect)
    app.on_response_prepare.append(access.add_security_headers)
    return app


def request_host_name(host_header: str) -> str | None:
    """The host of a Host header without its port (IPv6 without brackets), or None when it
    is not a host name or an IP address (a redirect never points at garbage)."""
    if host_header.startswith("["):
        name, _, _ = host_header[1:].partition("]")
    else:
        name = host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header
    return name if name and is_san_entry(name) else None


ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class FirstByteListener:
    """The HTTPS port: TLS connections to `tls_factory`, anything else to `plain_factory`.

    It peeks (MSG_PEEK) at the first byte, so the chosen protocol still sees every byte."""

    def __init__(
        self, tls_factory: ProtocolFactory, plain_factory: ProtocolFactory, context: ssl.SSLContext
    ) -> None:
        self._tls_factory = tls_factory
        self._plain_factory = plain_factory
        self._context = context
        self._socket: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=128)
        self._socket.setblocking(False)
        self._accepting = asyncio.create_task(self._accept(self._socket), name="web-accept")

    async def stop(self) -> None:
        tasks = [t for t in (self._accepting, *self._connecting) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._socket is not None:
            self._socket.close()

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _address = await loop.sock_accept(listening)
            except OSError as exc:  # e.g. out of descriptors: wait, do not spin
                log.warning("web listener: accept failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            task = asyncio.create_task(self._hand_over(connection))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _hand_over(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            first = await _peek(connection, FIRST_BYTE_TIMEOUT_S)
            if not first:
                connection.close()
            elif first[0] == TLS_HANDSHAKE_RECORD:
                await loop.connect_accepted_socket(
                    self._tls_factory,
                    connection,
                    ssl=self._context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                )
            else:
                await loop.connect_accepted_socket(self._plain_factory, connection)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.debug("web listener: connection dropped before HTTP: %s", exc)
            connection.close()
        except asyncio.CancelledError:
            connection.close()
            raise


async def _peek(connection: socket.socket, timeout_s: float) -> bytes:
    """The first byte the peer sent, left in the socket; b"" when it closed."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(connection.fileno(), ready)
    try:
        await asyncio.wait_for(readable, timeout_s)
    finally:
        loop.remove_reader(connection.fileno())
    return connection.recv(1, socket.MSG_PEEK)
