"""The HTTP/3 listener asks the client gate before every request, as the HTTPS one does: an
unpaired box's certificate stops working on both at once (docs/pairing.md); it shares the
per-box book of requests in flight (backoffice/in_flight.py): the cap, and the cut."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509

from backoffice.client_gate import ClientDenied, GateUnavailable
from backoffice.h3_server import start_h3_server
from backoffice.in_flight import InFlight
from backoffice.tus_app import IncomingRequest, OutgoingResponse
from tests.tls_helpers import TestPki
from transport.h3_io import H3Transport
from transport.http import BodySlice, HttpRequest


class Answer204:
    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        self.requests += 1
        return OutgoingResponse(204, {})


class Gate:
    def __init__(self) -> None:
        self.denied: set[int] = set()
        self.broken = False
        self.asked: list[int] = []

    async def __call__(self, serial: int) -> None:
        self.asked.append(serial)
        if self.broken:
            raise GateUnavailable("ledger unreadable")
        if serial in self.denied:
            raise ClientDenied("withdrawn")


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


@pytest.mark.parametrize(("deny", "broken", "status"), [(False, False, 204), (True, False, 403),
                                                        (False, True, 503)])  # fmt: skip
async def test_the_gate_decides_every_http3_request(
    pki: TestPki, deny: bool, broken: bool, status: int
) -> None:
    handler, gate = Answer204(), Gate()
    server = await start_h3_server(
        handler,
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        client_ca_file=pki.ca_cert,
        client_gate=gate,
    )
    try:
        transport = await H3Transport.connect("127.0.0.1", server.port, pki.client_settings())
        try:
            first = await transport.request(HttpRequest("OPTIONS", "/files/"), None)
            if deny:
                gate.denied.add(serial_of(pki.client_cert))
            gate.broken = broken
            second = await transport.request(HttpRequest("OPTIONS", "/files/"), None)
        finally:
            await transport.aclose()
    finally:
        await server.close()
    assert first.status == 204
    assert second.status == status, "decided per request, on the same connection"
    assert gate.asked == [serial_of(pki.client_cert)] * 2
    assert handler.requests == (2 if status == 204 else 1)


class HeldUntilReleased:
    """A handler that reads the whole body, but only once released: a request stays in flight
    for as long as a test needs."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cut_seen: list[bool] = []

    async def handle(self, request: IncomingRequest) -> OutgoingResponse:
        self.entered.set()
        await self.release.wait()
        async for _piece in request.body:
            pass
        self.cut_seen.append(request.withdrawn())
        return OutgoingResponse(403 if request.withdrawn() else 204, {})


async def test_http3_shares_the_per_box_cap_and_cuts_a_withdrawn_box_s_request(
    pki: TestPki,
) -> None:
    handler, book = HeldUntilReleased(), InFlight(max_per_client=1)
    server = await start_h3_server(
        handler,
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        client_ca_file=pki.ca_cert,
        in_flight=book,
    )
    try:
        first = await H3Transport.connect("127.0.0.1", server.port, pki.client_settings())
        second = await H3Transport.connect("127.0.0.1", server.port, pki.client_settings())
        try:
            body = b"x" * 1000
            patch = HttpRequest("PATCH", "/files/x", (), BodySlice(0, len(body)))
            held = asyncio.create_task(first.request(patch, body))
            async with asyncio.timeout(15):
                await handler.entered.wait()
                over = await second.request(HttpRequest("OPTIONS", "/files/"), None)
                assert book.cut(serial_of(pki.client_cert)) == 1  # what an unpair does
                handler.release.set()
                cut = await held
        finally:
            await first.aclose()
            await second.aclose()
    finally:
        await server.close()
    assert over.status == 429  # one in flight on another connection already: the box's cap
    assert over.headers["retry-after"] == "5"
    assert cut.status == 403
    assert handler.cut_seen == [True]
    assert book.count("MVB-TEST-0001") == 0  # the ticket left with its answer
