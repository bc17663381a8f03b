"""The HTTP/3 shell around the framework-free tus handler (backoffice/tus_app.py), on aioquic.

Mutual TLS. aioquic 1.7's server cannot verify client certificates by itself: QuicConfiguration's
`verify_mode` / `cafile` are only used by clients; its server sends a CertificateRequest only when
a private flag ("for test purposes only") is set, and even then it checks just the client's proof
of possession (the CertificateVerify signature), never the chain, and it carries on when the
client sends no certificate. So this shell
1. sets that flag on every connection (transport/quic_peer.py `request_client_certificate`);
2. when the handshake completes, before a single HTTP/3 byte is parsed or sent, verifies the
   client's leaf with cryptography's X.509 verifier against `client_ca_file` (chain, validity,
   clientAuth extended key usage) and requires exactly one CN made of CLIENT_ID_PATTERN;
3. otherwise closes the connection with a TLS certificate alert (certificate_required or
   bad_certificate): the handler never sees a request from it.
The request's `client_id` is that CN. (Box certificates are issued directly by the CA, whose path
length is 0, so the client's intermediates, if it sent any, are not needed.)

Bounds, so one client cannot exhaust the back office:
- header blocks: H3StreamGuard (transport/h3.py) checks frame headers before aioquic buffers a
  byte; a decoded block over MAX_FIELD_SECTION_BYTES is answered 431 without the handler. A guard
  violation closes the connection (H3_EXCESSIVE_LOAD): no honest client sends one.
- requests per connection: at most MAX_CONCURRENT_REQUESTS unanswered streams; further streams
  are refused with H3_REQUEST_REJECTED (never processed, so the client may safely retry).
- requests per box: the same InFlight book as the HTTPS listener (backoffice/in_flight.py): one
  over the box's cap is answered 429, and a request of a certificate withdrawn while it runs is
  cut (its body raises RequestWithdrawn: 403).
- request bodies stream to the handler through a per-request buffer, in pieces of at most
  BODY_PIECE_BYTES, paced like the HTTPS shell (BodyPace: too slow raises TimeoutError, a broken
  stream ConnectionResetError). aioquic grants flow-control credit as data arrives rather than as
  it is consumed, so backpressure is applied below it: while a connection's buffered body bytes
  are at or above BODY_BUFFER_HIGH_BYTES its incoming datagrams are dropped (QUIC sees loss, the
  client backs off and retransmits) until the handlers drained them to BODY_BUFFER_LOW_BYTES. A
  connection thus holds at most BODY_BUFFER_HIGH_BYTES plus what one datagram releases: its own
  payload, or, when it fills a gap, the out-of-order data aioquic was already holding.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameUnexpected, H3Connection
from aioquic.h3.events import DataReceived, H3Event, Headers, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
)
from aioquic.tls import AlertDescription
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from backoffice.client_gate import (
    CLIENT_ID_PATTERN,
    ClientDenied,
    ClientGate,
    GateUnavailable,
    denial_headers,
)
from backoffice.in_flight import IN_FLIGHT_RETRY_AFTER_S, InFlight, Ticket
from backoffice.server import (
    BODY_PIECE_BYTES,
    DEFAULT_MIN_BODY_RATE_BYTES_PER_S,
    DEFAULT_PACE_WINDOW_S,
    BodyPace,
)
from backoffice.tus_app import IncomingRequest, OutgoingResponse, RequestWithdrawn
from common.faults import RemoteFault
from transport.h3 import (
    CONNECTION_SPECIFIC_HEADERS,
    MAX_FIELD_SECTION_BYTES,
    H3LimitExceeded,
    H3StreamGuard,
    certificate_error_code,
    field_section_bytes,
    split_header_fields,
)
from transport.quic_peer import check_private_api, peer_certificate_der, request_client_certificate

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS: Final = 8
"""Unanswered request streams per connection; the box uploads one chunk at a time."""
BODY_BUFFER_HIGH_BYTES: Final = 1024 * 1024
"""A connection's buffered request body bytes at which its datagrams start being dropped."""
BODY_BUFFER_LOW_BYTES: Final = 256 * 1024
"""...and at or below which they are read again."""
DEFAULT_IDLE_TIMEOUT_S: Final = 30.0


class RequestHandler(Protocol):
    """What the shell serves: backoffice.tus_app.TusApp has exactly this method."""

    async def handle(self, request: IncomingRequest) -> OutgoingResponse: ...


class ClientCertificateRejected(RemoteFault):
    """The client's certificate is missing or not one the back office CA issued to a box."""

    def __init__(self, alert: AlertDescription, message: str) -> None:
        super().__init__(message)
        self.alert = alert


def box_client_verifier_builder(client_cas: Store) -> PolicyBuilder:
    """A verifier for box certificates: chain to `client_cas`, clientAuth EKU, and (unlike the
    web PKI profile) no Subject Alternative Name required: a box is named by its CN only."""
    leaf_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return (
        PolicyBuilder()
        .store(client_cas)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
    )


def client_id_of_certificate(der_certificate: bytes | None, client_cas: Store) -> str:
    """The verified box's client id (its certificate's CN); ClientCertificateRejected otherwise.

    The verifier is built per call so "now" is the time of this handshake."""
    if der_certificate is None:
        raise ClientCertificateRejected(
            AlertDescription.certificate_required, "the client presented no certificate"
        )
    certificate = x509.load_der_x509_certificate(der_certificate)
    verifier = box_client_verifier_builder(client_cas).build_client_verifier()
    try:
        verifier.verify(certificate, [])
    except VerificationError as exc:
        raise ClientCertificateRejected(
            AlertDescription.bad_certificate, f"client certificate not accepted: {exc}"
        ) from exc
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if len(names) == 1 else None
    if not isinstance(common_name, str) or not CLIENT_ID_PATTERN.fullmatch(common_name):
        raise ClientCertificateRejected(
            AlertDescription.bad_certificate, "the client certificate has no usable common name"
        )
    return common_name


def response_header_fields(
    status: int, headers: Mapping[str, str], body: bytes
) -> list[tuple[bytes, bytes]]:
    """The HTTP/3 header block of a response: lower-case names, no HTTP/1.1 hop-by-hop fields
    (aioquic's client would close the connection on one), content-length for a body."""
    fields = [(b":status", str(status).encode("ascii"))]
    names: set[str] = set()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in CONNECTION_SPECIFIC_HEADERS:
            names.add(lowered)
            fields.append((lowered.encode("ascii"), value.encode("latin-1")))
    if body and "content-length" not in names:
        fields.append((b"content-length", str(len(body)).encode("ascii")))
    return fields


@dataclass
class H3ServerStats:
    """Counters for operators (and tests): refusals and backpressure."""

    connections_refused: int = 0
    streams_refused: int = 0
    datagrams_dropped_for_backpressure: int = 0
    requests_denied: int = 0
    requests_over_client_cap: int = 0
    peak_buffered_body_bytes: int = 0


class _RequestBody:
    """One request body between aioquic (producer) and the handler (consumer).

    Invariant: `buffered_bytes` is what it holds, and every change is reported to `on_change`
    so the connection can apply backpressure. Iteration yields pieces of at most
    BODY_PIECE_BYTES; what arrived is always handed out before an error is raised.
    """

    def __init__(self, pace: BodyPace, on_change: Callable[[int], None]) -> None:
        self.buffered_bytes = 0
        self._pieces: deque[bytes] = deque()
        self._ended = False
        self._error: Exception | None = None
        self._discarded = False
        self._ready = asyncio.Event()
        self._pace = pace
        self._on_change = on_change

    def push(self, data: bytes) -> None:
        if self._discarded or self._ended or self._error is not None or not data:
            return
        self._pieces.append(data)
        self._change(len(data))

    def end(self) -> None:
        self._ended = True
        self._ready.set()

    def fail(self, error: Exception) -> None:
        if not self._ended and self._error is None:
            self._error = error
            self._ready.set()

    def discard(self) -> None:
        """The handler is done: drop what it did not read and accept nothing more."""
        self._discarded = True
        self._pieces.clear()
        self._change(-self.buffered_bytes)

    def __aiter__(self) -> _RequestBody:
        return self

    async def __anext__(self) -> bytes:
        loop = asyncio.get_running_loop()
        while not self._pieces:
            if self._ended:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            self._ready.clear()
            async with asyncio.timeout(self._pace.read_timeout_s(loop.time())):
                await self._ready.wait()
        piece = self._take(BODY_PIECE_BYTES)
        self._pace.record(len(piece), loop.time())
        return piece

    def _take(self, limit_bytes: int) -> bytes:
        parts: list[bytes] = []
        taken_bytes = 0
        while self._pieces and taken_bytes < limit_bytes:
            part = self._pieces.popleft()
            room_bytes = limit_bytes - taken_bytes
            if len(part) > room_bytes:
                self._pieces.appendleft(part[room_bytes:])
                part = part[:room_bytes]
            parts.append(part)
            taken_bytes += len(part)
        self._change(-taken_bytes)
        return b"".join(parts)

    def _change(self, delta_bytes: int) -> None:
        self.buffered_bytes += delta_bytes
        self._on_change(delta_bytes)
        if delta_bytes > 0:
            self._ready.set()


@dataclass
class _Stream:
    """A client request stream. `guard` None: refused at opening, never given to aioquic's
    HTTP/3 layer. The entry lives until the client stopped sending and we stopped answering."""

    guard: H3StreamGuard | None
    body: _RequestBody | None = None
    receiving: bool = True
    answered: bool = False


@dataclass
class _ServerState:
    """What every connection of one server shares."""

    handler: RequestHandler
    client_cas: Store
    pace_window_s: float
    min_body_rate_bytes_per_s: float
    in_flight: InFlight
    client_gate: ClientGate | None = None
    stats: H3ServerStats = field(default_factory=H3ServerStats)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class _ServerProtocol(QuicConnectionProtocol):
    """One client connection. Invariant: `_h3` stays None (no HTTP/3 parsed or sent) until the
    client's certificate was verified; then `_client_id` is its CN."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: QuicStreamHandler | None = None,
        *,
        server: _ServerState,
    ) -> None:
        super().__init__(quic, stream_handler)
        request_client_certificate(quic)
        self._server = server
        self._h3: H3Connection | None = None
        self._client_id = ""
        self._client_serial = 0
        self._terminated = False
        self._streams: dict[int, _Stream] = {}
        self._unidirectional_guards: dict[int, H3StreamGuard] = {}
        self._buffered_body_bytes = 0
        self._paused = False

    # aioquic's side

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self._paused:
            self._server.stats.datagrams_dropped_for_backpressure += 1
            return
        super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self._admit_client()
        elif isinstance(event, ConnectionTerminated):
            self._on_terminated()
        elif self._h3 is not None and not self._terminated:
            self._on_stream_event(self._h3, event)

    def _admit_client(self) -> None:
        try:
            der = peer_certificate_der(self._quic)
            self._client_id = client_id_of_certificate(der, self._server.client_cas)
            assert der is not None  # client_id_of_certificate refuses a missing certificate
            self._client_serial = x509.load_der_x509_certificate(der).serial_number
        except ClientCertificateRejected as exc:
            self._server.stats.connections_refused += 1
            log.warning("HTTP/3 connection refused: %s", exc)
            self._quic.close(
                error_code=certificate_error_code(exc.alert),
                reason_phrase="client certificate refused",
            )
            return
        self._h3 = H3Connection(self._quic)

    def _on_terminated(self) -> None:
        self._terminated = True
        self._paused = False
        for stream in self._streams.values():
            if stream.body is not None:
                stream.body.fail(ConnectionResetError("the HTTP/3 connection ended"))

    def _on_stream_event(self, h3: H3Connection, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and not self._admit_data(event):
            return
        if isinstance(event, StreamReset):
            self._on_stream_reset(event.stream_id)
        for h3_event in h3.handle_event(event):
            self._on_h3_event(h3_event)
        if isinstance(event, StreamDataReceived):
            self._after_data(event)

    def _admit_data(self, event: StreamDataReceived) -> bool:
        """Guard the bytes before aioquic's HTTP/3 layer sees them; False drops them."""
        stream_id = event.stream_id
        if stream_is_unidirectional(stream_id):
            guard = self._unidirectional_guards.setdefault(stream_id, H3StreamGuard(stream_id))
            if event.end_stream:
                del self._unidirectional_guards[stream_id]
        else:
            stream = self._streams.get(stream_id) or self._open_stream(stream_id)
            if event.end_stream:
                stream.receiving = False
            if stream.guard is None:
                self._forget_if_done(stream_id, stream)
                return False
            guard = stream.guard
        try:
            guard.feed(event.data)
        except H3LimitExceeded as exc:
            self._close_for_excess(f"stream {stream_id}: {exc}")
            return False
        return True

    def _after_data(self, event: StreamDataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None or stream.guard is None:
            return
        try:
            stream.guard.check_undelivered()
        except H3LimitExceeded as exc:
            self._close_for_excess(f"stream {event.stream_id}: {exc}")
            return
        self._forget_if_done(event.stream_id, stream)

    def _open_stream(self, stream_id: int) -> _Stream:
        unanswered = sum(1 for stream in self._streams.values() if not stream.answered)
        if unanswered < MAX_CONCURRENT_REQUESTS:
            stream = _Stream(H3StreamGuard(stream_id))
        else:
            self._server.stats.streams_refused += 1
            self._quic.stop_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            stream = _Stream(guard=None, answered=True)
        self._streams[stream_id] = stream
        return stream

    def _on_stream_reset(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.receiving = False
        if stream.body is not None:
            stream.body.fail(ConnectionResetError("the client reset the request stream"))
        self._forget_if_done(stream_id, stream)

    def _on_h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        stream = self._streams.get(event.stream_id)
        if stream is None or stream.guard is None:
            return
        if isinstance(event, HeadersReceived):
            stream.guard.headers_delivered()
            if stream.body is None and not stream.answered:
                self._start_request(event.stream_id, stream, event.headers)
        elif stream.body is not None:
            stream.body.push(event.data)
        if event.stream_ended and stream.body is not None:
            stream.body.end()

    def _start_request(self, stream_id: int, stream: _Stream, headers: Headers) -> None:
        if field_section_bytes(headers) > MAX_FIELD_SECTION_BYTES:
            self._respond(stream_id, stream, OutgoingResponse(431, {}))
            return
        ticket = self._server.in_flight.enter(self._client_id, self._client_serial)
        if ticket is None:
            self._server.stats.requests_over_client_cap += 1
            retry_after = {"retry-after": str(IN_FLIGHT_RETRY_AFTER_S)}
            self._respond(stream_id, stream, OutgoingResponse(429, retry_after))
            return
        pseudo, regular = split_header_fields(headers)
        if ":authority" in pseudo:
            regular.setdefault("host", pseudo[":authority"])
        loop = asyncio.get_running_loop()
        pace = BodyPace(
            self._server.pace_window_s, self._server.min_body_rate_bytes_per_s, loop.time()
        )
        body = stream.body = _RequestBody(pace, self._body_buffer_changed)
        ticket.cutter = lambda: body.fail(RequestWithdrawn("certificate withdrawn"))
        request = IncomingRequest(
            method=pseudo.get(":method", ""),
            target=pseudo.get(":path", ""),
            headers=regular,
            client_id=self._client_id,
            body=body,
            withdrawn=ticket.withdrawn,
        )
        task = asyncio.create_task(self._serve(stream_id, stream, request, ticket))
        self._server.tasks.add(task)
        task.add_done_callback(self._server.tasks.discard)

    async def _serve(
        self, stream_id: int, stream: _Stream, request: IncomingRequest, ticket: Ticket
    ) -> None:
        try:
            response = await self._gate() or await self._server.handler.handle(request)
        except Exception:
            # A handler bug must not take the connection (or the other requests) down.
            log.exception("the request handler failed method=%s", request.method)
            response = OutgoingResponse(500, {})
        finally:
            self._server.in_flight.leave(ticket)
            if stream.body is not None:
                stream.body.discard()
        self._respond(stream_id, stream, response)

    async def _gate(self) -> OutgoingResponse | None:
        """Before every request, as on the HTTPS listener: an unpaired box stops at once."""
        gate = self._server.client_gate
        if gate is None:
            return None
        try:
            await gate(self._client_serial)
        except ClientDenied as denied:
            self._server.stats.requests_denied += 1
            headers = {name.lower(): value for name, value in denial_headers(denied).items()}
            return OutgoingResponse(403, headers)
        except GateUnavailable:
            return OutgoingResponse(503, {"retry-after": "30"})
        return None

    def _respond(self, stream_id: int, stream: _Stream, response: OutgoingResponse) -> None:
        stream.answered = True
        if self._h3 is None or self._terminated:
            return
        fields = response_header_fields(response.status, response.headers, response.body)
        # RuntimeError / FrameUnexpected: the client reset or stopped the stream; nobody listens.
        with contextlib.suppress(RuntimeError, FrameUnexpected):
            self._h3.send_headers(stream_id, fields, end_stream=not response.body)
            if response.body:
                self._h3.send_data(stream_id, response.body, end_stream=True)
        if stream.receiving:
            # Answered before the whole body came: ask the client to stop (RFC 9114 4.1).
            with contextlib.suppress(ValueError):
                self._quic.stop_stream(stream_id, ErrorCode.H3_NO_ERROR)
        self._forget_if_done(stream_id, stream)
        self.transmit()

    def _forget_if_done(self, stream_id: int, stream: _Stream) -> None:
        if stream.answered and not stream.receiving:
            self._streams.pop(stream_id, None)

    def _close_for_excess(self, reason: str) -> None:
        log.warning("HTTP/3 connection closed: %s", reason)
        self._quic.close(error_code=ErrorCode.H3_EXCESSIVE_LOAD, reason_phrase="limit exceeded")
        self._on_terminated()

    def _body_buffer_changed(self, delta_bytes: int) -> None:
        self._buffered_body_bytes += delta_bytes
        stats = self._server.stats
        stats.peak_buffered_body_bytes = max(
            stats.peak_buffered_body_bytes, self._buffered_body_bytes
        )
        if self._buffered_body_bytes >= BODY_BUFFER_HIGH_BYTES:
            self._paused = True
        elif self._buffered_body_bytes <= BODY_BUFFER_LOW_BYTES:
            self._paused = False


class RunningH3Server:
    """A listening HTTP/3 server. `port` is the bound UDP port (useful with port 0); `stats`
    counts refusals and backpressure; `close()` stops everything the server started."""

    def __init__(
        self, udp_transport: asyncio.DatagramTransport, quic_server: QuicServer, state: _ServerState
    ) -> None:
        self._udp_transport = udp_transport
        self._quic_server = quic_server
        self._state = state
        self._closed = False
        self.port: int = udp_transport.get_extra_info("sockname")[1]

    @property
    def stats(self) -> H3ServerStats:
        return self._state.stats

    async def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE is sent), the socket, and cancel the
        handlers still running (TusApp settles what they received); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._quic_server.close()
        tasks = list(self._state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def start_h3_server(
    handler: RequestHandler,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    pace_window_s: float = DEFAULT_PACE_WINDOW_S,
    min_body_rate_bytes_per_s: float = DEFAULT_MIN_BODY_RATE_BYTES_PER_S,
    in_flight: InFlight | None = None,
    client_gate: ClientGate | None = None,
) -> RunningH3Server:
    """Serve `handler` over HTTP/3 with (verified) client certificates on host:port (UDP; 0
    picks a free port). RuntimeError at once if aioquic no longer has what mutual TLS needs.
    `in_flight`: the per-box book shared with the HTTPS listener (one of its own when None)."""
    check_private_api()
    configuration = QuicConfiguration(
        is_client=False, alpn_protocols=H3_ALPN, idle_timeout=idle_timeout_s
    )
    configuration.load_cert_chain(cert_file, key_file)
    state = _ServerState(
        handler=handler,
        client_cas=Store(x509.load_pem_x509_certificates(client_ca_file.read_bytes())),
        pace_window_s=pace_window_s,
        min_body_rate_bytes_per_s=min_body_rate_bytes_per_s,
        in_flight=InFlight() if in_flight is None else in_flight,
        client_gate=client_gate,
    )
    create_protocol = functools.partial(_ServerProtocol, server=state)
    udp_transport, quic_server = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: QuicServer(configuration=configuration, create_protocol=create_protocol),
        local_addr=(host, port),
    )
    return RunningH3Server(udp_transport, quic_server, state)
