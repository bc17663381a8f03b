"""The HTTPS (HTTP/1.1 over TLS, aiohttp) transport: mutual TLS, SPKI-pinned before the first byte.

Invariants:
- Every new TLS connection is checked against the pins after its handshake and before a single
  request byte is written; a mismatch drops that connection and raises PinMismatch (RULES L1). A
  chain or host name that fails verification is PinMismatch too: an unknown certificate is
  dropped, never trusted, never downgraded.
- The chain and host name are verified against `tls.server_name` (SNI and `Host` name it too),
  even when the endpoint `host` is an IP address chosen by the link.
- Everything is bounded: at most `max_connections` connections (a request waits for one behind
  requests that are bounded themselves), the connect + handshake by `connect_timeout_s`, the
  response body by MAX_RESPONSE_BODY_BYTES, and time by progress (transport/progress.py): a
  request body is sent in pieces (ProgressPayload) and the request lives while its bytes are
  accepted by the socket or acknowledged by the peer (a stall of `stall_timeout_s` cuts it); the
  answer is awaited from the moment every body byte was acknowledged, `read_timeout_s` of
  silence at most and `request_timeout_s` in all. A slow link is never cut for being slow.
- Errors leave by fault (transport/errors.py): TransientNetworkError when the outcome is unknown,
  PinMismatch, HostileServer (invalid HTTP, endless body); no aiohttp exception escapes.
- No redirect is followed, no cookie is kept or sent, no proxy is taken from the environment, and
  no response is decompressed (a compressed body could expand past any bound before it is read).
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import socket
import ssl
import struct
import termios
from collections.abc import Callable, Iterable
from typing import Any, Final

import aiohttp
from aiohappyeyeballs import AddrInfoType, SocketFactoryType
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_proto import ResponseHandler
from aiohttp.payload import Payload
from yarl import URL

from storage.trusted_time import TrustedNow
from transport.binding import LinkBinding, bound_socket
from transport.cert_validity import check_validity
from transport.checksum import checksum_header
from transport.errors import HostileServer, PinMismatch, TransientNetworkError, TransportError
from transport.http import MAX_RESPONSE_BODY_BYTES, HttpRequest, HttpResponse
from transport.pinning import PinSet
from transport.progress import DEFAULT_STALL_TIMEOUT_S, Progress, RequestTimeouts, RequestWatch
from transport.progress_io import DATED_POLL_S, run_watched
from transport.tls import ClientTlsSettings, client_ssl_context

READ_PIECE_BYTES = 16 * 1024
"""A response body is read in pieces of at most this size, so at most one piece past the limit
is ever held before HostileServer is raised."""

READ_BUFFER_BYTES = 64 * 1024
"""aiohttp's per-connection read buffer (it pauses the socket beyond about twice this)."""

HTTPS_DEFAULT_PORT = 443

SEND_PIECE_BYTES: Final = 256 * 1024
"""A request body is handed to the connection in pieces of this size, each after the connection's
buffer drained: so the count of bytes handed over is what the socket took, bar at most one piece
waiting in the connection's buffer, which `progress()` counts as unacknowledged until the peer
acknowledged it.
256 KiB rather than one 16 KiB TLS record per piece: the body is a memoryview of the chunk read
off the card (no copy), and each piece costs a round of Python through aiohttp and asyncio's TLS
layer, which at 16 KiB cost more CPU per GB than the checksum (docs/benchmarks.md, uplink)."""


# --- pure helpers ------------------------------------------------------------------------------


def request_url(host: str, port: int, target: str) -> URL:
    """`https://{host}:{port}{target}`, sent exactly as given (no requoting).

    `target` must be an absolute path (optionally with a query): it may come from a server's
    Location header, and anything else ("@evil.test/", "//evil.test/") could move the request to
    another authority. ValueError if it is not.
    """
    if not target.startswith("/") or target.startswith("//"):
        raise ValueError(f"request target {target!r} is not an absolute path")
    if not all("!" <= character <= "~" for character in target):
        raise ValueError(f"request target {target!r} has a space, control or non-ASCII character")
    origin = URL.build(scheme="https", host=host, port=port)
    url = URL(str(origin) + target, encoded=True)
    if url.origin() != origin:
        raise ValueError(f"request target {target!r} changes the authority")
    return url


def host_header_value(server_name: str, port: int) -> str:
    """The Host header: the back office's name, not the IP the link connects to, so a reverse
    proxy routing by name sees the same name as SNI and the certificate."""
    return server_name if port == HTTPS_DEFAULT_PORT else f"{server_name}:{port}"


def outgoing_headers(
    request: HttpRequest, body: bytes | bytearray | None, server_name: str, port: int
) -> list[tuple[str, str]]:
    """The request's headers plus Host (unless given) and Upload-Checksum (when asked for).

    ValueError when `body` does not match the request's BodySlice (a bug in the caller: sending
    the wrong bytes under a checksum or offset would corrupt the upload).
    """
    headers = list(request.headers)
    if not any(name.lower() == "host" for name, _ in headers):
        headers.append(("Host", host_header_value(server_name, port)))
    if request.body is None:
        if body:
            raise ValueError("body bytes given for a request without a BodySlice")
        return headers
    if body is None or len(body) != request.body.length_bytes:
        got = "no body" if body is None else f"{len(body)} bytes"
        raise ValueError(f"BodySlice is {request.body.length_bytes} bytes but got {got}")
    if request.body.checksum_algorithm is not None:
        headers.append(checksum_header(request.body.checksum_algorithm, body))
    return headers


def lower_case_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased; repeated fields joined with ", " (RFC 9110 section 5.3), so a
    duplicated tus header reads as malformed rather than silently picking one value."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _verify_message(exc: BaseException) -> str:
    """OpenSSL's reason a certificate failed (e.g. "Hostname mismatch"); public, not secret."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        exc = exc.certificate_error
    message = getattr(exc, "verify_message", None)
    return message if isinstance(message, str) and message else type(exc).__name__


def translate_error(exc: BaseException) -> TransportError | None:
    """The transport error by fault for an exception out of aiohttp, or None if it is not one
    of ours to translate (a programming error, which propagates as it is)."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc.__cause__, PinMismatch):
        # Our connector raises PinMismatch inside aiohttp, which lets it through unwrapped today;
        # should a later aiohttp wrap it, it must still not turn into a retryable network error.
        return PinMismatch(str(exc.__cause__))
    # Checked before the connection errors: aiohttp's certificate error is one of them too.
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PinMismatch(
            f"the back office certificate chain failed verification ({_verify_message(exc)});"
            " connection dropped"
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        return HostileServer(f"the server's answer is not valid HTTP/1.1: {exc.message}")
    if isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | OSError | TimeoutError
    ):
        return TransientNetworkError(f"https request failed: {type(exc).__name__}: {exc}")
    return None


def peer_certificate(transport: asyncio.BaseTransport) -> bytes | None:
    """The DER certificate the TLS peer presented, None if there is none (or no TLS)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.getpeercert(binary_form=True)


def socket_unacked_bytes(transport: asyncio.BaseTransport) -> int | None:
    """Bytes the connection holds that the peer has not acknowledged: the transport's buffer plus
    the kernel's send queue (SIOCOUTQ: written, not yet acknowledged). None where the kernel
    cannot tell (not a TCP socket, not Linux)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    except (OSError, ValueError):  # closed meanwhile, or no such ioctl here
        return None
    queued = int(struct.unpack("i", raw)[0])
    buffered = 0
    if isinstance(transport, asyncio.WriteTransport):
        buffered = transport.get_write_buffer_size()
    return buffered + queued


TCP_INFO_LAST_ACK_RECV_OFFSET: Final = 56
"""Where Linux's struct tcp_info holds `tcpi_last_ack_recv` (u32, milliseconds since the last
ACK came in): after 8 one-byte fields and 12 u32s (rto ... last_data_recv). Stable ABI since
Linux 2.6."""
TCP_INFO_READ_BYTES: Final = TCP_INFO_LAST_ACK_RECV_OFFSET + 4


def last_ack_age_s(tcp_info: bytes) -> float | None:
    """Seconds since the socket's last ACK, from the bytes of getsockopt(TCP_INFO); None if the
    kernel gave too few bytes."""
    if len(tcp_info) < TCP_INFO_READ_BYTES:
        return None
    (age_ms,) = struct.unpack_from("=I", tcp_info, TCP_INFO_LAST_ACK_RECV_OFFSET)
    return int(age_ms) / 1000.0


def socket_last_ack_age_s(transport: asyncio.BaseTransport) -> float | None:
    """Seconds since the connection's socket last received an ACK (TCP_INFO), None where the
    kernel cannot tell (not a TCP socket, not Linux, closed meanwhile)."""
    sock = transport.get_extra_info("socket")
    tcp_info = getattr(socket, "TCP_INFO", None)
    if sock is None or tcp_info is None:
        return None
    try:
        raw: bytes = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, TCP_INFO_READ_BYTES)
    except (OSError, ValueError):
        return None
    return last_ack_age_s(raw)


def probe_binding(binding: LinkBinding) -> None:
    """Apply `binding` to a throwaway socket, so a missing interface or foreign source address
    fails at connect() with the OSError that names it instead of as a vague network error."""
    family = socket.AF_INET
    if (
        binding.source_address is not None
        and ipaddress.ip_address(binding.source_address).version == 6
    ):
        family = socket.AF_INET6
    bound_socket(binding, family, socket.SOCK_STREAM).close()


def link_socket_factory(binding: LinkBinding) -> SocketFactoryType:
    """A socket factory for aiohttp that binds every new socket to the link before it connects."""

    def make_socket(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        return bound_socket(binding, family, kind, proto)

    return make_socket


# --- I/O shell ---------------------------------------------------------------------------------


class PinningConnector(aiohttp.TCPConnector):
    """A TCPConnector that checks the SPKI pins of every new connection before handing it out.

    Invariant: a connection in the pool has passed `pins.check`; `connections_opened` counts them.
    """

    def __init__(
        self,
        pins: PinSet,
        validity_time: Callable[[], TrustedNow] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._pins = pins
        self._validity_time = validity_time
        self.connections_opened = 0

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        # Why this hook: it is where aiohttp creates every new direct connection, it returns only
        # after the TLS handshake (chain and host name already verified by the ssl context), and
        # nothing has been written yet: the request is written only once connect() returns the
        # connection. aiohttp's own `Fingerprint` would pin the whole certificate (not the key,
        # so no key-preserving renewal) and makes aiohttp use an unverified context.
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        try:
            certificate = peer_certificate(transport)
            self._pins.check(certificate)
            if self._validity_time is not None and certificate is not None:
                check_validity(certificate, self._validity_time())
        except PinMismatch:
            # abort(): drop at once, nothing more goes to a peer we do not trust.
            transport.abort()
            raise
        self.connections_opened += 1
        return transport, protocol


class _AnswerProgress:
    """Response bytes read so far (the head counts one) and when the last came (loop time), for
    the request's watch."""

    def __init__(self) -> None:
        self.bytes = 0
        self.at_s: float | None = None

    def add(self, count_bytes: int) -> None:
        self.bytes += count_bytes
        self.at_s = asyncio.get_running_loop().time()


async def read_bounded_body(
    response: aiohttp.ClientResponse,
    method: str,
    limit_bytes: int,
    progress: _AnswerProgress | None = None,
) -> bytes:
    """The whole response body, or HostileServer as soon as it is known to exceed `limit_bytes`.
    `progress` counts the bytes as they come."""
    declared_bytes = response.content_length
    # A HEAD answer's Content-Length describes a body that is not sent, so only trust it otherwise.
    if method != "HEAD" and declared_bytes is not None and declared_bytes > limit_bytes:
        raise HostileServer(
            f"response body of {declared_bytes} bytes exceeds the {limit_bytes} byte bound"
        )
    body = bytearray()
    while piece := await response.content.read(READ_PIECE_BYTES):
        body += piece
        if progress is not None:
            progress.add(len(piece))
        if len(body) > limit_bytes:
            raise HostileServer(f"response body exceeds the {limit_bytes} byte bound")
    return bytes(body)


class ProgressPayload(Payload):
    """A request body written in pieces of SEND_PIECE_BYTES, counting what the connection took.

    Invariant: `handed_bytes` counts the body bytes written to the connection after which its
    buffer drained (so they reached the kernel, bar at most one buffer's worth), `handed_at_s`
    when that count last rose (loop time); `progress()` reads what the connection still holds
    unacknowledged and dates the body's last movement. Reusable, like aiohttp's BytesPayload:
    every write starts its count from zero.
    """

    _autoclose = True  # bytes in memory: nothing to close

    def __init__(self, body: bytes | bytearray) -> None:
        super().__init__(body, content_type="application/octet-stream")
        self._size = len(body)
        self._body = body
        self._writer: AbstractStreamWriter | None = None
        self.handed_bytes = 0
        self.handed_at_s: float | None = None

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._body.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._writer = writer
        self.handed_bytes = 0
        self.handed_at_s = None
        loop = asyncio.get_running_loop()
        view = memoryview(self._body)
        end_bytes = len(view) if content_length is None else min(len(view), content_length)
        for start in range(0, end_bytes, SEND_PIECE_BYTES):
            piece = view[start : min(start + SEND_PIECE_BYTES, end_bytes)]
            await writer.write(piece)
            await writer.drain()
            self.handed_bytes = start + len(piece)
            self.handed_at_s = loop.time()

    def progress(self, answer: _AnswerProgress, now_s: float) -> Progress:
        """The request's counters at `now_s` (loop time), dated at the latest of the last
        handover, the socket's last ACK and the answer's last byte: never earlier than the last
        real movement (an ACK without new data may make it later). Undated when the socket
        cannot tell its ACKs: a handover time alone would date acknowledgements too early."""
        writer = self._writer
        transport = None if writer is None else writer.transport
        if transport is None:
            return Progress(self.handed_bytes, None, answer.bytes)
        unacked = socket_unacked_bytes(transport)
        ack_age_s = socket_last_ack_age_s(transport)
        if ack_age_s is None:
            return Progress(self.handed_bytes, unacked, answer.bytes)
        moments = [now_s - ack_age_s, self.handed_at_s, answer.at_s]
        moved_at_s = max(moment for moment in moments if moment is not None)
        return Progress(self.handed_bytes, unacked, answer.bytes, moved_at_s)


class HttpsTransport:
    """One back office over HTTPS on one link: mutual TLS, pinned, keep-alive, bounded.

    Invariants: see the module docstring. `body_bytes_sent` counts the body bytes of requests the
    server answered (so the server has read them, or chose not to); `connections_opened` counts
    the connections that passed the pin check.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        connector: PinningConnector,
        host: str,
        port: int,
        server_name: str,
        timeouts: RequestTimeouts | None = None,
        max_connections: int = 2,
    ) -> None:
        self._session = session
        self._connector = connector
        self._host = host
        self._port = port
        self._server_name = server_name
        self._body_bytes_sent = 0
        self._timeouts = timeouts or RequestTimeouts()
        # aiohttp's own wait for a pooled connection is not bounded by progress: a request waits
        # here instead, behind at most `max_connections` requests that are bounded themselves.
        self._slots = asyncio.Semaphore(max_connections)
        # Per request: our watch bounds time; aiohttp bounds only the connect and handshake.
        self._request_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeouts.connect_timeout_s, sock_read=None
        )

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
        max_connections: int = 2,
        read_timeout_s: float = 15.0,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    ) -> HttpsTransport:
        """A transport to `host:port` (connections are opened lazily, by the first request).

        OSError at once if `binding` cannot be applied (no such interface, foreign address);
        ValueError for a bound that is not positive.
        """
        timeouts = RequestTimeouts(
            connect_timeout_s=connect_timeout_s,
            stall_timeout_s=stall_timeout_s,
            read_timeout_s=read_timeout_s,
            request_timeout_s=request_timeout_s,
        )
        session, connector = pinned_session(
            tls,
            binding,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            request_timeout_s=request_timeout_s,
            max_connections=max_connections,
        )
        return cls(session, connector, host, port, tls.server_name, timeouts, max_connections)

    @property
    def name(self) -> str:
        return "https"

    @property
    def body_bytes_sent(self) -> int:
        return self._body_bytes_sent

    @property
    def connections_opened(self) -> int:
        return self._connector.connections_opened

    async def request(self, request: HttpRequest, body: bytes | bytearray | None) -> HttpResponse:
        """Send `request` with `body` and return the answer (see transport.http.Transport)."""
        url = request_url(self._host, self._port, request.target)
        headers = outgoing_headers(request, body, self._server_name, self._port)
        try:
            async with self._slots:
                return await self._watched(request.method, url, headers, body)
        except Exception as exc:
            translated = translate_error(exc)
            if translated is None or translated is exc:
                raise
            raise translated from exc

    async def _watched(
        self, method: str, url: URL, headers: list[tuple[str, str]], body: bytes | bytearray | None
    ) -> HttpResponse:
        payload = None if body is None else ProgressPayload(body)
        answer = _AnswerProgress()
        loop = asyncio.get_running_loop()
        watch = RequestWatch(
            self._timeouts,
            len(body or b""),
            loop.time(),
            setup_allowance_s=self._timeouts.connect_timeout_s,
        )

        def sample() -> Progress:
            if payload is None:
                return Progress(response_bytes=answer.bytes, moved_at_s=answer.at_s)
            return payload.progress(answer, loop.time())

        exchange = self._exchange(method, url, headers, payload, answer)
        # Dated by the socket's last ACK: sampled seldom, a dead link still found on time; the
        # body's end is seen within the answer's shortest bound, so its deadline is kept too.
        timeouts = self._timeouts
        poll_s = min(
            DATED_POLL_S,
            timeouts.stall_timeout_s / 2,
            timeouts.read_timeout_s,
            timeouts.request_timeout_s,
        )
        return await run_watched(exchange, watch, sample, f"https {method}", poll_s=poll_s)

    async def _exchange(
        self,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        payload: ProgressPayload | None,
        answer: _AnswerProgress,
    ) -> HttpResponse:
        response = await self._session.request(
            method,
            url,
            headers=headers,
            data=payload,
            server_hostname=self._server_name,
            allow_redirects=False,
            timeout=self._request_timeout,
        )
        answer.add(1)  # the head is in
        try:
            body = await read_bounded_body(response, method, MAX_RESPONSE_BODY_BYTES, answer)
        except BaseException:
            # close(), not release(): the connection's state is unknown (or hostile), so it must
            # not go back to the pool.
            response.close()
            raise
        response.release()
        self._body_bytes_sent += 0 if payload is None else payload.size or 0
        return HttpResponse(
            status=response.status,
            headers=lower_case_headers(response.headers.items()),
            body=body,
        )

    async def aclose(self) -> None:
        """Close every connection; idempotent."""
        await self._session.close()


def pinned_session(
    tls: ClientTlsSettings,
    binding: LinkBinding | None,
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    request_timeout_s: float,
    max_connections: int,
) -> tuple[aiohttp.ClientSession, PinningConnector]:
    """An aiohttp session whose every connection is pinned, bound to the link and bounded in
    time; no cookies, no proxies from the environment, no decompression (bodies stay bounded).
    OSError at once if `binding` cannot be applied, ValueError for a timeout that is not
    positive or fewer than one connection. Shared by the uplink and the fleet fetch."""
    if min(connect_timeout_s, read_timeout_s, request_timeout_s) <= 0:
        raise ValueError("timeouts must be positive")
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    if binding is not None:
        probe_binding(binding)
    connector = PinningConnector(
        tls.pins,
        tls.validity_time,
        ssl=client_ssl_context(tls),
        limit=max_connections,
        socket_factory=None if binding is None else link_socket_factory(binding),
    )
    timeout = aiohttp.ClientTimeout(
        total=request_timeout_s,
        # Waiting for a free pooled connection is bounded by `total`; the new connection's
        # TCP connect and TLS handshake (both inside aiohttp's sock_connect) by this.
        sock_connect=connect_timeout_s,
        # Reset by every byte received: cuts a stalled server; a trickling one hits `total`.
        sock_read=min(read_timeout_s, request_timeout_s),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
        trust_env=False,
        read_bufsize=READ_BUFFER_BYTES,
    )
    return session, connector
