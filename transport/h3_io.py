"""The box's HTTP/3 transport (aioquic), the I/O shell: one pinned, mutually authenticated QUIC
connection.

The decisions it needs (the stream guard, header blocks, what a connection's end means) are pure,
in transport/h3.py, shared with the back office's listener; this module holds the socket, the
TLS files, aioquic's connection and the waits.

Invariants:
- No HTTP/3 byte (not even the control stream's SETTINGS) is sent before the back office's leaf
  certificate passed aioquic's chain and host name check (`tls.ca_file`, `tls.server_name`) and
  then the SPKI pin check. The pin is checked inside the handshake, before the box's own
  certificate (it names the box) is sent (`check_server_before_client_certificate`): a server
  that is not pinned never learns which box called. When the box judges certificate dates by
  trusted time (`tls.validity_time`), aioquic's own check (wall clock) is off and the chain, host
  name and dates are verified by transport/cert_validity.py in the same place, before the pin;
  a handshake that completed without that check passing is refused. A pin failure closes the
  connection and is PinMismatch; so is a certificate the chain check refused ("a connection
  presenting an unknown certificate is dropped"), and so is the back office refusing the box's
  own client certificate.
- `connect()` returns only once the server acknowledged a PING sent after the handshake: the
  back office checks the box's certificate after the handshake (see backoffice/h3_server.py), so
  a refusal is seen at connect time, not as a mysterious failure of the first request.
- Everything is bounded: request body bytes queued in aioquic but not yet acknowledged, per stream
  (`SEND_BACKLOG_LIMIT_BYTES`); the response body (`MAX_RESPONSE_BODY_BYTES`, else HostileServer);
  every header block aioquic would buffer (`H3StreamGuard`); every wait: the connection by
  `connect_timeout_s` and QUIC's `idle_timeout_s`, each request by progress
  (transport/progress.py): alive while its body bytes are handed to QUIC or acknowledged by the
  peer (`stall_timeout_s` without either cuts it), its answer awaited from the moment every body
  byte was acknowledged (`read_timeout_s` of silence at most, `request_timeout_s` in all).
- When the outcome of a request is unknown (connection ended, idle timeout, stream reset, no
  progress) the error is TransientNetworkError, so the session asks the server for its offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameUnexpected, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
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
from aioquic.tls import AlertDescription

from transport.binding import LinkBinding, bound_socket
from transport.cert_validity import verify_chain_by_trusted_time
from transport.errors import HostileServer, PinMismatch, TransientNetworkError
from transport.h3 import (
    H3LimitExceeded,
    H3StreamGuard,
    certificate_error_code,
    parse_response_head,
    request_header_fields,
    termination_error,
)
from transport.http import MAX_RESPONSE_BODY_BYTES, HttpRequest, HttpResponse
from transport.pinning import PinSet
from transport.progress import DEFAULT_STALL_TIMEOUT_S, Progress, RequestTimeouts, RequestWatch
from transport.progress_io import NoProgress, run_watched
from transport.quic_peer import (
    check_server_before_client_certificate,
    peer_certificate_der,
    peer_intermediates_der,
    stream_send_backlog_bytes,
)
from transport.tls import ClientTlsSettings

CONGESTION_CONTROL = "cubic"
"""The box is the sender. On the emulated 20 Mbit/s, 60 ms, 0.1 % loss link aioquic's CUBIC
reached 0.57-0.66 of the link rate against 0.32-0.44 with its default Reno (bench/uplink.py)."""

SEND_PIECE_BYTES = 64 * 1024
"""A request body is handed to aioquic in DATA frames of this size."""

SEND_BACKLOG_LIMIT_BYTES = 256 * 1024
"""The next piece waits until at most this many body bytes of the stream are unacknowledged:
aioquic copies everything it is given into its own buffer, so this bounds that copy."""


def client_configuration(tls: ClientTlsSettings, idle_timeout_s: float) -> QuicConfiguration:
    """QUIC settings for the box: verify chain and host name, present the box's certificate.

    With `tls.validity_time` aioquic verifies nothing (it would judge dates by the wall clock,
    which may be days wrong): `ChainCheck` does it inside the handshake instead."""
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        idle_timeout=idle_timeout_s,
        server_name=tls.server_name,
        verify_mode=ssl.CERT_REQUIRED if tls.validity_time is None else ssl.CERT_NONE,
        cafile=str(tls.ca_file),
        congestion_control_algorithm=CONGESTION_CONTROL,
    )
    configuration.load_cert_chain(tls.client_cert_file, tls.client_key_file)
    return configuration


ChainCheck = Callable[[bytes, list[bytes]], None]
"""Verifies the server's leaf and intermediates (DER); PinMismatch when refused."""


def chain_check(tls: ClientTlsSettings) -> ChainCheck | None:
    """The box's own chain check when dates are judged by trusted time; None: aioquic's."""
    clock = tls.validity_time
    if clock is None:
        return None
    ca_pem = tls.ca_file.read_bytes()  # once per connection, as aioquic reads its cafile

    def check(leaf_der: bytes, intermediates_der: list[bytes]) -> None:
        verify_chain_by_trusted_time(leaf_der, intermediates_der, ca_pem, tls.server_name, clock())

    return check


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
    received_bytes: int = 0  # response stream bytes admitted so far (the request's watch)
    sent_bytes: int = 0  # request body bytes handed to QUIC

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
    passed the checks inside the handshake (`verified_in_handshake`) and the pin check after
    it; `failure` is the first reason the connection became unusable and every waiting request
    is failed with (a copy of) it.
    """

    def __init__(
        self, quic: QuicConnection, pins: PinSet, check_chain: ChainCheck | None = None
    ) -> None:
        super().__init__(quic)
        self.h3: H3Connection | None = None
        self.failure: Exception | None = None
        self.progress = asyncio.Event()
        self.verified_in_handshake = False
        self._pins = pins
        self._check_chain = check_chain
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

    def check_pin_in_handshake(self, certificate: bytes) -> None:
        """The checks inside the handshake (transport/quic_peer.py): the chain by trusted time
        when the box judges dates itself, then the pin. A failure is recorded as this
        connection's failure, then aborts the handshake before the box's certificate is sent."""
        try:
            if self._check_chain is not None:
                self._check_chain(certificate, peer_intermediates_der(self._quic))
            self._pins.check(certificate)
        except (PinMismatch, RuntimeError) as exc:
            self._fail(exc)
            raise
        self.verified_in_handshake = True

    def _on_handshake_completed(self) -> None:
        try:
            if not self.verified_in_handshake:  # aioquic changed and skipped the hook
                raise PinMismatch("the back office certificate was not verified in the handshake")
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
            if not stream_is_unidirectional(stream_id):
                self._collectors[stream_id].received_bytes += len(event.data)
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
        timeouts: RequestTimeouts,
    ) -> None:
        self.body_bytes_sent = 0
        self._quic = quic
        self._protocol = protocol
        self._udp_transport = udp_transport
        self._authority = authority
        self._timeouts = timeouts
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
        read_timeout_s: float = 15.0,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    ) -> H3Transport:
        """Open, verify, pin and confirm a connection to `host`:`port` over `binding`'s link.
        ValueError for a bound that is not positive."""
        timeouts = RequestTimeouts(
            connect_timeout_s=connect_timeout_s,
            stall_timeout_s=stall_timeout_s,
            read_timeout_s=read_timeout_s,
            request_timeout_s=request_timeout_s,
        )
        try:
            async with asyncio.timeout(connect_timeout_s):
                return await cls._open(
                    host, port, tls, binding or LinkBinding(), timeouts, idle_timeout_s
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
        timeouts: RequestTimeouts,
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
                lambda: _ClientProtocol(quic, tls.pins, chain_check(tls)), sock=sock
            )
            # The pin is checked inside the handshake, before the box's certificate (its serial)
            # is sent; the check after the handshake below stays as a second line.
            check_server_before_client_certificate(quic, protocol.check_pin_in_handshake)
        except BaseException:
            sock.close()
            raise
        transport = cls(
            quic=quic,
            protocol=protocol,
            udp_transport=udp_transport,
            authority=tls.server_name,
            timeouts=timeouts,
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

    async def request(self, request: HttpRequest, body: bytes | bytearray | None) -> HttpResponse:
        """Send `request` on a new stream and return the (bounded) response."""
        if self._closed:
            raise TransientNetworkError("the HTTP/3 transport is closed")
        protocol = self._protocol
        protocol.raise_if_failed()
        assert protocol.h3 is not None, "connect() returns only once the server is pinned"
        stream_id = self._quic.get_next_available_stream_id()
        collector = protocol.open_response(stream_id)
        loop = asyncio.get_running_loop()
        watch = RequestWatch(self._timeouts, len(body or b""), loop.time())

        def sample() -> Progress:
            unacked = stream_send_backlog_bytes(self._quic, stream_id) if body else None
            return Progress(collector.sent_bytes, unacked, collector.received_bytes)

        try:
            return await run_watched(
                self._exchange(protocol.h3, stream_id, request, body, collector),
                watch,
                sample,
                f"h3 {request.method}",
            )
        except NoProgress as exc:
            protocol.abandon(stream_id, TransientNetworkError(str(exc)))
            raise
        finally:
            protocol.forget(stream_id)

    async def _exchange(
        self,
        h3: H3Connection,
        stream_id: int,
        request: HttpRequest,
        body: bytes | bytearray | None,
        collector: _ResponseCollector,
    ) -> HttpResponse:
        await self._send(h3, stream_id, request, body, collector)
        return await collector.done

    async def _send(
        self,
        h3: H3Connection,
        stream_id: int,
        request: HttpRequest,
        body: bytes | bytearray | None,
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
            collector.sent_bytes += len(piece)
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
