"""Real TLS servers on loopback for the HTTPS transport's tests (test_https*.py; their fixtures
are in tests/transport/conftest.py).

Two kinds of server: an aiohttp web server with mutual TLS (a well-behaved back office that
records what it saw), and a raw TLS server whose reader records every application byte the
client sends (how "zero request bytes to a wrong certificate" is proven) and whose behaviour after
the handshake is scripted (reset, truncate, endless body, trickle, stall).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex

from aiohttp import web

from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from transport.http import BodySlice, HttpRequest

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


async def assert_nothing_received(connection: RawConnection) -> None:
    await asyncio.wait_for(connection.closed.wait(), GUARD_S)
    assert connection.received == b""
