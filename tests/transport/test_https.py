"""The HTTPS transport against real TLS servers on loopback with the test PKI.

Two kinds of server: an aiohttp web server with mutual TLS (a well-behaved back office that
records what it saw), and a raw TLS server whose reader records every application byte the
client sends (how "zero request bytes to a wrong certificate" is proven) and whose behaviour after
the handshake is scripted (reset, truncate, endless body, trickle, stall).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex

import aiohttp
import pytest
from aiohttp import web

from config.fleet_fetch import FleetLink
from tests.tls_helpers import SERVER_NAME
from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from transport.binding import LinkBinding
from transport.checksum import SUPPORTED_ALGORITHMS
from transport.errors import HostileServer, PinMismatch, TransientNetworkError
from transport.http import MAX_RESPONSE_BODY_BYTES, BodySlice, HttpRequest
from transport.https import HttpsTransport, outgoing_headers, request_url, translate_error
from transport.tls import ClientTlsSettings

GUARD_S = 5.0
"""Bound on a test step that must end by the transport's own (much shorter) timeout: if that
timeout did not work, the guard's TimeoutError fails the test instead of the expected error."""

HELLO = b"hello"
PATCH_HELLO = HttpRequest(
    "PATCH",
    "/files/abc",
    headers=(
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Offset", "0"),
        ("Content-Type", "application/offset+octet-stream"),
    ),
    body=BodySlice(offset_bytes=0, length_bytes=len(HELLO)),
)
HEAD_FILE = HttpRequest("HEAD", "/files/abc", headers=(("Tus-Resumable", "1.0.0"),))


def server_context(
    cert: Path, key: Path, *, client_ca: Path | None = None, sni_seen: list[str] | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    if sni_seen is not None:
        names = sni_seen

        def record_sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
            names.append(name or "")

        context.sni_callback = record_sni
    return context


def backup_cert(pki: Pki) -> tuple[Path, Path]:
    return pki.directory / "backup.crt", pki.directory / "backup.key"


# --- a well-behaved back office (aiohttp web, mutual TLS) --------------------------------------


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_cn: str | None
    peer_host: str | None


def common_name(peercert: dict[str, Any] | None) -> str | None:
    if not peercert:
        return None
    for rdn in peercert["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


SEEN = web.AppKey("seen", list[SeenRequest])


@dataclass
class EchoServer:
    port: int
    seen: list[SeenRequest]
    sni_seen: list[str]


async def echo_handler(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    request.app[SEEN].append(
        SeenRequest(
            method=request.method,
            path=request.path_qs,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            client_cn=common_name(peercert),
            peer_host=request.remote,
        )
    )
    if request.path == "/redirect":
        return web.Response(status=307, headers={"Location": "/elsewhere"})
    response = web.Response(
        status=201,
        body=b"ok",
        headers={"Upload-Offset": str(len(body)), "Tus-Resumable": "1.0.0"},
    )
    if request.path == "/cookie":
        response.set_cookie("session", "server-session")
    return response


@pytest.fixture
async def start_echo_server(
    pki: Pki,
) -> AsyncIterator[Callable[..., Awaitable[EchoServer]]]:
    runners: list[web.AppRunner] = []

    async def start(
        cert: Path | None = None, key: Path | None = None, host: str = "127.0.0.1"
    ) -> EchoServer:
        seen: list[SeenRequest] = []
        sni_seen: list[str] = []
        context = server_context(
            cert or pki.server_cert,
            key or pki.server_key,
            client_ca=pki.ca_cert,
            sni_seen=sni_seen,
        )
        app = web.Application()
        app[SEEN] = seen
        app.router.add_route("*", "/{tail:.*}", echo_handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, host, 0, ssl_context=context).start()
        return EchoServer(port=runner.addresses[0][1], seen=seen, sni_seen=sni_seen)

    yield start
    for runner in runners:
        await runner.cleanup()


# --- a scripted raw TLS server that records every application byte ----------------------------


class RecordingReader(asyncio.StreamReader):
    """A StreamReader that keeps a copy of every byte the TLS layer delivers to it."""

    def __init__(self) -> None:
        super().__init__()
        self.record = bytearray()

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.record.extend(data)
        super().feed_data(data)


@dataclass(eq=False)
class RawConnection:
    reader: RecordingReader = field(default_factory=RecordingReader)
    handshake_failed: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def received(self) -> bytes:
        return bytes(self.reader.record)


Behaviour = Callable[[RecordingReader, asyncio.StreamWriter], Awaitable[None]]


class RawTlsServer:
    """Accepts on 127.0.0.1, does the TLS handshake with `ssl_context` (swappable between
    connections; None: never answers the handshake), then runs `behaviour`."""

    def __init__(self, ssl_context: ssl.SSLContext | None, behaviour: Behaviour) -> None:
        self.ssl_context = ssl_context
        self.behaviour = behaviour
        self.connections: list[RawConnection] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setblocking(False)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port: int = self._listener.getsockname()[1]
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._accept_forever())

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(self._listener)
            connection = RawConnection()
            self.connections.append(connection)
            self._spawn(self._serve(sock, connection))

    async def _serve(self, sock: socket.socket, connection: RawConnection) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        try:
            if self.ssl_context is None:
                while await loop.sock_recv(sock, 4096):
                    pass
                return
            protocol = asyncio.StreamReaderProtocol(connection.reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self.ssl_context, ssl_handshake_timeout=GUARD_S
                )
            except (OSError, TimeoutError):
                connection.handshake_failed = True
                return
            assert isinstance(transport, asyncio.Transport)
            writer = asyncio.StreamWriter(transport, protocol, connection.reader, loop)
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await self.behaviour(connection.reader, writer)
        finally:
            if writer is not None:
                writer.transport.abort()
            sock.close()
            connection.closed.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._listener.close()


@pytest.fixture
async def start_raw_server() -> AsyncIterator[Callable[..., RawTlsServer]]:
    servers: list[RawTlsServer] = []

    def start(ssl_context: ssl.SSLContext | None, behaviour: Behaviour) -> RawTlsServer:
        server = RawTlsServer(ssl_context, behaviour)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The request head, after reading its Content-Length body (the reader records both)."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))
    return head


async def read_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    await writer.drain()


async def reset_after_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    # Linger 0: close() sends RST instead of FIN, as a crashing middlebox or server would.
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()


async def close_after_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.transport.abort()


async def close_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    await writer.drain()


async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"SMTP ready, not HTTP at all\r\n\r\n")
    await writer.drain()
    await read_until_eof(reader)


async def stream_until_client_leaves(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, piece: bytes, interval_s: float
) -> None:
    """Write `piece` again and again (bounded) until the client hangs up."""
    client_left = asyncio.ensure_future(read_until_eof(reader))
    try:
        for _ in range(4096):
            if client_left.done() or writer.transport.is_closing():
                return
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(interval_s)
    finally:
        client_left.cancel()
        await asyncio.gather(client_left, return_exceptions=True)


async def endless_chunked_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 16384
    await stream_until_client_leaves(reader, writer, b"4000\r\n" + piece + b"\r\n", 0)


async def endless_body_until_eof(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    await stream_until_client_leaves(reader, writer, b"x" * 16384, 0)


async def declare_huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
    await writer.drain()
    await read_until_eof(reader)


async def trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    await stream_until_client_leaves(reader, writer, b"a", 0.05)


async def trickle_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    await stream_until_client_leaves(reader, writer, b"a", 0.05)


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await read_until_eof(reader)


# --- transports --------------------------------------------------------------------------------


@pytest.fixture
async def open_transport() -> AsyncIterator[Callable[..., Awaitable[HttpsTransport]]]:
    opened: list[HttpsTransport] = []

    async def open_(
        port: int, tls: ClientTlsSettings, host: str = "127.0.0.1", **options: Any
    ) -> HttpsTransport:
        transport = await HttpsTransport.connect(host, port, tls, **options)
        opened.append(transport)
        return transport

    yield open_
    for transport in opened:
        await transport.aclose()


async def assert_nothing_received(connection: RawConnection) -> None:
    await asyncio.wait_for(connection.closed.wait(), GUARD_S)
    assert connection.received == b""


# --- round trips -------------------------------------------------------------------------------


async def test_round_trip_with_mutual_tls_and_keep_alive(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server()
    transport = await open_transport(server.port, pki.client_settings())

    response = await transport.request(PATCH_HELLO, HELLO)
    head = await transport.request(HEAD_FILE, None)

    assert transport.name == "https"
    assert response.status == 201
    assert response.headers["upload-offset"] == "5"
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.body == b"ok"
    assert head.status == 201
    assert head.body == b""
    patch = server.seen[0]
    assert (patch.method, patch.path, patch.body) == ("PATCH", "/files/abc", HELLO)
    assert patch.client_cn == "MVB-TEST-0001"
    assert patch.headers["tus-resumable"] == "1.0.0"
    assert patch.headers["content-type"] == "application/offset+octet-stream"
    assert patch.headers["host"] == f"{SERVER_NAME}:{server.port}"
    assert "upload-checksum" not in patch.headers
    assert server.sni_seen == [SERVER_NAME]
    assert transport.connections_opened == 1
    assert transport.body_bytes_sent == len(HELLO)


async def test_ipv6_endpoint_round_trip(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server(host="::1")
    transport = await open_transport(server.port, pki.client_settings(), host="::1")

    response = await transport.request(PATCH_HELLO, HELLO)

    assert response.status == 201
    assert server.seen[0].peer_host == "::1"


async def test_backup_pin_alone_accepts_the_backup_key(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server(*backup_cert(pki))
    transport = await open_transport(server.port, pki.client_settings([pki.backup_pin]))

    response = await transport.request(PATCH_HELLO, HELLO)

    assert response.status == 201


async def test_primary_pin_alone_refuses_the_backup_key(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server(*backup_cert(pki))
    transport = await open_transport(server.port, pki.client_settings([pki.server_pin]))

    with pytest.raises(PinMismatch, match="not pinned"):
        await transport.request(PATCH_HELLO, HELLO)
    assert server.seen == []
    assert transport.connections_opened == 0


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
async def test_upload_checksum_header_per_algorithm(
    algorithm: str,
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server()
    transport = await open_transport(server.port, pki.client_settings())
    body = bytes(range(256)) * 3
    request = HttpRequest(
        "PATCH", "/files/abc", body=BodySlice(0, len(body), checksum_algorithm=algorithm)
    )

    await transport.request(request, body)

    digest = hashlib.new(algorithm, body, usedforsecurity=False).digest()
    expected = f"{algorithm} {base64.b64encode(digest).decode('ascii')}"
    assert server.seen[0].headers["upload-checksum"] == expected
    assert server.seen[0].body == body


async def test_redirect_is_returned_not_followed(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server()
    transport = await open_transport(server.port, pki.client_settings())

    response = await transport.request(HttpRequest("HEAD", "/redirect"), None)

    assert response.status == 307
    assert response.headers["location"] == "/elsewhere"
    assert [seen.path for seen in server.seen] == ["/redirect"]


async def test_cookies_are_not_sent_back(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server()
    transport = await open_transport(server.port, pki.client_settings())

    first = await transport.request(HttpRequest("HEAD", "/cookie"), None)
    await transport.request(HttpRequest("HEAD", "/cookie"), None)

    assert "set-cookie" in first.headers
    assert all("cookie" not in seen.headers for seen in server.seen)
    assert len(server.seen) == 2


# --- pinning and chain: zero request bytes to a wrong certificate ------------------------------


async def test_recording_server_sees_the_request_from_the_genuine_server_key(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    # The control for the zero-byte tests below: the same recorder does see a pinned request.
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), answer_and_close)
    transport = await open_transport(server.port, pki.client_settings())

    response = await transport.request(PATCH_HELLO, HELLO)

    assert response.status == 204
    await asyncio.wait_for(server.connections[0].closed.wait(), GUARD_S)
    received = server.connections[0].received
    assert received.startswith(b"PATCH /files/abc HTTP/1.1\r\n")
    assert received.endswith(b"\r\n\r\n" + HELLO)


async def test_impostor_key_signed_by_our_ca_gets_zero_bytes(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    context = server_context(pki.impostor_server_cert, pki.impostor_server_key)
    server = start_raw_server(context, answer_and_close)
    transport = await open_transport(server.port, pki.client_settings())

    with pytest.raises(PinMismatch, match="not pinned"):
        await transport.request(PATCH_HELLO, HELLO)

    await assert_nothing_received(server.connections[0])
    assert transport.connections_opened == 0
    assert transport.body_bytes_sent == 0


async def test_rogue_ca_certificate_fails_the_chain_and_gets_zero_bytes(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    context = server_context(pki.rogue_server_cert, pki.rogue_server_key)
    server = start_raw_server(context, answer_and_close)
    transport = await open_transport(server.port, pki.client_settings())

    with pytest.raises(PinMismatch, match="chain failed verification"):
        await transport.request(PATCH_HELLO, HELLO)

    await assert_nothing_received(server.connections[0])
    assert server.connections[0].handshake_failed


async def test_wrong_host_name_is_refused_even_with_a_pinned_key(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    # 127.0.0.1 is in the certificate, but the name checked must be tls.server_name.
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), answer_and_close)
    settings = dataclasses.replace(pki.client_settings(), server_name="elsewhere.test")
    transport = await open_transport(server.port, settings)

    with pytest.raises(PinMismatch, match="Hostname mismatch"):
        await transport.request(PATCH_HELLO, HELLO)

    await assert_nothing_received(server.connections[0])
    assert server.connections[0].handshake_failed


async def test_pin_is_checked_on_every_new_connection(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), answer_and_close)
    transport = await open_transport(server.port, pki.client_settings())
    assert (await transport.request(PATCH_HELLO, HELLO)).status == 204

    # The server closed that connection; the next one presents a key that is not pinned.
    server.ssl_context = server_context(pki.impostor_server_cert, pki.impostor_server_key)
    with pytest.raises(PinMismatch, match="not pinned"):
        await transport.request(PATCH_HELLO, HELLO)

    assert len(server.connections) == 2
    await assert_nothing_received(server.connections[1])
    assert transport.connections_opened == 1
    assert transport.body_bytes_sent == len(HELLO)


# --- broken and hostile servers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour", [reset_after_head, close_after_head, close_mid_body], ids=lambda b: b.__name__
)
async def test_cut_connection_is_transient(
    behaviour: Behaviour,
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), behaviour)
    transport = await open_transport(server.port, pki.client_settings())

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(TransientNetworkError):
            await transport.request(PATCH_HELLO, HELLO)


@pytest.mark.parametrize(
    "behaviour", [endless_chunked_body, endless_body_until_eof], ids=lambda b: b.__name__
)
async def test_endless_body_is_hostile_and_drops_the_connection(
    behaviour: Behaviour,
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), behaviour)
    transport = await open_transport(server.port, pki.client_settings())

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(HostileServer, match=f"{MAX_RESPONSE_BODY_BYTES} byte bound"):
            await transport.request(PATCH_HELLO, HELLO)
        # The client hung up on its own: the server's connection ends without our aclose().
        await server.connections[0].closed.wait()


async def test_declared_oversized_body_is_hostile_without_waiting_for_it(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), declare_huge_body)
    transport = await open_transport(
        server.port, pki.client_settings(), request_timeout_s=60, read_timeout_s=60
    )

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(HostileServer, match="10000000 bytes"):
            await transport.request(PATCH_HELLO, HELLO)


async def test_invalid_http_answer_is_hostile(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), answer_garbage)
    transport = await open_transport(server.port, pki.client_settings())

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(HostileServer, match="not valid HTTP"):
            await transport.request(PATCH_HELLO, HELLO)


@pytest.mark.parametrize("behaviour", [trickle_head, trickle_body], ids=lambda b: b.__name__)
async def test_slow_loris_is_cut_off_by_the_request_timeout(
    behaviour: Behaviour,
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    # A byte every 50 ms never trips the 60 s per-read timeout; the whole-request bound must.
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), behaviour)
    transport = await open_transport(
        server.port, pki.client_settings(), request_timeout_s=0.5, read_timeout_s=60
    )

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(TransientNetworkError):
            await transport.request(PATCH_HELLO, HELLO)
        await server.connections[0].closed.wait()


async def test_silent_server_is_cut_off_by_the_read_timeout(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = start_raw_server(server_context(pki.server_cert, pki.server_key), stall)
    transport = await open_transport(
        server.port, pki.client_settings(), request_timeout_s=60, read_timeout_s=0.3
    )

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(TransientNetworkError, match=r"no answer within 0\.3 s"):
            await transport.request(PATCH_HELLO, HELLO)


async def test_handshake_black_hole_is_cut_off_by_the_connect_timeout(
    pki: Pki,
    start_raw_server: Callable[..., RawTlsServer],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = start_raw_server(None, stall)
    transport = await open_transport(
        server.port,
        pki.client_settings(),
        connect_timeout_s=0.3,
        request_timeout_s=60,
        read_timeout_s=60,
    )

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(TransientNetworkError):
            await transport.request(PATCH_HELLO, HELLO)


async def test_refused_connection_is_transient(
    pki: Pki, open_transport: Callable[..., Awaitable[HttpsTransport]]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    transport = await open_transport(closed_port, pki.client_settings())

    with pytest.raises(TransientNetworkError):
        await transport.request(PATCH_HELLO, HELLO)


# --- link binding ------------------------------------------------------------------------------


async def test_binding_to_a_source_address_works(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    server = await start_echo_server()
    transport = await open_transport(
        server.port, pki.client_settings(), binding=LinkBinding(source_address="127.0.0.1")
    )

    response = await transport.request(PATCH_HELLO, HELLO)

    assert response.status == 201
    assert server.seen[0].peer_host == "127.0.0.1"


async def test_binding_applies_to_the_connection_socket(
    pki: Pki,
    start_echo_server: Callable[..., Awaitable[EchoServer]],
    open_transport: Callable[..., Awaitable[HttpsTransport]],
) -> None:
    # An IPv6 source cannot reach an IPv4 endpoint: failing proves the binding is applied.
    server = await start_echo_server()
    transport = await open_transport(
        server.port, pki.client_settings(), binding=LinkBinding(source_address="::1")
    )

    with pytest.raises(TransientNetworkError):
        await transport.request(PATCH_HELLO, HELLO)
    assert server.seen == []


async def test_bogus_interface_raises_oserror_on_connect(pki: Pki) -> None:
    async with asyncio.timeout(GUARD_S):
        with pytest.raises(OSError, match="No such device"):
            await HttpsTransport.connect(
                "127.0.0.1",
                443,
                pki.client_settings(),
                binding=LinkBinding(interface="mvb-bogus0"),
            )


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["files/abc", "//evil.test/files", "@evil.test/files", "/files a", "/files\r\nX: y"]
)
def test_request_url_refuses_targets_that_are_not_absolute_paths(target: str) -> None:
    with pytest.raises(ValueError, match="request target"):
        request_url("127.0.0.1", 8443, target)


def test_request_url_keeps_the_target_verbatim() -> None:
    url = request_url("::1", 8443, "/files/a%2Fb?x=%41")

    assert str(url) == "https://[::1]:8443/files/a%2Fb?x=%41"


def test_body_must_match_its_slice() -> None:
    with pytest.raises(ValueError, match="BodySlice is 5 bytes but got 4 bytes"):
        outgoing_headers(PATCH_HELLO, b"hell", SERVER_NAME, 443)


def test_host_header_defaults_to_the_server_name_without_default_port() -> None:
    headers = outgoing_headers(HEAD_FILE, None, SERVER_NAME, 443)

    assert ("Host", SERVER_NAME) in headers


def test_pin_mismatch_wrapped_by_aiohttp_stays_a_pin_mismatch() -> None:
    wrapped = aiohttp.ClientConnectionError("connection failed")
    wrapped.__cause__ = PinMismatch("peer key sha256/x is not pinned; connection dropped")

    translated = translate_error(wrapped)

    assert isinstance(translated, PinMismatch)
    assert "not pinned" in str(translated)


def test_programming_errors_are_not_translated() -> None:
    assert translate_error(ValueError("bad header")) is None


@pytest.mark.parametrize(
    "bounds",
    [
        {"connect_timeout_s": 0.0},
        {"request_timeout_s": -1.0},
        {"read_timeout_s": 0.0},
        {"max_connections": 0},
    ],
)
async def test_unbounded_settings_are_refused_by_both_pinned_clients(
    pki: Pki, bounds: dict[str, Any]
) -> None:
    """A zero or negative bound would mean "wait forever" or "no connection": refused at once,
    for the uplink and the fleet fetch alike (one check, in pinned_session)."""
    with pytest.raises(ValueError, match="must be"):
        await HttpsTransport.connect("127.0.0.1", 443, pki.client_settings(), **bounds)
    with pytest.raises(ValueError, match="must be"):
        await FleetLink.connect("127.0.0.1", 443, pki.client_settings(), **bounds)
