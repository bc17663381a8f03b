"""The HTTPS transport sends zero request bytes to a wrong certificate: the pins, the chain and
the host name, checked on every new connection (real TLS servers on loopback that record every
application byte: tests/transport/https_servers.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from tests.transport.https_servers import (
    GUARD_S,
    HELLO,
    PATCH_HELLO,
    RawTlsServer,
    answer_and_close,
    assert_nothing_received,
    server_context,
)
from transport.errors import PinMismatch
from transport.https import HttpsTransport

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
