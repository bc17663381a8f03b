"""Who learns the box's identity before the box has checked the server's pin (issue 13, item 6).

The box's client certificate names it (its subject is the device serial). A *witness* server
asks for a client certificate, as the back office does, and records for every connection the
certificate the client sent, or none. The box connects with its real transports:

- HTTP/3 (aioquic): the pin is checked inside the handshake (transport/quic_peer.py), so a
  server with a certificate from our CA for the right name but an unpinned key (a stolen CA
  key, an impostor) never receives the box's certificate. (The check after the handshake kept
  it in too, but only because aioquic's asyncio glue handles HandshakeCompleted before it
  transmits the client's last flight; the exchange without an event loop at the end shows that
  without the hook the certificate goes out.)
- HTTPS (OpenSSL through Python's ssl): TLS 1.3 only, so the certificate never travels in clear
  (a TLS 1.2 server is refused), and a server whose chain or name fails gets nothing; but Python
  has no verify callback, so the impostor with a valid chain *does* receive the certificate
  before the box checks the pin and drops it. That limit is documented (docs/uplink.md); the
  last test here pins it down, so the day it changes it is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent
from cryptography import x509

from tests.tls_helpers import TestPki
from transport.errors import PinMismatch, TransientNetworkError, TransportError
from transport.h3_io import H3Transport, client_configuration
from transport.http import HttpRequest
from transport.https import HttpsTransport
from transport.quic_peer import (
    check_server_before_client_certificate,
    peer_certificate_der,
    request_client_certificate,
)

BOX_SERIAL = "MVB-TEST-0001"  # the CN of tests/tls_helpers.py's client certificate
DEADLINE_S = 10.0
OPTIONS = HttpRequest("OPTIONS", "/files/")

Seen = list["bytes | None"]


def subject_cn(der: bytes) -> str:
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        x509.NameOID.COMMON_NAME
    )
    return str(names[0].value)


async def until_seen(seen: Seen, count: int = 1) -> None:
    """Poll until the witness recorded `count` connections (a deadline, not a timed claim)."""
    deadline = time.monotonic() + DEADLINE_S
    while len(seen) < count:
        assert time.monotonic() < deadline, "the witness saw no connection end"
        await asyncio.sleep(0.01)


# --- HTTP/3 --------------------------------------------------------------------------------------


class QuicWitness(QuicConnectionProtocol):
    """Asks for the client's certificate (as backoffice/h3_server.py does) and records, once per
    connection, the certificate it received: at the end of the handshake, or at the close."""

    def __init__(self, quic: QuicConnection, stream_handler: Any = None, *, seen: Seen) -> None:
        super().__init__(quic, stream_handler)
        request_client_certificate(quic)
        self._seen = seen
        self._recorded = False

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted | ConnectionTerminated) and not self._recorded:
            self._recorded = True
            self._seen.append(peer_certificate_der(self._quic))


@contextlib.asynccontextmanager
async def quic_witness(cert: Path, key: Path) -> AsyncIterator[tuple[int, Seen]]:
    seen: Seen = []
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(cert, key)

    def protocol(quic: QuicConnection, stream_handler: Any = None) -> QuicWitness:
        return QuicWitness(quic, stream_handler, seen=seen)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: QuicServer(configuration=configuration, create_protocol=protocol),
        local_addr=("127.0.0.1", 0),
    )
    try:
        yield transport.get_extra_info("sockname")[1], seen
    finally:
        transport.close()


async def test_h3_an_unpinned_server_with_a_valid_chain_never_receives_the_box_certificate(
    pki: TestPki,
) -> None:
    async with quic_witness(pki.impostor_server_cert, pki.impostor_server_key) as (port, seen):
        with pytest.raises(PinMismatch, match="is not pinned"):
            await H3Transport.connect("127.0.0.1", port, pki.client_settings())
        await until_seen(seen)
    assert seen == [None]


async def test_h3_the_pinned_server_receives_the_box_certificate(pki: TestPki) -> None:
    """The witness works: the genuine back office key gets the certificate it asks for."""
    async with quic_witness(pki.server_cert, pki.server_key) as (port, seen):
        transport = await H3Transport.connect("127.0.0.1", port, pki.client_settings())
        await transport.aclose()
        await until_seen(seen)
    [certificate] = seen
    assert certificate is not None
    assert subject_cn(certificate) == BOX_SERIAL


# --- HTTPS ---------------------------------------------------------------------------------------


class TlsWitness:
    """A TLS server in a thread that asks for a client certificate (optional, our CA) and records
    per connection the one it received, or None when the handshake ended without one. It closes
    every connection right after the handshake."""

    def __init__(self, cert: Path, key: Path, ca: Path, maximum: ssl.TLSVersion | None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.load_verify_locations(ca)
        self.context.verify_mode = ssl.CERT_OPTIONAL
        self.context.set_alpn_protocols(["http/1.1"])
        if maximum is not None:
            self.context.maximum_version = maximum
        self.seen: Seen = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-witness", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(DEADLINE_S)
            # The TLS socket takes the descriptor over: closing it is what ends the connection.
            tls = self.context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
            with contextlib.closing(tls):
                try:
                    tls.do_handshake()
                except (ssl.SSLError, OSError):
                    self.seen.append(None)
                    continue
                self.seen.append(tls.getpeercert(binary_form=True))

    def __enter__(self) -> TlsWitness:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()


@contextlib.contextmanager
def tls_witness(
    pki: TestPki, cert: Path, key: Path, maximum: ssl.TLSVersion | None = None
) -> Iterator[TlsWitness]:
    with TlsWitness(cert, key, pki.ca_cert, maximum) as witness:
        yield witness


async def https_request(pki: TestPki, port: int) -> None:
    transport = await HttpsTransport.connect("127.0.0.1", port, pki.client_settings())
    try:
        await transport.request(OPTIONS, None)
    finally:
        await transport.aclose()


async def test_https_the_pinned_server_receives_the_box_certificate(pki: TestPki) -> None:
    with tls_witness(pki, pki.server_cert, pki.server_key) as witness:
        with pytest.raises(TransientNetworkError):  # the witness closes after the handshake
            await https_request(pki, witness.port)
        await until_seen(witness.seen)
    assert witness.seen  # (aiohttp may have tried twice: every connection got the certificate)
    for certificate in witness.seen:
        assert certificate is not None
        assert subject_cn(certificate) == BOX_SERIAL


async def test_https_a_tls_1_2_server_is_refused_before_the_certificate_would_go_in_clear(
    pki: TestPki,
) -> None:
    with tls_witness(pki, pki.server_cert, pki.server_key, ssl.TLSVersion.TLSv1_2) as witness:
        with pytest.raises(TransportError):
            await https_request(pki, witness.port)
        await until_seen(witness.seen)
    assert witness.seen == [None]


async def test_https_a_server_whose_chain_fails_never_receives_the_box_certificate(
    pki: TestPki,
) -> None:
    with tls_witness(pki, pki.rogue_server_cert, pki.rogue_server_key) as witness:
        with pytest.raises(PinMismatch, match="chain failed verification"):
            await https_request(pki, witness.port)
        await until_seen(witness.seen)
    assert witness.seen == [None]


async def test_https_limit_an_unpinned_key_with_a_valid_chain_sees_the_certificate_then_is_dropped(
    pki: TestPki,
) -> None:
    """Documented limit (docs/uplink.md): Python's ssl gives no hook between the server's
    certificate and the client's, so the pin is checked after the handshake. The box drops the
    connection before a request byte; the certificate, though, was already sent."""
    with tls_witness(pki, pki.impostor_server_cert, pki.impostor_server_key) as witness:
        with pytest.raises(PinMismatch, match="is not pinned"):
            await https_request(pki, witness.port)
        await until_seen(witness.seen)
    [certificate] = witness.seen
    assert certificate is not None
    assert subject_cn(certificate) == BOX_SERIAL


# --- the hook itself, with no event loop ----------------------------------------------------------


def handshake_without_handling_events(
    pki: TestPki, *, hooked: bool
) -> tuple[QuicConnection, QuicConnection]:
    """A box client and an impostor server (our CA, unpinned key) exchanging datagrams until
    neither has more, sending each reply at once, before any event is handled: what a glue that
    transmits before it reacts to HandshakeCompleted would do. Returns (client, server)."""
    client = QuicConnection(configuration=client_configuration(pki.client_settings(), 30.0))
    if hooked:
        check_server_before_client_certificate(client, pki.client_settings().pins.check)
    server_configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    server_configuration.load_cert_chain(pki.impostor_server_cert, pki.impostor_server_key)
    server = QuicConnection(
        configuration=server_configuration,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    request_client_certificate(server)
    client_address, server_address = ("192.0.2.1", 4433), ("192.0.2.2", 443)
    client.connect(server_address, now=0.0)
    for _ in range(20):  # a handshake takes a few round trips; 20 bounds a broken one
        to_server = client.datagrams_to_send(now=0.0)
        for data, _ in to_server:
            server.receive_datagram(data, client_address, now=0.0)
        to_client = server.datagrams_to_send(now=0.0)
        for data, _ in to_client:
            client.receive_datagram(data, server_address, now=0.0)
        if not to_server and not to_client:
            break
    return client, server


def test_the_hook_keeps_the_certificate_out_of_the_handshake_itself(pki: TestPki) -> None:
    _, server = handshake_without_handling_events(pki, hooked=True)
    assert peer_certificate_der(server) is None


def test_without_the_hook_the_same_exchange_hands_the_impostor_the_certificate(
    pki: TestPki,
) -> None:
    """Why the hook: the check after the handshake holds only while the glue handles
    HandshakeCompleted before it transmits (aioquic's QuicConnectionProtocol does)."""
    _, server = handshake_without_handling_events(pki, hooked=False)
    certificate = peer_certificate_der(server)
    assert certificate is not None
    assert subject_cn(certificate) == BOX_SERIAL
