"""Fixtures of the transport tests: the HTTPS transport's real TLS servers on loopback
(tests/transport/https_servers.py) and the transports opened to them, each closed after its test.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from tests.transport.https_servers import (
    SEEN,
    Behaviour,
    EchoServer,
    RawTlsServer,
    SeenRequest,
    echo_handler,
    server_context,
)
from transport.https import HttpsTransport
from transport.tls import ClientTlsSettings


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
