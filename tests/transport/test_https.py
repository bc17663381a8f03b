"""The HTTPS transport against real TLS servers on loopback with the test PKI
(tests/transport/https_servers.py): round trips, link binding and the pure helpers. Wrong
certificates: test_https_pinning.py; broken and hostile servers: test_https_hostile.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from config.fleet_fetch import FleetLink
from tests.tls_helpers import SERVER_NAME
from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from tests.transport.https_servers import (
    GUARD_S,
    HEAD_FILE,
    HELLO,
    PATCH_HELLO,
    EchoServer,
    backup_cert,
)
from transport.binding import LinkBinding
from transport.checksum import SUPPORTED_ALGORITHMS
from transport.errors import PinMismatch, TransientNetworkError
from transport.http import BodySlice, HttpRequest
from transport.https import HttpsTransport, outgoing_headers, request_url, translate_error

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
