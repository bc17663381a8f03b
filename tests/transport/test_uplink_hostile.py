"""A hostile or broken back office cannot corrupt or delete local evidence, nor stop the uplink.

The hostile server is a real aiohttp HTTPS server with mutual TLS and the pinned key (a
compromised or buggy back office, not a middlebox): pinning cannot help here, the box's own
checks must.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from backoffice.server import server_ssl_context
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from tests.peers.tus_node_peer import tus_node_server
from tests.tls_helpers import TestPki
from tests.transport.uplink_rig import Rig, record_evidence, uplink_rig, wifi
from transport.links import HOLD_DOWN_MAX_S, HOLD_DOWN_MIN_S

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TUS = {"Tus-Resumable": "1.0.0"}


async def options(_request: web.Request) -> web.Response:
    return web.Response(
        status=204, headers={**TUS, "Tus-Version": "1.0.0", "Tus-Extension": "creation"}
    )


async def create(_request: web.Request) -> web.Response:
    return web.Response(status=201, headers={**TUS, "Location": "/files/x"})


async def head_zero(_request: web.Request) -> web.Response:
    return web.Response(status=200, headers={**TUS, "Upload-Offset": "0"})


async def patch_beyond(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=204, headers={**TUS, "Upload-Offset": "999999999"})


async def patch_500(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=500, text="boom")


async def patch_endless(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(status=204, headers=TUS)
    response.enable_chunked_encoding()
    await response.prepare(request)
    while True:
        await response.write(b"x" * 65536)


async def patch_slow_loris(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(status=200, headers=TUS)
    response.enable_chunked_encoding()
    await response.prepare(request)
    while True:
        await response.write(b"x")
        await asyncio.sleep(1)


async def patch_wrong_attestation(request: web.Request) -> web.Response:
    body = await request.read()
    offset = int(request.headers["Upload-Offset"]) + len(body)
    return web.Response(
        status=204, headers={**TUS, "Upload-Offset": str(offset), "Mvb-Stored-Sha256": "0" * 64}
    )


async def hostile_server(pki: TestPki, patch: Handler) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("OPTIONS", "/files/", options)
    app.router.add_post("/files/", create)
    app.router.add_route("HEAD", "/files/x", head_zero)
    app.router.add_patch("/files/x", patch)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    context = server_ssl_context(pki.server_cert, pki.server_key, pki.ca_cert)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def evidence_intact(rig: Rig, sha256_by_file: dict[str, str]) -> None:
    for record in rig.records():
        assert record.state is FileState.SEALED
        path = rig.store.layout.sealed_path(record.recording_id, record.file_id)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256_by_file[record.file_id]


@pytest.mark.parametrize(
    ("patch", "blocked"),
    [
        (patch_beyond, True),  # an impossible offset: HostileServer, the file waits for a person
        (patch_500, False),  # failing: retried with backoff, never blocked
        (patch_endless, True),  # an endless body: bounded read, HostileServer
        (patch_slow_loris, False),  # trickling: cut by the timeouts, retried later
        (patch_wrong_attestation, True),  # attests other bytes: integrity, never deleted
    ],
)
async def test_a_hostile_back_office_cannot_hurt_local_evidence(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki, patch: Handler, blocked: bool
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        record_evidence(rig.store, 300_000)
        sha256_by_file = {r.file_id: str(r.sha256_hex) for r in rig.records()}
        rig.connector.request_timeout_s = 0.5  # the slow loris is cut off sooner
        async for port in hostile_server(pki, patch):
            rig.proxies["wifi"].upstream_port = port
            for _ in range(3):
                await rig.settle()
                rig.clock.advance(HOLD_DOWN_MAX_S + 1)
            evidence_intact(rig, sha256_by_file)
            [file_id] = sha256_by_file
            assert (rig.service.ledger.file(file_id).blocked_reason is not None) is blocked
            assert any(k.startswith("uplink_file_") for k in rig.store.alarms.codes()) is blocked
        # the service is still working: the real back office takes the file once a person
        # released it (`mvb uploads retry`); a file that was only waiting needs nobody
        rig.proxies["wifi"].upstream_port = rig.back_office.port
        if blocked:
            released = await rig.service.release([file_id], "local")
            assert released == [{"file_id": file_id, "was_blocked": True}]
            assert not any(k.startswith("uplink_file_") for k in rig.store.alarms.codes())
        rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        for _ in range(3):
            await rig.settle()
            rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        assert {r.state for r in rig.records()} == {FileState.DELETED}


async def test_a_plain_tus_server_gets_the_file_but_the_box_keeps_it(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        record_evidence(rig.store, 500_000)
        [record] = rig.records()
        with tus_node_server(tmp_path / "node", pki) as peer:
            rig.proxies["wifi"].upstream_port = peer.port
            await rig.settle()
            [stored] = peer.stored_files()
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == record.sha256_hex
        assert rig.store.catalog.get(record.file_id).state is FileState.SEALED  # type: ignore[union-attr]
        status = rig.service.status()
        assert status["uploaded_unattested"]["files"] == 1
        assert "kept on the card until retention" in status["uploaded_unattested"]["note"]
        await rig.settle()
        assert len(peer.stored_files()) == 1, "an unattested upload is not sent again"


async def test_an_unattested_file_is_asked_again_and_goes_where_it_is_attested(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """A plain tus server keeps the file; the box asks it again (HEAD) on a backoff, and at once
    when its link comes back at a back office that attests (Mvb-Attestation on OPTIONS): there
    the old upload path is unknown (404), so the file is uploaded again, attested, deleted."""
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        record_evidence(rig.store, 500_000)
        [record] = rig.records()
        with tus_node_server(tmp_path / "node", pki) as peer:
            rig.proxies["wifi"].upstream_port = peer.port
            await rig.settle()
            [first] = rig.service.uploads()["files"]
            assert (first["state"], first["retry_in_s"]) == ("unattested", 600.0)
            rig.clock.advance(601)
            await rig.settle()
            [again] = rig.service.uploads()["files"]
            assert (again["state"], again["retry_in_s"]) == ("unattested", 1200.0)
            assert len(peer.stored_files()) == 1  # it asked (HEAD); it did not send it again

        rig.proxies["wifi"].upstream_port = rig.back_office.port  # pointed at the back office
        rig.carrier["wifi"] = False
        await rig.service.run_once()
        rig.carrier["wifi"] = True
        rig.clock.advance(HOLD_DOWN_MIN_S + 1)  # far less than the 1200 s the backoff says
        for _ in range(3):
            await rig.settle()
        assert rig.store.catalog.get(record.file_id).state is FileState.DELETED  # type: ignore[union-attr]
        assert record.sha256_hex in rig.back_office.completed_sha256()
