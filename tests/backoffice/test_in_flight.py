"""Requests in flight per box: a cap per box, and the cut of a certificate's requests at unpair.

The book (backoffice/in_flight.py) directly; then the HTTPS listener on 127.0.0.1 with real
mutual TLS, a real pairing ledger and its gate: a box over its cap gets 429 while another box is
served; a PATCH streaming when its box is unpaired (the ledger's `unpair`, as `mvb-admin unpair`
does it) is cut with 403 and keeps none of its bytes.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from backoffice.in_flight import InFlight, cut_withdrawn, cut_withdrawn_periodically
from backoffice.pairing import unpair
from backoffice.pairing_ledger import PairedBox, PairingLedger
from backoffice.pairing_service import LedgerGate, LedgerStore
from backoffice.pki import issue_client_cert, load_issued
from backoffice.server import RunningServer, start_https_server
from backoffice.tus_app import TusApp
from backoffice.upload_store import UploadStore
from tests.backoffice.test_server_https import (
    DATA,
    OFFSET_STREAM,
    STEP_TIMEOUT_S,
    TUS,
    box_session,
    context_with,
    metadata,
    read_until_closed,
    request_head,
)
from tests.tls_helpers import SERVER_NAME, TestPki

# -- the book ---------------------------------------------------------------------------------


def test_a_box_gets_at_most_its_cap_and_others_are_not_counted() -> None:
    book = InFlight(max_per_client=2)
    first, second = book.enter("A", 1), book.enter("A", 1)
    assert first is not None
    assert second is not None
    assert book.enter("A", 1) is None
    assert book.enter("B", 2) is not None
    book.leave(first)
    book.leave(first)  # idempotent
    assert book.count("A") == 1
    assert book.enter("A", 1) is not None


def test_a_cut_reaches_every_request_of_the_serial_once() -> None:
    book = InFlight(max_per_client=4)
    cut_calls: list[str] = []
    tickets = [book.enter("A", 7) for _ in range(2)]
    other = book.enter("A", 8)  # the same box's new certificate (a re-pair) is not cut
    for name, ticket in zip("xy", tickets, strict=True):
        assert ticket is not None
        ticket.cutter = lambda name=name: cut_calls.append(name)
    assert book.cut(7) == 2
    assert book.cut(7) == 0
    assert sorted(cut_calls) == ["x", "y"]
    assert all(t is not None and t.withdrawn() for t in tickets)
    assert other is not None
    assert not other.withdrawn()


async def test_the_periodic_check_cuts_what_the_ledger_denies() -> None:
    book = InFlight()
    ticket = book.enter("A", 7)
    assert ticket is not None
    asked: list[frozenset[int]] = []

    async def withdrawn_among(serials: frozenset[int]) -> frozenset[int]:
        asked.append(serials)
        return serials & {7}

    assert await cut_withdrawn(book, withdrawn_among) == 1
    assert asked == [frozenset({7})]
    book.leave(ticket)
    assert await cut_withdrawn(book, withdrawn_among) == 0  # nothing in flight: no question
    assert len(asked) == 1


# -- on a real listener -----------------------------------------------------------------------

BOX_A = "MVB-CAP-A"
BOX_B = "MVB-CAP-B"


def box_certificate(pki: TestPki, tmp_path: Path, box_id: str) -> tuple[Path, Path, int]:
    ca = load_issued(pki.ca_cert, pki.ca_key)
    issued = issue_client_cert(ca, box_id)
    cert, key = issued.write(tmp_path / "boxes", box_id)
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    return cert, key, serial


@pytest.fixture
async def listener(pki: TestPki, tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Path]]:
    store = UploadStore.open(tmp_path / "uploads", reserve_bytes=0)
    ledger = LedgerStore(tmp_path / "pairing")
    gate = LedgerGate(ledger)
    book = InFlight(max_per_client=2)
    server = await start_https_server(
        TusApp(store, max_upload_bytes=len(DATA), max_chunk_bytes=len(DATA)),
        host="127.0.0.1",
        port=0,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        client_ca_file=pki.ca_cert,
        client_gate=gate,
        in_flight=book,
        pace_window_s=10.0,
    )
    watcher = asyncio.create_task(cut_withdrawn_periodically(book, gate.withdrawn_among, 0.05))
    try:
        yield server, tmp_path
    finally:
        watcher.cancel()
        await server.close()
        store.close()


async def open_patch(
    port: int, context: ssl.SSLContext, location: str, first_bytes: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=SERVER_NAME
    )
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_STREAM}
    headers["Content-Length"] = str(len(DATA))
    writer.write(request_head("PATCH", location, headers) + first_bytes)
    await writer.drain()
    return reader, writer


async def create_upload(session: aiohttp.ClientSession, port: int, file_id: str) -> str:
    headers = {**TUS, "Upload-Length": str(len(DATA)), "Upload-Metadata": metadata(file_id)}
    async with session.post(f"https://127.0.0.1:{port}/files/", headers=headers) as answer:
        assert answer.status == 201
        location: str = answer.headers["Location"]
        return location


async def test_a_box_over_its_cap_is_told_to_wait_while_another_is_served(
    pki: TestPki, listener: tuple[RunningServer, Path]
) -> None:
    server, tmp_path = listener
    cert_a, key_a, _ = box_certificate(pki, tmp_path, BOX_A)
    cert_b, key_b, _ = box_certificate(pki, tmp_path, BOX_B)
    context_a, context_b = context_with(pki, cert_a, key_a), context_with(pki, cert_b, key_b)
    async with box_session(context_a) as session:
        locations = [await create_upload(session, server.port, f"a-{n}") for n in range(3)]
    async with asyncio.timeout(STEP_TIMEOUT_S):
        held = [await open_patch(server.port, context_a, loc, DATA[:10]) for loc in locations[:2]]
        async with box_session(context_a) as session:
            # Both slots held by slow bodies: the third request of A waits, B does not.
            deadline_s = time.monotonic() + STEP_TIMEOUT_S
            while True:
                async with session.options(f"https://127.0.0.1:{server.port}/files/") as over:
                    if over.status == 429:
                        break
                assert time.monotonic() < deadline_s, "the cap never filled"
                await asyncio.sleep(0.05)
            assert over.headers["Retry-After"] == "5"
        async with (
            box_session(context_b) as session,
            session.options(f"https://127.0.0.1:{server.port}/files/") as other,
        ):
            assert other.status == 204
    for _, writer in held:
        writer.close()


async def test_a_patch_streaming_when_its_box_is_unpaired_is_cut(
    pki: TestPki, listener: tuple[RunningServer, Path]
) -> None:
    server, tmp_path = listener
    cert, key, serial = box_certificate(pki, tmp_path, BOX_A)
    ledger = LedgerStore(tmp_path / "pairing")
    now_s = time.time()
    paired = PairedBox(BOX_A, serial, now_s, now_s + 86_400)
    ledger.transact(lambda old: (replace(old, paired=(paired,)), None))
    context = context_with(pki, cert, key)
    async with box_session(context) as session:
        location = await create_upload(session, server.port, "a-cut")
    reader, writer = await open_patch(server.port, context, location, DATA[:1000])

    def withdraw(old: PairingLedger) -> tuple[PairingLedger, None]:
        return unpair(old, BOX_A, time.time()), None

    ledger.transact(withdraw)  # what `mvb-admin unpair` does, from another process

    async with asyncio.timeout(STEP_TIMEOUT_S):
        answer = await read_until_closed(reader)  # answered and closed, the body unfinished
    writer.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"Mvb-Stored-Sha256" not in answer
    upload_id = location.rsplit("/", 1)[1]
    assert (tmp_path / "uploads" / "uploads" / upload_id / "data").read_bytes() == b""
