"""The HTTP/3 transport against real QUIC servers on 127.0.0.1 with the test PKI.

Servers: the back office's own HTTP/3 shell (backoffice/h3_server.py) in front of a recording
handler; a hostile aioquic server whose response body never ends; and a UDP relay in front of a
server that can be cut (a dead link: no close, no ICMP). The helpers here are shared with
tests/backoffice/test_h3_server.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, StreamType
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
)
from aioquic.quic.packet import QuicErrorCode
from aioquic.tls import AlertDescription
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from backoffice.h3_server import RunningH3Server, start_h3_server
from backoffice.tus_app import IncomingRequest, OutgoingResponse
from tests.tls_helpers import SERVER_NAME
from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from transport.binding import LinkBinding
from transport.errors import HostileServer, PinMismatch, TransientNetworkError
from transport.h3 import (
    MAX_FIELD_SECTION_BYTES,
    H3LimitExceeded,
    H3StreamGuard,
    parse_response_head,
    request_header_fields,
    termination_error,
)
from transport.h3_io import H3Transport
from transport.http import MAX_RESPONSE_BODY_BYTES, BodySlice, HttpRequest, Transport
from transport.progress_io import NoProgress
from transport.quic_peer import check_private_api, peer_certificate_der, stream_send_backlog_bytes

GUARD_S = 10.0
"""Bound on a test step that must end by the code's own (much shorter) timeout or event: if that
did not work, the guard's TimeoutError fails the test instead of the expected outcome."""

TUS = (("Tus-Resumable", "1.0.0"),)


def patch_request(body: bytes, checksum: str | None = None) -> HttpRequest:
    return HttpRequest(
        "PATCH",
        "/files/abc",
        headers=(*TUS, ("Upload-Offset", "0"), ("Content-Type", "application/offset+octet-stream")),
        body=BodySlice(offset_bytes=0, length_bytes=len(body), checksum_algorithm=checksum),
    )


HEAD_FILE = HttpRequest("HEAD", "/files/abc", headers=TUS)


# --- shared helpers ---------------------------------------------------------------------------


class RecordingHandler:
    """A stand-in for TusApp: records every request and its whole body, answers 204 with
    Upload-Offset. With `hold`, it stops after the first body piece until `release` is set."""

    def __init__(self, *, hold: bool = False) -> None:
        self.requests: list[IncomingRequest] = []
        self.bodies: list[bytes] = []
        self.first_piece = asyncio.Event()
        self.release = asyncio.Event()
        self._arrivals = asyncio.Condition()
        if not hold:
            self.release.set()

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        async with self._arrivals:
            self.requests.append(request)
            self._arrivals.notify_all()
        data = bytearray()
        async for piece in request.body:
            data += piece
            self.first_piece.set()
            await self.release.wait()
        self.bodies.append(bytes(data))
        return OutgoingResponse(204, {"Upload-Offset": str(len(data)), "Tus-Resumable": "1.0.0"})

    async def wait_for_requests(self, count: int) -> None:
        async with self._arrivals:
            await self._arrivals.wait_for(lambda: len(self.requests) >= count)


@contextlib.asynccontextmanager
async def serving(
    handler: Any, pki: Pki, *, cert: Path | None = None, key: Path | None = None
) -> AsyncIterator[RunningH3Server]:
    """The back office's HTTP/3 shell on 127.0.0.1 (a free port), closed afterwards."""
    server = await start_h3_server(
        handler,
        host="127.0.0.1",
        port=0,
        cert_file=cert or pki.server_cert,
        key_file=key or pki.server_key,
        client_ca_file=pki.ca_cert,
    )
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def connected(port: int, pki: Pki, **options: Any) -> AsyncIterator[H3Transport]:
    transport = await H3Transport.connect("127.0.0.1", port, pki.client_settings(), **options)
    try:
        yield transport
    finally:
        await transport.aclose()


class RawClient(QuicConnectionProtocol):
    """A bare aioquic client connection that records how it ended."""

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.terminated: asyncio.Future[ConnectionTerminated] = self._loop.create_future()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)


def raw_client_configuration(
    pki: Pki, *, cert: Path | None = None, key: Path | None = None
) -> QuicConfiguration:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=SERVER_NAME, cafile=str(pki.ca_cert)
    )
    if cert is not None:
        configuration.load_cert_chain(cert, key)
    return configuration


@contextlib.asynccontextmanager
async def raw_client(
    port: int, configuration: QuicConfiguration
) -> AsyncIterator[tuple[QuicConnection, RawClient]]:
    """A bare aioquic client bound to 127.0.0.1 (aioquic's own `connect` binds to "::")."""
    quic = QuicConnection(configuration=configuration)
    udp, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: RawClient(quic), local_addr=("127.0.0.1", 0)
    )
    try:
        protocol.connect(("127.0.0.1", port))
        yield quic, protocol
    finally:
        protocol.close()
        udp.close()


class _Leg(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, addr)


class UdpRelay:
    """A UDP relay on 127.0.0.1 in front of a server (the link the client uses). After `cut()`
    every datagram is dropped in both directions: a dead link, with no close and no ICMP."""

    def __init__(self, server_port: int) -> None:
        self._server_address = ("127.0.0.1", server_port)
        self._client_address: Any = None
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None
        self.is_cut = False

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._front, _ = await loop.create_datagram_endpoint(
            lambda: _Leg(self._from_client), local_addr=("127.0.0.1", 0)
        )
        self._back, _ = await loop.create_datagram_endpoint(
            lambda: _Leg(self._from_server), local_addr=("127.0.0.1", 0)
        )
        port: int = self._front.get_extra_info("sockname")[1]
        return port

    def cut(self) -> None:
        self.is_cut = True

    def close(self) -> None:
        for leg in (self._front, self._back):
            if leg is not None:
                leg.close()

    def _from_client(self, data: bytes, addr: Any) -> None:
        if not self.is_cut and self._back is not None:
            self._client_address = addr
            self._back.sendto(data, self._server_address)

    def _from_server(self, data: bytes, _addr: Any) -> None:
        if not self.is_cut and self._front is not None and self._client_address is not None:
            self._front.sendto(data, self._client_address)


class EndlessBodyServer(QuicConnectionProtocol):
    """A hostile HTTP/3 server: answers 200 and streams body bytes until the client stops it
    (`stopped` is set when the client's STOP_SENDING arrives). It keeps its own send backlog
    bounded so the test itself stays small in memory."""

    PIECE = b"x" * 16384

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: QuicStreamHandler | None = None,
        *,
        stopped: asyncio.Event,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        super().__init__(quic, stream_handler)
        self._h3: H3Connection | None = None
        self._stopped = stopped
        self._ended = False
        self._progress = asyncio.Event()
        self._tasks = tasks

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        self._progress.set()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self._h3 = H3Connection(self._quic)
        elif isinstance(event, StopSendingReceived):
            self._stopped.set()
        elif isinstance(event, ConnectionTerminated):
            self._ended = True
        if self._h3 is None:
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self._tasks.add(asyncio.create_task(self._stream_forever(h3_event.stream_id)))

    async def _stream_forever(self, stream_id: int) -> None:
        assert self._h3 is not None
        self._h3.send_headers(stream_id, [(b":status", b"200")])
        while not (self._stopped.is_set() or self._ended):
            if stream_send_backlog_bytes(self._quic, stream_id) < 256 * 1024:
                try:
                    self._h3.send_data(stream_id, self.PIECE, end_stream=False)
                except RuntimeError:
                    return  # aioquic reset the stream on the client's STOP_SENDING
                self.transmit()
            else:
                self._progress.clear()
                await self._progress.wait()


# --- the canaries: aioquic's private attributes -----------------------------------------------


async def test_peer_certificate_der_is_the_servers_leaf_after_a_real_handshake(pki: Pki) -> None:
    check_private_api()  # raises RuntimeError("aioquic changed: ...") when a path is gone
    expected_der = x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).public_bytes(
        Encoding.DER
    )
    async with serving(RecordingHandler(), pki) as server:
        configuration = raw_client_configuration(pki, cert=pki.client_cert, key=pki.client_key)
        async with raw_client(server.port, configuration) as (quic, protocol):
            await asyncio.wait_for(protocol.wait_connected(), GUARD_S)
            # The private path transport/quic_peer.py relies on, spelled out:
            assert isinstance(quic.tls._peer_certificate, x509.Certificate)
            assert peer_certificate_der(quic) == expected_der


async def test_send_backlog_counts_unacknowledged_stream_bytes(pki: Pki) -> None:
    async with serving(RecordingHandler(), pki) as server:
        configuration = raw_client_configuration(pki, cert=pki.client_cert, key=pki.client_key)
        async with raw_client(server.port, configuration) as (quic, protocol):
            await asyncio.wait_for(protocol.wait_connected(), GUARD_S)
            stream_id = quic.get_next_available_stream_id(is_unidirectional=True)
            quic.send_stream_data(stream_id, b"\x21" + b"x" * 999)  # a reserved stream type
            assert stream_send_backlog_bytes(quic, stream_id) == 1000
            assert stream_send_backlog_bytes(quic, stream_id + 4) == 0


# --- a well-behaved back office ---------------------------------------------------------------


async def test_multi_megabyte_body_round_trips_with_checksum_and_identity(pki: Pki) -> None:
    body = hashlib.shake_256(b"evidence").digest(3 * 1024 * 1024 + 12345)
    handler = RecordingHandler()
    async with serving(handler, pki) as server, connected(server.port, pki) as transport:
        uplink: Transport = transport  # mypy checks H3Transport against the shared protocol
        response = await asyncio.wait_for(
            uplink.request(patch_request(body, "sha256"), body), GUARD_S
        )
    assert transport.name == "h3"
    assert response.status == 204
    assert response.headers["upload-offset"] == str(len(body))
    assert response.headers["tus-resumable"] == "1.0.0"  # names are lower-case
    assert handler.bodies == [body]
    (request,) = handler.requests
    assert (request.method, request.target) == ("PATCH", "/files/abc")
    assert request.client_id == "MVB-TEST-0001"  # the CN of the verified client certificate
    assert request.headers["host"] == SERVER_NAME
    assert request.headers["content-length"] == str(len(body))
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert request.headers["upload-checksum"] == f"sha256 {digest}"
    assert transport.body_bytes_sent == len(body)


async def test_requests_without_body_and_several_on_one_connection(pki: Pki) -> None:
    handler = RecordingHandler()
    link = LinkBinding(source_address="127.0.0.1")
    async with (
        serving(handler, pki) as server,
        connected(server.port, pki, binding=link) as transport,
    ):
        first = await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
        second = await asyncio.wait_for(transport.request(patch_request(b"abc"), b"abc"), GUARD_S)
    assert (first.status, second.status) == (204, 204)
    assert handler.bodies == [b"", b"abc"]
    assert "content-length" not in handler.requests[0].headers


async def test_early_answer_stops_the_body_and_keeps_the_connection(pki: Pki) -> None:
    class Refuser:
        async def handle(self, request: IncomingRequest) -> OutgoingResponse:
            return OutgoingResponse(413, {"Tus-Resumable": "1.0.0"}, b"too large\n")

    body = bytes(16 * 1024 * 1024)
    async with serving(Refuser(), pki) as server, connected(server.port, pki) as transport:
        refused = await asyncio.wait_for(transport.request(patch_request(body), body), GUARD_S)
        again = await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
    assert (refused.status, refused.body) == (413, b"too large\n")
    assert transport.body_bytes_sent < len(body)  # it stopped when told to
    assert again.status == 413


# --- certificates: pinned, chained, or dropped before a single request byte -------------------


async def test_unpinned_server_key_is_pin_mismatch_before_any_request(pki: Pki) -> None:
    handler = RecordingHandler()
    async with serving(
        handler, pki, cert=pki.impostor_server_cert, key=pki.impostor_server_key
    ) as server:
        with pytest.raises(PinMismatch, match="is not pinned"):
            await asyncio.wait_for(
                H3Transport.connect("127.0.0.1", server.port, pki.client_settings()), GUARD_S
            )
    assert handler.requests == []


async def test_server_from_a_rogue_ca_is_dropped_as_a_chain_failure(pki: Pki) -> None:
    handler = RecordingHandler()
    async with serving(handler, pki, cert=pki.rogue_server_cert, key=pki.rogue_server_key) as srv:
        with pytest.raises(PinMismatch, match="chain or host name did not verify"):
            await asyncio.wait_for(
                H3Transport.connect("127.0.0.1", srv.port, pki.client_settings()), GUARD_S
            )
    assert handler.requests == []


async def test_wrong_host_name_is_dropped(pki: Pki) -> None:
    wrong_name = dataclasses.replace(pki.client_settings(), server_name="elsewhere.test")
    handler = RecordingHandler()
    async with serving(handler, pki) as server:
        with pytest.raises(PinMismatch, match="chain or host name"):
            await asyncio.wait_for(
                H3Transport.connect("127.0.0.1", server.port, wrong_name), GUARD_S
            )
    assert handler.requests == []


# --- faults: unknown outcome is transient, a hostile server is HostileServer ------------------


async def test_server_closed_mid_request_is_transient(pki: Pki) -> None:
    body = bytes(4 * 1024 * 1024)
    handler = RecordingHandler(hold=True)
    async with serving(handler, pki) as server, connected(server.port, pki) as transport:
        request = asyncio.create_task(transport.request(patch_request(body), body))
        await asyncio.wait_for(handler.first_piece.wait(), GUARD_S)
        await server.close()
        with pytest.raises(TransientNetworkError, match="QUIC connection ended"):
            await asyncio.wait_for(request, GUARD_S)
        with pytest.raises(TransientNetworkError):
            await transport.request(HEAD_FILE, None)  # the connection stays unusable


async def test_cut_link_is_transient_after_the_idle_timeout(pki: Pki) -> None:
    handler = RecordingHandler(hold=True)
    async with serving(handler, pki) as server:
        relay = UdpRelay(server.port)
        try:
            port = await relay.start()
            async with connected(port, pki, idle_timeout_s=0.5) as transport:
                request = asyncio.create_task(transport.request(patch_request(b"abc"), b"abc"))
                await asyncio.wait_for(handler.first_piece.wait(), GUARD_S)
                relay.cut()
                with pytest.raises(TransientNetworkError, match="Idle timeout"):
                    await asyncio.wait_for(request, GUARD_S)
        finally:
            relay.close()


async def test_silent_server_is_a_transient_handshake_timeout(pki: Pki) -> None:
    handler = RecordingHandler()
    async with serving(handler, pki) as server:
        relay = UdpRelay(server.port)
        try:
            port = await relay.start()
            relay.cut()
            with pytest.raises(TransientNetworkError, match=r"not established within 0\.3 s"):
                await asyncio.wait_for(
                    H3Transport.connect(
                        "127.0.0.1", port, pki.client_settings(), connect_timeout_s=0.3
                    ),
                    GUARD_S,
                )
        finally:
            relay.close()
    assert handler.requests == []


async def test_a_server_holding_its_answer_is_cut_by_the_read_timeout(pki: Pki) -> None:
    handler = RecordingHandler(hold=True)
    async with (
        serving(handler, pki) as server,
        connected(server.port, pki, read_timeout_s=0.3) as transport,
    ):
        with pytest.raises(NoProgress, match=r"no answer within 0\.3 s"):
            await asyncio.wait_for(transport.request(patch_request(b"abc"), b"abc"), GUARD_S)


async def test_endless_response_body_is_hostile_and_the_stream_is_stopped(pki: Pki) -> None:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(pki.server_cert, pki.server_key)
    stopped = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    create_protocol = functools.partial(EndlessBodyServer, stopped=stopped, tasks=tasks)
    udp, quic_server = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: QuicServer(configuration=configuration, create_protocol=create_protocol),
        local_addr=("127.0.0.1", 0),
    )
    try:
        port = udp.get_extra_info("sockname")[1]
        async with connected(port, pki) as transport:
            with pytest.raises(HostileServer, match=f"exceeds {MAX_RESPONSE_BODY_BYTES} bytes"):
                await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
            await asyncio.wait_for(stopped.wait(), GUARD_S)  # the client told it to stop
    finally:
        quic_server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- pure parts -------------------------------------------------------------------------------


def frame(frame_type: int, payload: bytes) -> bytes:
    """An HTTP/3 frame with 2-byte varints for type and length (payload < 16 KiB)."""
    assert len(payload) < 0x4000

    def varint(value: int) -> bytes:
        return (0x4000 | value).to_bytes(2, "big")

    return varint(frame_type) + varint(len(payload)) + payload


def test_guard_passes_one_header_block_and_any_amount_of_data_in_any_split() -> None:
    stream = frame(FrameType.HEADERS, b"h" * 100) + frame(FrameType.DATA, b"d" * 10000) * 50
    guard = H3StreamGuard(0, limit_bytes=1000)
    for start in range(0, len(stream), 7):  # frame headers split across feeds
        guard.feed(stream[start : start + 7])
    guard.headers_delivered()
    guard.check_undelivered()


def test_guard_refuses_a_header_block_over_the_limit_from_its_frame_header() -> None:
    guard = H3StreamGuard(0, limit_bytes=1000)
    with pytest.raises(H3LimitExceeded, match="header block"):
        guard.feed(frame(FrameType.HEADERS, b"h" * 3000)[:4])  # the length is enough to know


def test_guard_refuses_trailers_and_push() -> None:
    guard = H3StreamGuard(0, limit_bytes=1000)
    guard.feed(frame(FrameType.HEADERS, b"h") + frame(FrameType.DATA, b"d"))
    with pytest.raises(H3LimitExceeded, match="second header block"):
        guard.feed(frame(FrameType.HEADERS, b"t"))
    with pytest.raises(H3LimitExceeded, match="push"):
        H3StreamGuard(0).feed(frame(FrameType.PUSH_PROMISE, b"p"))
    with pytest.raises(H3LimitExceeded, match="push"):
        H3StreamGuard(3).feed(bytes([StreamType.PUSH]))


def test_guard_bounds_data_behind_an_undecodable_header_block() -> None:
    guard = H3StreamGuard(0, limit_bytes=1000)
    guard.feed(frame(FrameType.HEADERS, b"h") + frame(FrameType.DATA, b"d" * 900))
    guard.check_undelivered()
    guard.feed(frame(FrameType.DATA, b"d" * 900))
    with pytest.raises(H3LimitExceeded, match="undecodable"):
        guard.check_undelivered()


def test_guard_bounds_prelude_and_control_frames_but_not_qpack_streams() -> None:
    with pytest.raises(H3LimitExceeded, match="no header block"):
        H3StreamGuard(0, limit_bytes=1000).feed(frame(0x21, b"g" * 3000))  # grease only
    control = H3StreamGuard(3, limit_bytes=1000)
    control.feed(bytes([StreamType.CONTROL]) + frame(FrameType.SETTINGS, b"s" * 100))
    control.feed(frame(0x21, b"g" * 5000))  # unknown frames are discarded by aioquic
    with pytest.raises(H3LimitExceeded, match="control frame"):
        control.feed(frame(FrameType.SETTINGS, b"s" * 3000))
    H3StreamGuard(3, limit_bytes=1000).feed(bytes([StreamType.QPACK_ENCODER]) + b"q" * 5000)


def test_request_header_fields_are_http3_clean() -> None:
    request = HttpRequest(
        "POST",
        "/files/",
        headers=(("Tus-Resumable", "1.0.0"), ("Connection", "keep-alive"), ("Host", "x")),
    )
    fields = dict(request_header_fields(request, None, "backoffice.test"))
    assert fields == {
        b":method": b"POST",
        b":scheme": b"https",
        b":authority": b"backoffice.test",
        b":path": b"/files/",
        b"tus-resumable": b"1.0.0",
        b"content-length": b"0",
    }


def test_response_head_is_parsed_or_hostile() -> None:
    headers = [(b":status", b"204"), (b"upload-offset", b"5"), (b"x-a", b"1"), (b"x-a", b"2")]
    assert parse_response_head(headers) == (204, {"upload-offset": "5", "x-a": "1, 2"})
    for bad in ([(b"upload-offset", b"5")], [(b":status", b"2xx")], [(b":status", b"103")]):
        with pytest.raises(HostileServer):
            parse_response_head(bad)
    with pytest.raises(HostileServer, match="header block"):
        parse_response_head([(b":status", b"200"), (b"x", b"v" * MAX_FIELD_SECTION_BYTES)])


def test_certificate_alerts_are_pin_mismatch_everything_else_transient() -> None:
    bad_certificate = QuicErrorCode.CRYPTO_ERROR + AlertDescription.bad_certificate
    ended = ConnectionTerminated(error_code=bad_certificate, frame_type=None, reason_phrase="x")
    assert "chain" in str(termination_error(ended, server_certificate_accepted=False))
    refused = termination_error(ended, server_certificate_accepted=True)
    assert isinstance(refused, PinMismatch)
    assert "client certificate" in str(refused)
    idle = ConnectionTerminated(error_code=0, frame_type=None, reason_phrase="Idle timeout")
    assert isinstance(
        termination_error(idle, server_certificate_accepted=True), TransientNetworkError
    )
