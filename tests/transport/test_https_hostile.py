"""The HTTPS transport against broken and hostile servers on loopback (cuts, endless and
oversized bodies, garbage, slow loris, silence, handshake black holes, refused connections):
each a clear error by fault and a bounded wait (tests/transport/https_servers.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from tests.transport.https_servers import (
    GUARD_S,
    HELLO,
    PATCH_HELLO,
    Behaviour,
    RawTlsServer,
    answer_garbage,
    close_after_head,
    close_mid_body,
    declare_huge_body,
    endless_body_until_eof,
    endless_chunked_body,
    reset_after_head,
    server_context,
    stall,
    trickle_body,
    trickle_head,
)
from transport.errors import HostileServer, TransientNetworkError
from transport.http import MAX_RESPONSE_BODY_BYTES
from transport.https import HttpsTransport

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
