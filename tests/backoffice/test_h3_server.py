"""The back office's HTTP/3 shell over real QUIC on 127.0.0.1 with the test PKI.

Clients: the box's own H3Transport, and bare aioquic clients for what the box never does (no
client certificate, huge header blocks). The handler is a recorder (tests/transport/test_h3.py)
or the real TusApp.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
from pathlib import Path

import pytest
from aioquic.h3.connection import ErrorCode, H3Connection
from aioquic.tls import AlertDescription
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import Store

from backoffice.h3_server import (
    BODY_BUFFER_HIGH_BYTES,
    MAX_CONCURRENT_REQUESTS,
    ClientCertificateRejected,
    client_id_of_certificate,
    response_header_fields,
)
from backoffice.tus_app import IncomingRequest, OutgoingResponse, TusApp
from backoffice.upload_store import UploadStore
from tests.tls_helpers import SERVER_NAME
from tests.tls_helpers import TestPki as Pki  # aliased: pytest would try to collect Test*
from tests.transport.test_h3 import (
    GUARD_S,
    HEAD_FILE,
    TUS,
    RecordingHandler,
    connected,
    patch_request,
    raw_client,
    raw_client_configuration,
    serving,
)
from transport.errors import PinMismatch, TransientNetworkError
from transport.h3 import certificate_error_code
from transport.h3_io import H3Transport
from transport.http import HttpRequest

RELEASE_MARGIN_BYTES = 256 * 1024
"""What one datagram may add beyond the backpressure bound: its payload (at most 64 KiB) or, if
it fills a gap, the out-of-order data aioquic held. Measured overshoot is about 1 KiB; the body
sent is 6 MiB, so an unbounded buffer fails the test by far."""


def der_of(pem_file: Path) -> bytes:
    return x509.load_pem_x509_certificate(pem_file.read_bytes()).public_bytes(Encoding.DER)


def request_fields(path: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", SERVER_NAME.encode()),
        (b":path", path),
        *extra,
    ]


# --- mutual TLS -------------------------------------------------------------------------------


async def test_client_without_certificate_is_refused_before_any_request(pki: Pki) -> None:
    handler = RecordingHandler()
    async with serving(handler, pki) as server:
        async with raw_client(server.port, raw_client_configuration(pki)) as (quic, protocol):
            await asyncio.wait_for(protocol.wait_connected(), GUARD_S)  # our half is done
            h3 = H3Connection(quic)  # and a request goes out at once
            h3.send_headers(quic.get_next_available_stream_id(), request_fields(b"/files/"), True)
            protocol.transmit()
            ended = await asyncio.wait_for(protocol.terminated, GUARD_S)
        assert server.stats.connections_refused == 1
    assert ended.error_code == certificate_error_code(AlertDescription.certificate_required)
    assert handler.requests == []


async def test_client_certificate_from_a_rogue_ca_is_refused(pki: Pki) -> None:
    rogue = dataclasses.replace(
        pki.client_settings(),
        client_cert_file=pki.rogue_client_cert,
        client_key_file=pki.rogue_client_key,
    )
    handler = RecordingHandler()
    async with serving(handler, pki) as server:
        with pytest.raises(PinMismatch, match="refused this box's client certificate"):
            await asyncio.wait_for(H3Transport.connect("127.0.0.1", server.port, rogue), GUARD_S)
        assert server.stats.connections_refused == 1
    assert handler.requests == []


def test_only_box_certificates_from_the_ca_name_a_client(pki: Pki) -> None:
    cas = Store([x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())])
    assert client_id_of_certificate(der_of(pki.client_cert), cas) == "MVB-TEST-0001"
    rejected = [
        (None, AlertDescription.certificate_required),
        (der_of(pki.rogue_client_cert), AlertDescription.bad_certificate),  # another CA
        (der_of(pki.server_cert), AlertDescription.bad_certificate),  # our CA, serverAuth only
    ]
    for der, alert in rejected:
        with pytest.raises(ClientCertificateRejected) as caught:
            client_id_of_certificate(der, cas)
        assert caught.value.alert == alert


# --- bounds -----------------------------------------------------------------------------------


async def test_slow_handler_applies_backpressure_and_the_body_arrives_whole(pki: Pki) -> None:
    body = hashlib.shake_256(b"slow").digest(6 * 1024 * 1024)
    handler = RecordingHandler(hold=True)
    async with serving(handler, pki) as server, connected(server.port, pki) as transport:
        request = asyncio.create_task(transport.request(patch_request(body), body))
        async with asyncio.timeout(GUARD_S):
            while server.stats.datagrams_dropped_for_backpressure == 0:
                await asyncio.sleep(0.005)  # polls a condition; no fixed delay is relied on
        handler.release.set()
        response = await asyncio.wait_for(request, GUARD_S)
        peak_bytes = server.stats.peak_buffered_body_bytes
    assert response.status == 204
    assert handler.bodies == [body]
    assert BODY_BUFFER_HIGH_BYTES <= peak_bytes <= BODY_BUFFER_HIGH_BYTES + RELEASE_MARGIN_BYTES


async def test_streams_beyond_the_concurrency_bound_are_refused_and_retriable(pki: Pki) -> None:
    handler = RecordingHandler(hold=True)
    async with serving(handler, pki) as server, connected(server.port, pki) as transport:
        held = [
            asyncio.create_task(transport.request(patch_request(b"abc"), b"abc"))
            for _ in range(MAX_CONCURRENT_REQUESTS)
        ]
        await asyncio.wait_for(handler.wait_for_requests(MAX_CONCURRENT_REQUESTS), GUARD_S)
        with pytest.raises(TransientNetworkError, match="reset the request stream"):
            await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
        assert server.stats.streams_refused == 1
        handler.release.set()
        answers = await asyncio.wait_for(asyncio.gather(*held), GUARD_S)
        retried = await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
    assert [answer.status for answer in answers] == [204] * MAX_CONCURRENT_REQUESTS
    assert retried.status == 204
    assert len(handler.requests) == MAX_CONCURRENT_REQUESTS + 1  # the refused one never came


async def test_header_block_beyond_the_frame_bound_closes_the_connection(pki: Pki) -> None:
    noise = base64.b64encode(hashlib.shake_256(b"h").digest(30 * 1024)).decode()
    request = HttpRequest("HEAD", "/files/abc", headers=(*TUS, ("X-Noise", noise)))
    handler = RecordingHandler()
    async with serving(handler, pki) as server, connected(server.port, pki) as transport:
        with pytest.raises(TransientNetworkError, match=f"{ErrorCode.H3_EXCESSIVE_LOAD:#x}"):
            await asyncio.wait_for(transport.request(request, None), GUARD_S)
    assert handler.requests == []


async def test_header_block_that_decodes_too_large_is_431(pki: Pki) -> None:
    # 20 KiB of one letter compresses (Huffman) under the frame bound but decodes over it.
    request = HttpRequest("HEAD", "/files/abc", headers=(*TUS, ("X-Long", "a" * 20 * 1024)))
    handler = RecordingHandler()
    async with serving(handler, pki) as server, connected(server.port, pki) as transport:
        response = await asyncio.wait_for(transport.request(request, None), GUARD_S)
        after = await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
    assert response.status == 431
    assert after.status == 204
    assert len(handler.requests) == 1  # only the second one


async def test_handler_failure_is_500_and_the_connection_lives_on(pki: Pki) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        async def handle(self, request: IncomingRequest) -> OutgoingResponse:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("a handler bug")
            return OutgoingResponse(204, {"Connection": "close"})

    async with serving(Flaky(), pki) as server, connected(server.port, pki) as transport:
        failed = await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
        fine = await asyncio.wait_for(transport.request(HEAD_FILE, None), GUARD_S)
    assert (failed.status, fine.status) == (500, 204)
    assert "connection" not in fine.headers  # hop-by-hop fields are not sent over HTTP/3


def test_response_header_fields_drop_hop_by_hop_and_add_content_length() -> None:
    fields = response_header_fields(
        460, {"Tus-Resumable": "1.0.0", "Transfer-Encoding": "chunked"}, b"mismatch\n"
    )
    assert fields == [
        (b":status", b"460"),
        (b"tus-resumable", b"1.0.0"),
        (b"content-length", b"9"),
    ]


# --- the real handler -------------------------------------------------------------------------


async def test_tus_upload_through_the_real_handler(pki: Pki, tmp_path: Path) -> None:
    content = hashlib.shake_256(b"tus").digest(2 * 1024 * 1024 + 7)
    sha256_hex = hashlib.sha256(content).hexdigest()
    metadata = ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}"
        for key, value in (("file_id", "clip-0001"), ("sha256", sha256_hex))
    )
    create = HttpRequest(
        "POST",
        "/files/",
        headers=(*TUS, ("Upload-Length", str(len(content))), ("Upload-Metadata", metadata)),
    )
    store = UploadStore.open(tmp_path / "store", reserve_bytes=0)
    try:
        app = TusApp(store, max_upload_bytes=1 << 30, max_chunk_bytes=16 << 20)
        async with serving(app, pki) as server, connected(server.port, pki) as transport:
            created = await asyncio.wait_for(transport.request(create, None), GUARD_S)
            location = created.headers["location"]
            patch = HttpRequest(
                "PATCH",
                location,
                headers=(
                    *TUS,
                    ("Upload-Offset", "0"),
                    ("Content-Type", "application/offset+octet-stream"),
                ),
                body=patch_request(content, "sha256").body,
            )
            patched = await asyncio.wait_for(transport.request(patch, content), GUARD_S)
            head = await asyncio.wait_for(
                transport.request(HttpRequest("HEAD", location, headers=TUS), None), GUARD_S
            )
    finally:
        store.close()
    assert created.status == 201
    assert patched.status == 204
    assert head.headers["upload-offset"] == str(len(content))
    assert head.headers["mvb-stored-sha256"] == sha256_hex
