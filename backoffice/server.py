"""The HTTPS shell around TusApp: HTTP/1.1 over mutual TLS, on aiohttp.

Invariants:
- Only a client presenting a certificate the back office CA issued gets past the TLS handshake
  (CERT_REQUIRED against `client_ca_file`); its client id is that certificate's CN, which must be
  1-64 of `A-Z a-z 0-9 . _ -` (else 403: ids go into file names and log lines).
- Request bodies reach TusApp as they stream, in pieces of at most BODY_PIECE_BYTES; nothing reads
  a tus body whole (and `client_max_size` bounds what aiohttp would, were anything to). The small
  bodies of the other routes (an audit append, a report, a health report: at most 64 KiB) are
  read whole, to their end, before they are judged (`read_whole_body`: a body longer than one
  TLS record arrives in pieces); an audit append's under the body pace below.
- No connection is held without progress: an idle connection, or one stuck in its request head, is
  closed after `idle_timeout_s` (aiohttp's keep-alive timer); a body must bring at least
  `min_body_rate_bytes_per_s` times `pace_window_s` bytes in every window of `pace_window_s`
  (backoffice/body_pace.py), else TusApp answers 408 and the connection is closed. After an
  answer that left a body unread, the connection lingers at most MAX_LINGER_S. The TLS
  handshake is bounded by `handshake_timeout_s`.
- Each box has at most `in_flight.max_per_client` requests in flight on this back office's
  listeners together (backoffice/in_flight.py); one more is answered 429 with Retry-After. At
  most `max_concurrent_requests` requests are handled at once in all; more are answered 503.
- A request of a certificate withdrawn while it runs is cut (`InFlight.cut`): its body raises
  RequestWithdrawn, TusApp answers 403 and the connection is closed.
- With a `rate_limit`, each client's tus requests are bounded (backoffice/rate_limit.py); one
  over it is answered 429 with Retry-After before it reaches TusApp. Every 429 (requests in
  flight, request rate, creations) closes its connection.
- With a `client_gate`, every request (not only the handshake: keep-alive connections outlive
  it) is first put to the gate with the client certificate's serial; a denied certificate gets
  403 and its connection is closed, and a gate that cannot decide fails closed (503).
- With `blocked_log`, POST /uplink/blocked (transport/blocked_report.py, at most its
  MAX_REPORT_BYTES) is a box's report of a file it blocked, appended with the client's id;
  without one it is 404. Only clients past the TLS handshake and the gate get here.
- With `audit_store`, requests under /audit/v1/ ship the box's audit log and a fleet report's
  `audit_head` is judged (backoffice/audit_routes.py, docs/audit-custody.md); without one 404.
- With `fleet_health`, POST /fleet/health: a box's signed health (backoffice/fleet_health.py);
  with `check_now`, its 204 tells a box the admin asked to check its fleet configuration now,
  and the box's next GET of timestamp.json fulfils the request (backoffice/check_now.py).
- With `fleet_reports`, POST /fleet/report is a box's signed report, verified against the
  device key it enrolled at pairing (`enrolled_keys`; without them every report is 409).
- With `fleet_files`, GET/HEAD under FLEET_PREFIX answer the file it names for this client
  (at most MAX_FLEET_FILE_BYTES, read off the event loop), 404, or 403 for a document that is
  not for this client's box (backoffice/fleet_access.py); nothing under FLEET_PREFIX reaches
  TusApp. Only clients past the TLS handshake and the gate get here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from backoffice.audit_routes import audit_route
from backoffice.audit_store import AuditStore
from backoffice.blocked_log import BlockedLog

# The pace is re-exported (`X as X`): the HTTP/3 shell and the tests reach it here.
from backoffice.body_pace import (
    DEFAULT_MIN_BODY_RATE_BYTES_PER_S as DEFAULT_MIN_BODY_RATE_BYTES_PER_S,
)
from backoffice.body_pace import DEFAULT_PACE_WINDOW_S as DEFAULT_PACE_WINDOW_S
from backoffice.body_pace import BodyPace as BodyPace
from backoffice.body_pace import PacedBody
from backoffice.check_now import CheckNowBook
from backoffice.client_gate import (
    ClientDenied,
    ClientGate,
    EnrolledKeys,
    GateUnavailable,
    client_id_of,
    client_serial_of,
    denial_headers,
)
from backoffice.connection_book import ConnectionLimits
from backoffice.fleet_health import FleetHealthStore, health_route
from backoffice.fleet_reports import (
    ReportLog,
)
from backoffice.fleet_routes import (
    FLEET_PREFIX,
    FLEET_REPORT_PATH,
    FleetFiles,
    blocked_report_route,
    fleet_answer,
    fleet_file_route,
    fleet_report_route,
)
from backoffice.in_flight import IN_FLIGHT_RETRY_AFTER_S, InFlight, Ticket
from backoffice.listener import BudgetedSite, start_site
from backoffice.rate_limit import ClientRateLimit
from backoffice.tus_app import (
    STATUS_CHECKSUM_MISMATCH,
    TUS_VERSION,
    IncomingRequest,
    OutgoingResponse,
    RequestWithdrawn,
    TusApp,
)
from protocol.health_report import HEALTH_PATH
from transport.audit_wire import AUDIT_PREFIX
from transport.blocked_report import BLOCKED_PATH

log = logging.getLogger(__name__)

BODY_PIECE_BYTES: Final = 64 * 1024
"""The largest piece of a body handed to TusApp at once (the server's memory per request)."""
CLIENT_MAX_SIZE_BYTES: Final = 64 * 1024
DEFAULT_IDLE_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 256
DEFAULT_CONNECTIONS: Final = ConnectionLimits(
    max_connections=1024, max_per_address=128, new_per_address_per_s=10.0, new_burst_per_address=40
)
"""Boxes keep one or two connections each, alive; 128 from one address, and 10 new ones a second
(40 at once), leave room for a depot (or a carrier's NAT) full of boxes, at most an eighth of
the budget for one attacker, and a few per cent of a core for the handshakes it can force."""
DEFAULT_HANDSHAKE_TIMEOUT_S: Final = 20.0
"""A TLS handshake over a poor mobile link takes a few seconds; a connection that says nothing
for this long holds a descriptor for nobody."""
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 10.0
MAX_LINGER_S: Final = 2.0
"""After an answer that left a body unread (an error, a stall), aiohttp reads and drops the rest
for at most this long, so the client can read the answer before the close (a close with unread
data would reset the connection and could destroy the answer in flight)."""
_REASONS: Final = {STATUS_CHECKSUM_MISMATCH: "Checksum Mismatch"}


def server_ssl_context(cert_file: Path, key_file: Path, client_ca_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context that requires a client certificate from `client_ca_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(cert_file), str(key_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


def lowercase_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased; a repeated header's values joined with ", " (so a repeated
    Upload-Offset is not digits and is refused, rather than one copy being picked)."""
    joined: dict[str, str] = {}
    items = headers.items()
    for name, value in items:
        key = name.lower()
        joined[key] = value if key not in joined else f"{joined[key]}, {value}"
    return joined


class _HttpsShell:
    """Turns aiohttp requests into TusApp calls (or fleet file answers) for clients that pass
    the gate; counts requests in flight."""

    def __init__(
        self,
        app: TusApp,
        *,
        pace_window_s: float,
        min_body_rate_bytes_per_s: float,
        max_concurrent_requests: int,
        in_flight: InFlight,
        client_gate: ClientGate | None = None,
        fleet_files: FleetFiles | None = None,
        fleet_reports: ReportLog | None = None,
        enrolled_keys: EnrolledKeys | None = None,
        rate_limit: ClientRateLimit | None = None,
        blocked_log: BlockedLog | None = None,
        audit_store: AuditStore | None = None,
        fleet_health: FleetHealthStore | None = None,
        check_now: CheckNowBook | None = None,
    ) -> None:
        self._app = app
        self._fleet_health = fleet_health
        self._check_now = check_now
        self._audit_store = audit_store
        self._enrolled_keys = enrolled_keys
        self._in_flight = in_flight
        self._rate_limit = rate_limit
        self._blocked_log = blocked_log
        self._pace_window_s = pace_window_s
        self._min_body_rate_bytes_per_s = min_body_rate_bytes_per_s
        self._max_concurrent_requests = max_concurrent_requests
        self._client_gate = client_gate
        self._fleet_files = fleet_files
        self._fleet_reports = fleet_reports
        self._requests = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peercert = None if transport is None else transport.get_extra_info("peercert")
        client_id = client_id_of(peercert)
        if client_id is None:
            return _plain(403, "the client certificate has no usable common name")
        ticket = self._in_flight.enter(client_id, client_serial_of(peercert))
        if ticket is None:
            retry_after = {"Retry-After": str(IN_FLIGHT_RETRY_AFTER_S)}
            refused = _plain(429, "too many requests of this box in flight: slow down", retry_after)
            refused.force_close()  # as every 429 (below)
            return refused
        try:
            if self._requests >= self._max_concurrent_requests:
                return _plain(503, "too many requests in flight", {"Retry-After": "5"})
            self._requests += 1
            try:
                response = await self._route(request, peercert, client_id, ticket)
            finally:
                self._requests -= 1
        finally:
            self._in_flight.leave(ticket)
        if ticket.withdrawn() or response.status == 429:
            # Withdrawn: nothing more is served on this connection. 429: a box told to slow
            # down does not need it, and a flood pays a new connection (a handshake, at most
            # its address's rate: backoffice/connection_book.py) for its next request.
            response.force_close()
        return response

    async def _route(
        self, request: web.Request, peercert: object, client_id: str, ticket: Ticket
    ) -> web.StreamResponse:
        refused = await self._gate(peercert, client_id)
        if refused is not None:
            return refused
        if request.path == FLEET_REPORT_PATH and request.method == "POST":
            return await fleet_report_route(
                request, client_id, self._fleet_reports, self._enrolled_keys, self._audit_store
            )
        if request.path == HEALTH_PATH and self._fleet_health is not None:
            return await health_route(
                request, client_id, self._fleet_health, self._enrolled_keys, self._check_now
            )
        if request.path == BLOCKED_PATH:
            return await blocked_report_route(request, client_id, self._blocked_log)
        if request.path.startswith(AUDIT_PREFIX):
            if self._audit_store is None:
                return fleet_answer(404, b"not found\n")
            enrolled = None if self._enrolled_keys is None else await self._enrolled_keys(client_id)
            pace = self._body_pace()
            return await audit_route(request, client_id, self._audit_store, enrolled, pace)
        if request.path.startswith(FLEET_PREFIX):
            return await fleet_file_route(request, client_id, self._fleet_files, self._check_now)
        return await self._tus(request, client_id, ticket)

    async def _gate(self, peercert: object, client_id: str) -> web.Response | None:
        """None when the request may go on; else the answer that refuses it."""
        if self._client_gate is None:
            return None
        serial = client_serial_of(peercert)
        try:
            if serial is None:
                raise ClientDenied("the client certificate has no readable serial")
            await self._client_gate(serial)
        except ClientDenied as exc:
            log.warning("refused a withdrawn client certificate client=%s: %s", client_id, exc)
            response = _plain(
                403,
                "this box was unpaired" if exc.unpaired else "this box's certificate was withdrawn",
                denial_headers(exc),
            )
            response.force_close()  # nothing more is served on this connection
            return response
        except GateUnavailable as exc:
            log.error("client gate unavailable, refusing client=%s: %s", client_id, exc)
            return _plain(
                503, "the back office cannot check certificates now", {"Retry-After": "30"}
            )
        return None

    def _body_pace(self) -> BodyPace:
        """A request body's pace, from now (backoffice/body_pace.py)."""
        now_s = asyncio.get_running_loop().time()
        return BodyPace(self._pace_window_s, self._min_body_rate_bytes_per_s, now_s)

    async def _tus(
        self, request: web.Request, client_id: str, ticket: Ticket
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if self._rate_limit is not None:
            retry_after_s = self._rate_limit.take(client_id, loop.time())
            if retry_after_s is not None:
                headers = {"Retry-After": str(retry_after_s)}
                return _plain(429, "too many requests from this box: slow down", headers)
        pace = BodyPace(self._pace_window_s, self._min_body_rate_bytes_per_s, loop.time())
        body = PacedBody(request.content, pace, piece_bytes=BODY_PIECE_BYTES)
        content = request.content
        ticket.cutter = lambda: content.set_exception(RequestWithdrawn("certificate withdrawn"))
        incoming = IncomingRequest(
            method=request.method,
            target=request.raw_path,
            headers=lowercase_headers(request.headers),
            client_id=client_id,
            body=body,
            withdrawn=ticket.withdrawn,
        )
        outgoing = await self._app.handle(incoming)
        response = _to_aiohttp(outgoing)
        if body.timed_out:
            response.force_close()  # the rest of a stalled body is not worth waiting for
        return response


def _to_aiohttp(outgoing: OutgoingResponse) -> web.Response:
    return web.Response(
        status=outgoing.status,
        reason=_REASONS.get(outgoing.status),
        headers=outgoing.headers,
        body=outgoing.body or None,
    )


def _plain(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=message + "\n",
        headers={"Tus-Resumable": TUS_VERSION, **(headers or {})},
    )


class RunningServer:
    """A started HTTPS server. `port` is the bound port (useful with port 0); `site` holds its
    connection budget and counters."""

    def __init__(self, runner: web.AppRunner, site: BudgetedSite) -> None:
        self._runner = runner
        self.site = site
        self.port = site.port

    async def close(self) -> None:
        """Stop listening, let requests in flight finish (bounded by the shutdown timeout,
        then cancelled: their received bytes are settled), close every connection."""
        await self._runner.cleanup()


async def start_https_server(
    app: TusApp,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    pace_window_s: float = DEFAULT_PACE_WINDOW_S,
    min_body_rate_bytes_per_s: float = DEFAULT_MIN_BODY_RATE_BYTES_PER_S,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    connections: ConnectionLimits = DEFAULT_CONNECTIONS,
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
    in_flight: InFlight | None = None,
    client_gate: ClientGate | None = None,
    fleet_files: FleetFiles | None = None,
    fleet_reports: ReportLog | None = None,
    enrolled_keys: EnrolledKeys | None = None,
    rate_limit: ClientRateLimit | None = None,
    blocked_log: BlockedLog | None = None,
    audit_store: AuditStore | None = None,
    fleet_health: FleetHealthStore | None = None,
    check_now: CheckNowBook | None = None,
) -> RunningServer:
    """Serve `app` over HTTPS with mutual TLS on host:port (0 picks a free port).

    `in_flight` is the per-box book this listener shares with the HTTP/3 one (a book of its own
    with the default cap when None); `client_gate` is asked before every request (see
    ClientGate); `fleet_files` serves the fleet's TUF repository under FLEET_PREFIX (404 there
    without it)."""
    if not (
        idle_timeout_s > 0
        and pace_window_s > 0
        and min_body_rate_bytes_per_s > 0
        and max_concurrent_requests > 0
    ):
        raise ValueError("timeouts, the body pace and the concurrency bound must be > 0")
    context = server_ssl_context(cert_file, key_file, client_ca_file)
    shell = _HttpsShell(
        app,
        pace_window_s=pace_window_s,
        min_body_rate_bytes_per_s=min_body_rate_bytes_per_s,
        max_concurrent_requests=max_concurrent_requests,
        in_flight=InFlight() if in_flight is None else in_flight,
        client_gate=client_gate,
        fleet_files=fleet_files,
        fleet_reports=fleet_reports,
        enrolled_keys=enrolled_keys,
        rate_limit=rate_limit,
        blocked_log=blocked_log,
        audit_store=audit_store,
        fleet_health=fleet_health,
        check_now=check_now,
    )
    return await serve_tls(
        shell.handle,
        context,
        host=host,
        port=port,
        what="tus",
        client_max_size=CLIENT_MAX_SIZE_BYTES,
        idle_timeout_s=idle_timeout_s,
        shutdown_timeout_s=shutdown_timeout_s,
        connections=connections,
        handshake_timeout_s=handshake_timeout_s,
    )


async def serve_tls(
    handle: Handler,
    context: ssl.SSLContext,
    *,
    host: str,
    port: int,
    what: str,
    client_max_size: int,
    idle_timeout_s: float,
    shutdown_timeout_s: float,
    connections: ConnectionLimits,
    handshake_timeout_s: float,
) -> RunningServer:
    """Serve one catch-all handler over TLS on host:port (0: any), the way every listener of
    the back office runs: within its connection budget, in all and per address, with the TLS
    handshake bounded by `handshake_timeout_s` (backoffice/listener.py); a vanished client's
    request is cancelled (its bytes are settled), idle connections close after
    `idle_timeout_s`, no request lines are logged (handlers log what matters), and a listener
    that fails to bind leaves nothing behind."""
    application = web.Application(client_max_size=client_max_size)
    application.router.add_route("*", "/{tail:.*}", handle)
    return await serve_application(
        application,
        context,
        host=host,
        port=port,
        what=what,
        idle_timeout_s=idle_timeout_s,
        shutdown_timeout_s=shutdown_timeout_s,
        connections=connections,
        handshake_timeout_s=handshake_timeout_s,
    )


async def serve_application(
    application: web.Application,
    context: ssl.SSLContext,
    *,
    host: str,
    port: int,
    what: str,
    idle_timeout_s: float,
    shutdown_timeout_s: float,
    connections: ConnectionLimits,
    handshake_timeout_s: float,
) -> RunningServer:
    """`serve_tls` for an application with routes of its own (the fleet admin page)."""
    runner = web.AppRunner(
        application,
        handler_cancellation=True,
        keepalive_timeout=idle_timeout_s,
        lingering_time=min(idle_timeout_s, MAX_LINGER_S),
        access_log=None,
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    try:
        site = await start_site(
            runner,
            host,
            port,
            ssl_context=context,
            limits=connections,
            handshake_timeout_s=handshake_timeout_s,
        )
    except BaseException:
        await runner.cleanup()
        raise
    log.info(
        "serving %s over https host=%s port=%d max_connections=%d max_per_address=%d",
        what,
        host,
        site.port,
        connections.max_connections,
        connections.max_per_address,
    )
    return RunningServer(runner, site)
