"""The HTTPS shell around TusApp: HTTP/1.1 over mutual TLS, on aiohttp.

Invariants:
- Only a client presenting a certificate the back office CA issued gets past the TLS handshake
  (CERT_REQUIRED against `client_ca_file`); its client id is that certificate's CN, which must be
  1-64 of `A-Z a-z 0-9 . _ -` (else 403: ids go into file names and log lines).
- Request bodies reach TusApp as they stream, in pieces of at most BODY_PIECE_BYTES; nothing reads
  a body whole (and `client_max_size` bounds what aiohttp would, were anything to).
- No connection is held without progress: an idle connection, or one stuck in its request head, is
  closed after `idle_timeout_s` (aiohttp's keep-alive timer); a body must deliver a byte at least
  every `idle_timeout_s` and, after a grace of `idle_timeout_s`, average at least
  `min_body_rate_bytes_per_s` (BodyPace), else TusApp answers 408 and the connection is closed.
  After an answer that left a body unread, the connection lingers at most MAX_LINGER_S. The
  TLS handshake is bounded by asyncio's default (60 s).
- At most `max_concurrent_requests` requests are handled at once; more are answered 503.
- With a `rate_limit`, each client's tus requests are bounded (backoffice/rate_limit.py); one
  over it is answered 429 with Retry-After before it reaches TusApp.
- With a `client_gate`, every request (not only the handshake: keep-alive connections outlive
  it) is first put to the gate with the client certificate's serial; a denied certificate gets
  403 and its connection is closed, and a gate that cannot decide fails closed (503).
- With `blocked_log`, POST /uplink/blocked (transport/blocked_report.py, at most its
  MAX_REPORT_BYTES) is a box's report of a file it blocked, appended with the client's id;
  without one it is 404. Only clients past the TLS handshake and the gate get here.
- With `fleet_files`, GET/HEAD under FLEET_PREFIX answer the file it names for this client
  (at most MAX_FLEET_FILE_BYTES, read off the event loop), 404, or 403 for a document that is
  not for this client's box (backoffice/fleet_access.py); nothing under FLEET_PREFIX reaches
  TusApp. Only clients past the TLS handshake and the gate get here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import StreamReader, web
from aiohttp.typedefs import Handler

from backoffice.blocked_log import BlockedLog
from backoffice.fleet_access import FleetFileDenied
from backoffice.fleet_reports import ReportLog, ReportRefused, parse_report
from backoffice.rate_limit import ClientRateLimit
from backoffice.tus_app import (
    STATUS_CHECKSUM_MISMATCH,
    TUS_VERSION,
    IncomingRequest,
    OutgoingResponse,
    TusApp,
)
from common.faults import RemoteFault, StorageFault
from protocol.fleet_report import MAX_REPORT_BYTES
from transport.blocked_report import BLOCKED_PATH, BlockedReportRefused
from transport.blocked_report import MAX_REPORT_BYTES as MAX_BLOCKED_REPORT_BYTES
from transport.blocked_report import parse_report as parse_blocked_report
from transport.unpairing import CREDENTIALS_HEADER, UNPAIRED, WITHDRAWN

log = logging.getLogger(__name__)

BODY_PIECE_BYTES: Final = 64 * 1024
"""The largest piece of a body handed to TusApp at once (the server's memory per request)."""
CLIENT_MAX_SIZE_BYTES: Final = 64 * 1024
DEFAULT_IDLE_TIMEOUT_S: Final = 30.0
DEFAULT_MIN_BODY_RATE_BYTES_PER_S: Final = 1024.0
"""Far below a poor 2G uplink (~5 KB/s); a slow-loris trickle of a few bytes falls under it."""
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 256
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 10.0
MAX_LINGER_S: Final = 2.0
"""After an answer that left a body unread (an error, a stall), aiohttp reads and drops the rest
for at most this long, so the client can read the answer before the close (a close with unread
data would reset the connection and could destroy the answer in flight)."""
CLIENT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
FLEET_PREFIX: Final = "/fleet/"
FLEET_REPORT_PATH: Final = "/fleet/report"
"""Paths under this prefix are the fleet's TUF repository (docs/fleet-config.md 3), never tus."""
MAX_FLEET_FILE_BYTES: Final = 4 * 1024 * 1024
"""The largest fleet file served (the box's own bound on targets metadata)."""
_SERIAL_HEX: Final = re.compile(r"[0-9A-Fa-f]{1,40}")
_REASONS: Final = {STATUS_CHECKSUM_MISMATCH: "Checksum Mismatch"}


class ClientDenied(RemoteFault):
    """Raised by a client gate: this client certificate must not be served (403). `unpaired`:
    an admin removed the box, and the answer says so (transport/unpairing.py)."""

    def __init__(self, message: str, *, unpaired: bool = False) -> None:
        super().__init__(message)
        self.unpaired = unpaired


def denial_headers(denied: ClientDenied) -> dict[str, str]:
    """The header of a 403 to a withdrawn certificate: whether the box was unpaired (it then
    forgets the back office) or only withdrawn (it waits for new credentials)."""
    return {CREDENTIALS_HEADER: UNPAIRED if denied.unpaired else WITHDRAWN}


class GateUnavailable(StorageFault):
    """Raised by a client gate that cannot decide (its state is unreadable): fail closed (503)."""


ClientGate = Callable[[int], Awaitable[None]]
"""`await gate(serial)` before every request of a mutual-TLS client: returns to allow, raises
ClientDenied or GateUnavailable otherwise (docs/pairing.md 5.2: an unpaired box stops at once)."""

FleetFiles = Callable[[str, str], Path | None]
"""`fleet_files(url_path, client_id)`: the file that answers GET `url_path` under FLEET_PREFIX
for the box `client_id`, or None; raises FleetFileDenied for a document not for that box
(`backoffice/fleet_access.py` FleetAccess)."""


@dataclass
class BodyPace:
    """How long the next body read may wait (pure: the caller passes monotonic `now_s`).

    A read may wait at most `idle_timeout_s` after the last byte, and the body as a whole may be
    no later than `idle_timeout_s` plus its size at `min_rate_bytes_per_s`. An honest slow link
    stays ahead of that deadline; a trickle of a byte now and then falls behind it.
    """

    idle_timeout_s: float
    min_rate_bytes_per_s: float
    started_at_s: float
    received_bytes: int = 0
    last_progress_at_s: float = field(init=False)

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.min_rate_bytes_per_s <= 0:
            raise ValueError("idle_timeout_s and min_rate_bytes_per_s must be > 0")
        self.last_progress_at_s = self.started_at_s

    def record(self, piece_bytes: int, now_s: float) -> None:
        if piece_bytes > 0:
            self.received_bytes += piece_bytes
            self.last_progress_at_s = now_s

    def read_timeout_s(self, now_s: float) -> float:
        idle_deadline_s = self.last_progress_at_s + self.idle_timeout_s
        rate_deadline_s = (
            self.started_at_s
            + self.idle_timeout_s
            + self.received_bytes / self.min_rate_bytes_per_s
        )
        return max(0.0, min(idle_deadline_s, rate_deadline_s) - now_s)


class PacedBody:
    """An aiohttp request body as TusApp's AsyncIterator[bytes], paced by a BodyPace.

    Raises TimeoutError (and sets `timed_out`) when the pace is not kept."""

    def __init__(self, content: StreamReader, pace: BodyPace, *, piece_bytes: int) -> None:
        self._content = content
        self._pace = pace
        self._piece_bytes = piece_bytes
        self.timed_out = False

    def __aiter__(self) -> PacedBody:
        return self

    async def __anext__(self) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._pace.read_timeout_s(loop.time())):
                piece = await self._content.read(self._piece_bytes)
        except TimeoutError:
            self.timed_out = True
            raise
        if not piece:
            raise StopAsyncIteration
        self._pace.record(len(piece), loop.time())
        return piece


def client_id_of(peercert: object) -> str | None:
    """The CN of a verified peer certificate (as `SSLSocket.getpeercert()` gives it), if it is
    exactly one CN made of CLIENT_ID_PATTERN; else None."""
    if not isinstance(peercert, Mapping):
        return None
    subject = peercert.get("subject", ())
    if not isinstance(subject, tuple):
        return None
    names = [
        attribute[1]
        for relative_name in subject
        if isinstance(relative_name, tuple)
        for attribute in relative_name
        if isinstance(attribute, tuple) and len(attribute) == 2 and attribute[0] == "commonName"
    ]
    if len(names) != 1 or not isinstance(names[0], str):
        return None
    return names[0] if CLIENT_ID_PATTERN.fullmatch(names[0]) else None


def client_serial_of(peercert: object) -> int | None:
    """The serial number of a verified peer certificate (as `SSLSocket.getpeercert()` gives it,
    upper-case hex), or None when it is missing or not hex."""
    if not isinstance(peercert, Mapping):
        return None
    serial = peercert.get("serialNumber")
    if not isinstance(serial, str) or not _SERIAL_HEX.fullmatch(serial):
        return None
    return int(serial, 16)


def read_fleet_file(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes, or None when it is gone or larger than `max_bytes` (blocking)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return data if len(data) <= max_bytes else None


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
        idle_timeout_s: float,
        min_body_rate_bytes_per_s: float,
        max_concurrent_requests: int,
        client_gate: ClientGate | None = None,
        fleet_files: FleetFiles | None = None,
        fleet_reports: ReportLog | None = None,
        rate_limit: ClientRateLimit | None = None,
        blocked_log: BlockedLog | None = None,
    ) -> None:
        self._app = app
        self._rate_limit = rate_limit
        self._blocked_log = blocked_log
        self._idle_timeout_s = idle_timeout_s
        self._min_body_rate_bytes_per_s = min_body_rate_bytes_per_s
        self._max_concurrent_requests = max_concurrent_requests
        self._client_gate = client_gate
        self._fleet_files = fleet_files
        self._fleet_reports = fleet_reports
        self._in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peercert = None if transport is None else transport.get_extra_info("peercert")
        client_id = client_id_of(peercert)
        if client_id is None:
            return _plain(403, "the client certificate has no usable common name")
        if self._in_flight >= self._max_concurrent_requests:
            return _plain(503, "too many requests in flight", {"Retry-After": "5"})
        self._in_flight += 1
        try:
            refused = await self._gate(peercert, client_id)
            if refused is not None:
                return refused
            if request.path == FLEET_REPORT_PATH and request.method == "POST":
                return await self._fleet_report(request, client_id)
            if request.path == BLOCKED_PATH:
                return await self._blocked_report(request, client_id)
            if request.path.startswith(FLEET_PREFIX):
                return await self._fleet_file(request, client_id)
            return await self._tus(request, client_id)
        finally:
            self._in_flight -= 1

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

    async def _fleet_report(self, request: web.Request, client_id: str) -> web.Response:
        """A box's signed statement of the configuration it applied (backoffice/fleet_reports)."""
        if self._fleet_reports is None:
            return _fleet_answer(404, b"not found\n")
        if (request.content_length or 0) > MAX_REPORT_BYTES:
            return _fleet_answer(413, b"report too large\n")
        body = await request.content.read(MAX_REPORT_BYTES + 1)
        try:
            report = parse_report(client_id, body)
        except ReportRefused as exc:
            return _fleet_answer(400, f"{exc}\n".encode())
        await asyncio.to_thread(self._fleet_reports.append, report)
        log.info(
            "config applied client_id=%s config_serial=%d sha256=%s",
            client_id,
            report.config_serial,
            report.sha256,
        )
        return _fleet_answer(204, b"")

    async def _blocked_report(self, request: web.Request, client_id: str) -> web.Response:
        """A box blocked a file for integrity and says so (transport/blocked_report.py)."""
        if self._blocked_log is None:
            return _fleet_answer(404, b"not found\n")
        if request.method != "POST":
            return _fleet_answer(405, b"POST only\n", {"Allow": "POST"})
        if (request.content_length or 0) > MAX_BLOCKED_REPORT_BYTES:
            return _fleet_answer(413, b"report too large\n")
        body = await request.content.read(MAX_BLOCKED_REPORT_BYTES + 1)
        try:
            report = parse_blocked_report(body)
        except BlockedReportRefused as exc:
            return _fleet_answer(400, f"{exc}\n".encode())
        await asyncio.to_thread(self._blocked_log.append, client_id, report)
        return _fleet_answer(204, b"")

    async def _fleet_file(self, request: web.Request, client_id: str) -> web.Response:
        """A file of the fleet's TUF repository, read-only: GET/HEAD, exact paths, bounded; a
        document only to a box it is for."""
        if self._fleet_files is None:
            return _fleet_answer(404, b"not found\n")
        if request.method not in ("GET", "HEAD"):
            return _fleet_answer(405, b"fleet files are read only\n", {"Allow": "GET, HEAD"})
        # The raw path must be the path itself: no query, no percent-encoding to decode into
        # something served_path did not see.
        if request.raw_path != request.path:
            return _fleet_answer(404, b"not found\n")
        try:
            path = await asyncio.to_thread(self._fleet_files, request.path, client_id)
        except FleetFileDenied:
            return _fleet_answer(403, b"this document is not for this box\n")
        data = (
            None
            if path is None
            else await asyncio.to_thread(read_fleet_file, path, MAX_FLEET_FILE_BYTES)
        )
        if data is None:
            return _fleet_answer(404, b"not found\n")
        return _fleet_answer(200, data, content_type="application/octet-stream")

    async def _tus(self, request: web.Request, client_id: str) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if self._rate_limit is not None:
            retry_after_s = self._rate_limit.take(client_id, loop.time())
            if retry_after_s is not None:
                headers = {"Retry-After": str(retry_after_s)}
                return _plain(429, "too many requests from this box: slow down", headers)
        pace = BodyPace(self._idle_timeout_s, self._min_body_rate_bytes_per_s, loop.time())
        body = PacedBody(request.content, pace, piece_bytes=BODY_PIECE_BYTES)
        incoming = IncomingRequest(
            method=request.method,
            target=request.raw_path,
            headers=lowercase_headers(request.headers),
            client_id=client_id,
            body=body,
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


def _fleet_answer(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    content_type: str = "text/plain",
) -> web.Response:
    # no-store: timestamp.json changes under the same name; nothing in between may keep it.
    return web.Response(
        status=status,
        body=body,
        content_type=content_type,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _plain(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=message + "\n",
        headers={"Tus-Resumable": TUS_VERSION, **(headers or {})},
    )


class RunningServer:
    """A started HTTPS server. `port` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

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
    min_body_rate_bytes_per_s: float = DEFAULT_MIN_BODY_RATE_BYTES_PER_S,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    client_gate: ClientGate | None = None,
    fleet_files: FleetFiles | None = None,
    fleet_reports: ReportLog | None = None,
    rate_limit: ClientRateLimit | None = None,
    blocked_log: BlockedLog | None = None,
) -> RunningServer:
    """Serve `app` over HTTPS with mutual TLS on host:port (0 picks a free port).

    `client_gate` is asked before every request (see ClientGate); `fleet_files` serves the
    fleet's TUF repository under FLEET_PREFIX (404 there without it)."""
    if not (idle_timeout_s > 0 and min_body_rate_bytes_per_s > 0 and max_concurrent_requests > 0):
        raise ValueError("timeouts, the body rate and the concurrency bound must be > 0")
    context = server_ssl_context(cert_file, key_file, client_ca_file)
    shell = _HttpsShell(
        app,
        idle_timeout_s=idle_timeout_s,
        min_body_rate_bytes_per_s=min_body_rate_bytes_per_s,
        max_concurrent_requests=max_concurrent_requests,
        client_gate=client_gate,
        fleet_files=fleet_files,
        fleet_reports=fleet_reports,
        rate_limit=rate_limit,
        blocked_log=blocked_log,
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
) -> RunningServer:
    """Serve one catch-all handler over TLS on host:port (0: any), the way every listener of
    the back office runs: a vanished client's request is cancelled (its bytes are settled),
    idle connections close after `idle_timeout_s`, no request lines are logged (handlers log
    what matters), and a listener that fails to bind leaves nothing behind."""
    application = web.Application(client_max_size=client_max_size)
    application.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(
        application,
        handler_cancellation=True,
        keepalive_timeout=idle_timeout_s,
        lingering_time=min(idle_timeout_s, MAX_LINGER_S),
        access_log=None,
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("serving %s over https host=%s port=%d", what, host, site.port)
    return RunningServer(runner, site.port)
