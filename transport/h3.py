"""The box's HTTP/3 transport (aioquic): one pinned, mutually authenticated QUIC connection.

Invariants:
- No HTTP/3 byte (not even the control stream's SETTINGS) is sent before the back office's leaf
  certificate passed aioquic's chain and host name check (`tls.ca_file`, `tls.server_name`) and
  then the SPKI pin check. A pin failure closes the connection and is PinMismatch; so is a
  certificate the chain check refused ("a connection presenting an unknown certificate is
  dropped"), and so is the back office refusing the box's own client certificate.
- `connect()` returns only once the server acknowledged a PING sent after the handshake: the
  back office checks the box's certificate after the handshake (see backoffice/h3_server.py), so
  a refusal is seen at connect time, not as a mysterious failure of the first request.
- Everything is bounded: request body bytes queued in aioquic but not yet acknowledged, per stream
  (`SEND_BACKLOG_LIMIT_BYTES`); the response body (`MAX_RESPONSE_BODY_BYTES`, else HostileServer);
  every header block aioquic would buffer (`H3StreamGuard`); every wait (`connect_timeout_s`,
  `request_timeout_s`, and QUIC's `idle_timeout_s`).
- When the outcome of a request is unknown (connection ended, idle timeout, stream reset, request
  timeout) the error is TransientNetworkError, so the session asks the server for its offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import (
    H3_ALPN,
    ErrorCode,
    FrameType,
    FrameUnexpected,
    H3Connection,
    StreamType,
)
from aioquic.h3.events import DataReceived, H3Event, Headers, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet import QuicErrorCode
from aioquic.tls import AlertDescription

from transport.binding import LinkBinding, bound_socket
from transport.checksum import checksum_header
from transport.errors import HostileServer, PinMismatch, TransientNetworkError, TransportError
from transport.http import MAX_RESPONSE_BODY_BYTES, HttpRequest, HttpResponse
from transport.pinning import PinSet
from transport.quic_peer import peer_certificate_der, stream_send_backlog_bytes
from transport.tls import ClientTlsSettings

CONGESTION_CONTROL = "cubic"
"""The box is the sender. On the emulated 20 Mbit/s, 60 ms, 0.1 % loss link aioquic's CUBIC
reached 0.57-0.66 of the link rate against 0.32-0.44 with its default Reno (bench/uplink.py)."""

SEND_PIECE_BYTES = 64 * 1024
"""A request body is handed to aioquic in DATA frames of this size."""

SEND_BACKLOG_LIMIT_BYTES = 256 * 1024
"""The next piece waits until at most this many body bytes of the stream are unacknowledged:
aioquic copies everything it is given into its own buffer, so this bounds that copy."""

MAX_FIELD_SECTION_BYTES = 16 * 1024
"""Largest header block (either direction) aioquic may buffer for us; tus headers are tiny."""

FIELD_OVERHEAD_BYTES = 32
"""Per-field overhead in the field section size (RFC 9114 section 4.2.2)."""

PRELUDE_SLACK_BYTES = 1024
"""Room for frame headers and reserved ("grease") frames before a stream's header block."""

REASON_PHRASE_MAX_CHARS = 200
"""A peer's close reason is quoted in error messages, cut to this length."""

CONNECTION_SPECIFIC_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
"""HTTP/1.1 hop-by-hop fields that HTTP/3 forbids (RFC 9114 section 4.2); aioquic would close
the whole connection on receiving one, so senders drop them."""

_SET_BY_TRANSPORT = frozenset({"host", "content-length"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

CERTIFICATE_ALERTS = frozenset(
    {
        AlertDescription.bad_certificate,
        AlertDescription.unsupported_certificate,
        AlertDescription.certificate_revoked,
        AlertDescription.certificate_expired,
        AlertDescription.certificate_unknown,
        AlertDescription.unknown_ca,
        AlertDescription.certificate_required,
    }
)
"""TLS alerts that mean "this certificate is not accepted" (QUIC sends them as CRYPTO_ERROR)."""


def certificate_error_code(alert: AlertDescription) -> int:
    """The QUIC error code carrying TLS `alert` (RFC 9001 section 4.8)."""
    return int(QuicErrorCode.CRYPTO_ERROR) + int(alert)


# --- pure helpers -------------------------------------------------------------------------


class H3LimitExceeded(Exception):
    """A peer sent something on a stream that would make aioquic buffer beyond our bounds."""


class _Expect(enum.Enum):
    """What the next varint on a guarded stream is (or that the rest needs no parsing)."""

    STREAM_TYPE = enum.auto()
    FRAME_TYPE = enum.auto()
    FRAME_LENGTH = enum.auto()
    NOTHING = enum.auto()


class _Kind(enum.Enum):
    REQUEST = enum.auto()
    CONTROL = enum.auto()


def _complete_varint(encoded: bytearray) -> int | None:
    """The QUIC variable-length integer in `encoded`, or None while bytes are missing."""
    length_bytes = 1 << (encoded[0] >> 6)
    if len(encoded) < length_bytes:
        return None
    value = encoded[0] & 0x3F
    for byte in encoded[1:length_bytes]:
        value = (value << 8) | byte
    return value


class H3StreamGuard:
    """Follows the HTTP/3 frame headers of one stream, ahead of aioquic, to keep it bounded.

    aioquic buffers a HEADERS frame (and a SETTINGS frame) whole before decoding it, and while a
    header block waits for QPACK encoder data ("blocked") it buffers everything after it on that
    stream. So before bytes reach aioquic:
    - request streams: everything up to the end of the first HEADERS frame fits
      `limit_bytes` + PRELUDE_SLACK_BYTES; a second HEADERS frame (trailers, or a final response
      after an interim one) and PUSH_PROMISE are refused, so only the first block can block;
      after that block, until its event was delivered (`headers_delivered()`), at most
      `limit_bytes` more may arrive (`check_undelivered()`, called after aioquic's turn);
    - unidirectional streams: a control stream's SETTINGS and MAX_PUSH_ID frames fit
      `limit_bytes`; push streams are refused (neither end uses server push); QPACK streams and
      unknown ones pass (aioquic bounds the former by its table capacity, discards the latter).
    Only frame headers (at most 16 bytes each) are parsed; payloads are skipped in bulk.
    Violations raise H3LimitExceeded.
    """

    def __init__(self, stream_id: int, limit_bytes: int = MAX_FIELD_SECTION_BYTES) -> None:
        self._limit_bytes = limit_bytes
        if stream_is_unidirectional(stream_id):
            self._kind: _Kind | None = None
            self._expect = _Expect.STREAM_TYPE
        else:
            self._kind = _Kind.REQUEST
            self._expect = _Expect.FRAME_TYPE
        self._varint = bytearray()
        self._frame_type = 0
        self._payload_left_bytes = 0
        self._offset_bytes = 0
        self._headers_frames = 0
        self._headers_end_bytes: int | None = None
        self._headers_delivered = False

    def feed(self, data: bytes) -> None:
        """Account for the next `data` of the stream; H3LimitExceeded if it must not pass."""
        position = 0
        while position < len(data) and self._expect != _Expect.NOTHING:
            if self._payload_left_bytes:
                step = min(self._payload_left_bytes, len(data) - position)
                self._payload_left_bytes -= step
                position += step
                continue
            self._varint.append(data[position])
            position += 1
            value = _complete_varint(self._varint)
            if value is not None:
                self._varint.clear()
                self._on_varint(value, self._offset_bytes + position)
        self._offset_bytes += len(data)
        if (
            self._kind == _Kind.REQUEST
            and self._headers_frames == 0
            and self._offset_bytes > self._limit_bytes + PRELUDE_SLACK_BYTES
        ):
            raise H3LimitExceeded(f"no header block within the first {self._offset_bytes} bytes")

    def headers_delivered(self) -> None:
        """aioquic decoded the header block: it no longer holds the stream's bytes back."""
        self._headers_delivered = True

    def check_undelivered(self) -> None:
        """H3LimitExceeded if aioquic holds too much behind a header block it cannot decode."""
        if self._headers_end_bytes is None or self._headers_delivered:
            return
        if self._offset_bytes - self._headers_end_bytes > self._limit_bytes:
            raise H3LimitExceeded("a header block stays undecodable while data piles up behind it")

    def _on_varint(self, value: int, offset_bytes: int) -> None:
        if self._expect == _Expect.STREAM_TYPE:
            self._on_stream_type(value)
        elif self._expect == _Expect.FRAME_TYPE:
            self._frame_type = value
            self._expect = _Expect.FRAME_LENGTH
        else:
            self._check_frame(self._frame_type, value, offset_bytes + value)
            self._payload_left_bytes = value
            self._expect = _Expect.FRAME_TYPE

    def _on_stream_type(self, stream_type: int) -> None:
        if stream_type == StreamType.CONTROL:
            self._kind = _Kind.CONTROL
            self._expect = _Expect.FRAME_TYPE
        elif stream_type == StreamType.PUSH:
            raise H3LimitExceeded("server push is not accepted")
        else:
            self._expect = _Expect.NOTHING

    def _check_frame(self, frame_type: int, length_bytes: int, end_offset_bytes: int) -> None:
        if self._kind == _Kind.CONTROL:
            buffered_whole = frame_type in (FrameType.SETTINGS, FrameType.MAX_PUSH_ID)
            if buffered_whole and length_bytes > self._limit_bytes:
                raise H3LimitExceeded(f"control frame of {length_bytes} bytes")
            return
        if frame_type == FrameType.PUSH_PROMISE:
            raise H3LimitExceeded("server push is not accepted")
        if frame_type != FrameType.HEADERS:
            return
        self._headers_frames += 1
        if self._headers_frames > 1:
            raise H3LimitExceeded("a second header block (trailers, interim response) is refused")
        if end_offset_bytes > self._limit_bytes + PRELUDE_SLACK_BYTES:
            raise H3LimitExceeded(f"header block of {length_bytes} bytes")
        self._headers_end_bytes = end_offset_bytes


def field_section_bytes(headers: Headers) -> int:
    """The decoded size of a header block as RFC 9114 section 4.2.2 counts it."""
    return sum(len(name) + len(value) + FIELD_OVERHEAD_BYTES for name, value in headers)


def split_header_fields(headers: Headers) -> tuple[dict[str, str], dict[str, str]]:
    """(pseudo-header fields, regular fields) with text keys; repeated fields joined by ", "."""
    pseudo: dict[str, str] = {}
    regular: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        target = pseudo if name.startswith(":") else regular
        target[name] = f"{target[name]}, {value}" if name in target else value
    return pseudo, regular


def request_header_fields(
    request: HttpRequest, body: bytes | None, authority: str
) -> list[tuple[bytes, bytes]]:
    """The header block of `request`: pseudo-headers first, names lower-case, the transport's
    own content-length (and Upload-Checksum when the slice asks for one)."""
    fields = [
        (":method", request.method),
        (":scheme", "https"),
        (":authority", authority),
        (":path", request.target),
    ]
    for name, value in request.headers:
        lowered = name.lower()
        if lowered not in CONNECTION_SPECIFIC_HEADERS and lowered not in _SET_BY_TRANSPORT:
            fields.append((lowered, value))
    if request.body is not None and request.body.checksum_algorithm is not None:
        name, value = checksum_header(request.body.checksum_algorithm, body or b"")
        fields.append((name.lower(), value))
    if body is not None or request.method in _METHODS_WITH_BODY:
        fields.append(("content-length", str(len(body or b""))))
    return [(name.encode("ascii"), value.encode("latin-1")) for name, value in fields]


def parse_response_head(headers: Headers) -> tuple[int, dict[str, str]]:
    """(status, lower-case headers) of a final response; HostileServer if there is none."""
    if field_section_bytes(headers) > MAX_FIELD_SECTION_BYTES:
        raise HostileServer(f"response header block exceeds {MAX_FIELD_SECTION_BYTES} bytes")
    pseudo, regular = split_header_fields(headers)
    status_text = pseudo.get(":status", "")
    if len(status_text) != 3 or not status_text.isdigit():
        raise HostileServer(f"response without a valid :status ({status_text[:8]!r})")
    status = int(status_text)
    if status < 200:
        raise HostileServer(f"interim response {status} is not accepted")
    return status, regular


def termination_error(
    event: ConnectionTerminated, *, server_certificate_accepted: bool
) -> TransportError:
    """What the end of the connection means for the box (errors by fault).

    A certificate alert before we accepted the server's certificate is our own chain / host name
    check failing; after it, it is the back office refusing the box's certificate. Both need a
    person, never a retry, hence PinMismatch. Anything else leaves requests' outcome unknown.
    """
    reason = event.reason_phrase[:REASON_PHRASE_MAX_CHARS] or "no reason given"
    alert_code = event.error_code - QuicErrorCode.CRYPTO_ERROR
    if alert_code in {int(alert) for alert in CERTIFICATE_ALERTS}:
        alert_name = AlertDescription(alert_code).name
        if server_certificate_accepted:
            return PinMismatch(
                f"the back office refused this box's client certificate "
                f"(TLS alert {alert_name}: {reason}); connection dropped"
            )
        return PinMismatch(
            f"the back office certificate chain or host name did not verify "
            f"(TLS alert {alert_name}: {reason}); connection dropped"
        )
    return TransientNetworkError(f"QUIC connection ended (code {event.error_code:#x}: {reason})")


def client_configuration(tls: ClientTlsSettings, idle_timeout_s: float) -> QuicConfiguration:
    """QUIC settings for the box: verify chain and host name, present the box's certificate."""
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        idle_timeout=idle_timeout_s,
        server_name=tls.server_name,
        verify_mode=ssl.CERT_REQUIRED,
        cafile=str(tls.ca_file),
        congestion_control_algorithm=CONGESTION_CONTROL,
    )
    configuration.load_cert_chain(tls.client_cert_file, tls.client_key_file)
    return configuration


# --- I/O shell ----------------------------------------------------------------------------


@dataclass
class _ResponseCollector:
    """One request stream: its guard and the response as it arrives (body bounded)."""

    guard: H3StreamGuard
    done: asyncio.Future[HttpResponse]
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    peer_stopped_reading: bool = False

    @property
    def finished(self) -> bool:
        return self.done.done()

    def fail(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def complete(self) -> None:
        if self.status is None:
            self.fail(HostileServer("the response stream ended without headers"))
        elif not self.done.done():
            self.done.set_result(HttpResponse(self.status, self.headers, bytes(self.body)))


class _ClientProtocol(QuicConnectionProtocol):
    """aioquic's asyncio glue for one box-to-back-office connection.

    Invariants: `h3` stays None, so no HTTP/3 byte is sent or parsed, until the server's leaf
    passed the pin check; `failure` is the first reason the connection became unusable and every
    waiting request is failed with (a copy of) it.
    """

    def __init__(self, quic: QuicConnection, pins: PinSet) -> None:
        super().__init__(quic)
        self.h3: H3Connection | None = None
        self.failure: Exception | None = None
        self.progress = asyncio.Event()
        self._pins = pins
        self._collectors: dict[int, _ResponseCollector] = {}
        self._unidirectional_guards: dict[int, H3StreamGuard] = {}

    # called by the transport

    def open_response(self, stream_id: int) -> _ResponseCollector:
        collector = _ResponseCollector(H3StreamGuard(stream_id), self._loop.create_future())
        self._collectors[stream_id] = collector
        return collector

    def forget(self, stream_id: int) -> None:
        collector = self._collectors.pop(stream_id, None)
        if collector is None:
            return
        if not collector.done.done():
            collector.done.cancel()
        elif not collector.done.cancelled():
            collector.done.exception()  # retrieved: asyncio must not warn about it

    def abandon(self, stream_id: int, error: Exception) -> None:
        """Give up on a request stream in both directions and fail its response."""
        with contextlib.suppress(ValueError):  # aioquic already discarded the stream
            self._quic.stop_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
        self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
        collector = self._collectors.get(stream_id)
        if collector is not None:
            collector.fail(error)
        self.transmit()

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise copy.copy(self.failure)

    def shut_down(self) -> None:
        self._fail(TransientNetworkError("the connection was closed by the box"))
        self.close()

    async def wait_send_backlog(self, stream_id: int, limit_bytes: int) -> None:
        """Return once at most `limit_bytes` of the stream are unacknowledged, or the stream no
        longer needs its body (answered, stopped, failed)."""
        while True:
            self.progress.clear()
            self.raise_if_failed()
            collector = self._collectors.get(stream_id)
            if collector is None or collector.finished or collector.peer_stopped_reading:
                return
            if stream_send_backlog_bytes(self._quic, stream_id) <= limit_bytes:
                return
            await self.progress.wait()

    # called by aioquic

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        self.progress.set()  # acknowledgements may have drained a send backlog

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self._on_handshake_completed()
        elif isinstance(event, ConnectionTerminated):
            self._fail(termination_error(event, server_certificate_accepted=self.h3 is not None))
        elif self.h3 is not None:
            self._on_stream_event(self.h3, event)

    def _on_handshake_completed(self) -> None:
        try:
            self._pins.check(peer_certificate_der(self._quic))
        except (PinMismatch, RuntimeError) as exc:
            self._fail(exc)
            self._quic.close(
                error_code=certificate_error_code(AlertDescription.bad_certificate),
                reason_phrase="certificate not pinned",
            )
            return
        self.h3 = H3Connection(self._quic)

    def _on_stream_event(self, h3: H3Connection, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and not self._guard_admits(event):
            return
        collector = self._collectors.get(getattr(event, "stream_id", -1))
        if isinstance(event, StreamReset) and collector is not None:
            collector.fail(TransientNetworkError("the back office reset the request stream"))
        elif isinstance(event, StopSendingReceived) and collector is not None:
            collector.peer_stopped_reading = True
        for h3_event in h3.handle_event(event):
            self._on_h3_event(h3_event)
        if isinstance(event, StreamDataReceived) and collector is not None:
            try:
                collector.guard.check_undelivered()
            except H3LimitExceeded as exc:
                self.abandon(event.stream_id, HostileServer(f"response stream: {exc}"))

    def _guard_admits(self, event: StreamDataReceived) -> bool:
        """Feed the stream's guard; False drops the data (unknown stream or limit exceeded)."""
        stream_id = event.stream_id
        if stream_is_unidirectional(stream_id):
            guard = self._unidirectional_guards.setdefault(stream_id, H3StreamGuard(stream_id))
            if event.end_stream:
                del self._unidirectional_guards[stream_id]
        else:
            collector = self._collectors.get(stream_id)
            if collector is None or collector.finished:
                return False  # a request we gave up on: its late bytes are dropped
            guard = collector.guard
        try:
            guard.feed(event.data)
        except H3LimitExceeded as exc:
            if stream_is_unidirectional(stream_id):
                self._fail(HostileServer(f"HTTP/3 stream {stream_id}: {exc}"))
                self._quic.close(error_code=ErrorCode.H3_EXCESSIVE_LOAD, reason_phrase=str(exc))
            else:
                self.abandon(stream_id, HostileServer(f"response stream: {exc}"))
            return False
        return True

    def _on_h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        collector = self._collectors.get(event.stream_id)
        if collector is None or collector.finished:
            return
        if isinstance(event, HeadersReceived):
            collector.guard.headers_delivered()
            try:
                collector.status, collector.headers = parse_response_head(event.headers)
            except HostileServer as exc:
                self.abandon(event.stream_id, exc)
                return
        else:
            collector.body += event.data
            if len(collector.body) > MAX_RESPONSE_BODY_BYTES:
                self.abandon(
                    event.stream_id,
                    HostileServer(f"response body exceeds {MAX_RESPONSE_BODY_BYTES} bytes"),
                )
                return
        if event.stream_ended:
            collector.complete()

    def _fail(self, error: Exception) -> None:
        if self.failure is None:
            self.failure = error
        for collector in self._collectors.values():
            collector.fail(copy.copy(self.failure))
        self.progress.set()


async def _resolve(host: str, port: int, binding: LinkBinding) -> tuple[Any, int]:
    """(socket address, address family) of `host`, in the family of the link's source address."""
    family = socket.AF_UNSPEC
    if binding.source_address is not None:
        version = ipaddress.ip_address(binding.source_address).version
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=family, type=socket.SOCK_DGRAM
        )
    except OSError as exc:
        raise TransientNetworkError(f"cannot resolve {host!r}: {exc}") from exc
    if not infos:
        raise TransientNetworkError(f"{host!r} has no address")
    address_family, _, _, _, address = infos[0]
    return address, int(address_family)


class H3Transport:
    """The box's HTTP/3 transport to one back office over one link (the `Transport` protocol).

    Build it with `connect()`. Requests may run concurrently, one QUIC stream each.
    `body_bytes_sent` counts request body bytes handed to QUIC (for stats).
    """

    def __init__(
        self,
        *,
        quic: QuicConnection,
        protocol: _ClientProtocol,
        udp_transport: asyncio.DatagramTransport,
        authority: str,
        request_timeout_s: float,
    ) -> None:
        self.body_bytes_sent = 0
        self._quic = quic
        self._protocol = protocol
        self._udp_transport = udp_transport
        self._authority = authority
        self._request_timeout_s = request_timeout_s
        self._closed = False

    @property
    def name(self) -> str:
        return "h3"

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        tls: ClientTlsSettings,
        *,
        binding: LinkBinding | None = None,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 60.0,
        idle_timeout_s: float = 30.0,
    ) -> H3Transport:
        """Open, verify, pin and confirm a connection to `host`:`port` over `binding`'s link."""
        try:
            async with asyncio.timeout(connect_timeout_s):
                return await cls._open(
                    host, port, tls, binding or LinkBinding(), request_timeout_s, idle_timeout_s
                )
        except TimeoutError as exc:
            raise TransientNetworkError(
                f"HTTP/3 connection to {host}:{port} not established within {connect_timeout_s} s"
            ) from exc

    @classmethod
    async def _open(
        cls,
        host: str,
        port: int,
        tls: ClientTlsSettings,
        binding: LinkBinding,
        request_timeout_s: float,
        idle_timeout_s: float,
    ) -> H3Transport:
        configuration = client_configuration(tls, idle_timeout_s)
        address, family = await _resolve(host, port, binding)
        try:
            sock = bound_socket(binding, family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise TransientNetworkError(f"cannot bind a UDP socket to the link: {exc}") from exc
        quic = QuicConnection(configuration=configuration)
        try:
            udp_transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _ClientProtocol(quic, tls.pins), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        transport = cls(
            quic=quic,
            protocol=protocol,
            udp_transport=udp_transport,
            authority=tls.server_name,
            request_timeout_s=request_timeout_s,
        )
        try:
            await transport._establish(address)
        except BaseException:
            await transport.aclose()
            raise
        return transport

    async def _establish(self, address: Any) -> None:
        self._protocol.connect(address)
        # ConnectionError only says "terminated"; the protocol recorded why.
        with contextlib.suppress(ConnectionError):
            await self._protocol.wait_connected()
            self._protocol.raise_if_failed()
            await self._protocol.ping()
        self._protocol.raise_if_failed()

    async def request(self, request: HttpRequest, body: bytes | None) -> HttpResponse:
        """Send `request` on a new stream and return the (bounded) response."""
        if self._closed:
            raise TransientNetworkError("the HTTP/3 transport is closed")
        protocol = self._protocol
        protocol.raise_if_failed()
        assert protocol.h3 is not None, "connect() returns only once the server is pinned"
        stream_id = self._quic.get_next_available_stream_id()
        collector = protocol.open_response(stream_id)
        try:
            async with asyncio.timeout(self._request_timeout_s):
                await self._send(protocol.h3, stream_id, request, body, collector)
                return await collector.done
        except TimeoutError as exc:
            protocol.abandon(stream_id, TransientNetworkError("request timed out"))
            raise TransientNetworkError(
                f"HTTP/3 {request.method} got no complete answer within {self._request_timeout_s} s"
            ) from exc
        finally:
            protocol.forget(stream_id)

    async def _send(
        self,
        h3: H3Connection,
        stream_id: int,
        request: HttpRequest,
        body: bytes | None,
        collector: _ResponseCollector,
    ) -> None:
        protocol = self._protocol
        fields = request_header_fields(request, body, self._authority)
        h3.send_headers(stream_id, fields, end_stream=not body)
        protocol.transmit()
        if not body:
            return
        view = memoryview(body)
        for offset in range(0, len(body), SEND_PIECE_BYTES):
            if collector.finished or collector.peer_stopped_reading:
                self._stop_request_body(stream_id)
                return
            piece = bytes(view[offset : offset + SEND_PIECE_BYTES])
            h3.send_data(stream_id, piece, end_stream=offset + len(piece) >= len(body))
            self.body_bytes_sent += len(piece)
            protocol.transmit()
            await protocol.wait_send_backlog(stream_id, SEND_BACKLOG_LIMIT_BYTES)

    def _stop_request_body(self, stream_id: int) -> None:
        """The server answered (or asked us to stop) before the body was sent: end our half."""
        with contextlib.suppress(RuntimeError, FrameUnexpected):
            self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
        self._protocol.transmit()

    async def aclose(self) -> None:
        """Close the connection (CONNECTION_CLOSE is sent) and the socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._protocol.shut_down()
        self._udp_transport.close()
