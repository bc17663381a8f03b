"""Our tus session over our pinned HTTPS transport, against the real @tus/server (npm).

@tus/server cannot attest (it has no `Mvb-Stored-Sha256`), so these uploads end unattested: the
box must keep its copy. Cuts go through the project's fault-injecting proxy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from labnet.proxy import FaultPlan, TcpFaultProxy
from tests.peers.tus_node_peer import tus_node_server
from tests.tls_helpers import TestPki
from transport.errors import PinMismatch
from transport.https import HttpsTransport
from transport.tus_messages import UploadOutcome, UploadSpec
from transport.tus_session import TusSession
from transport.upload import RetryPolicy, SliceReader, drive, drive_with_retries

CHUNK_BYTES = 256 * 1024


def evidence_file(tmp_path: Path, size_bytes: int) -> tuple[Path, str]:
    path = tmp_path / "evidence.mvbe"
    data = os.urandom(size_bytes)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def spec_for(path: Path, sha256_hex: str) -> UploadSpec:
    return UploadSpec(
        file_id="f" * 32,
        size_bytes=path.stat().st_size,
        sha256_hex=sha256_hex,
        metadata={"recording_id": "r" * 32, "device": "MVB-TEST-0001"},
        endpoint="/files/",
    )


async def test_whole_upload_to_tus_node_is_byte_exact_and_unattested(
    tmp_path: Path, pki: TestPki
) -> None:
    path, sha256_hex = evidence_file(tmp_path, 3 * CHUNK_BYTES + 12345)
    with tus_node_server(tmp_path / "node-store", pki) as peer:
        transport = await HttpsTransport.connect("127.0.0.1", peer.port, pki.client_settings())
        session = TusSession(spec_for(path, sha256_hex), chunk_bytes=CHUNK_BYTES)
        reader = SliceReader(path)
        try:
            outcome = await drive(session, transport, reader)
        finally:
            reader.close()
            await transport.aclose()
        [stored] = peer.stored_files()
        assert stored.read_bytes() == path.read_bytes()
    assert outcome.attested_sha256_hex is None, "a plain tus server cannot attest"
    assert session.body_bytes_sent == path.stat().st_size


async def test_cuts_mid_upload_resume_from_the_servers_offset(tmp_path: Path, pki: TestPki) -> None:
    size_bytes = 8 * CHUNK_BYTES
    path, sha256_hex = evidence_file(tmp_path, size_bytes)
    with tus_node_server(tmp_path / "node-store", pki) as peer:
        async with TcpFaultProxy("127.0.0.1", peer.port, FaultPlan()) as proxy:
            transport = await HttpsTransport.connect("127.0.0.1", proxy.port, pki.client_settings())
            session = TusSession(spec_for(path, sha256_hex), chunk_bytes=CHUNK_BYTES)
            reader = SliceReader(path)
            cuts = 0

            async def attempt() -> UploadOutcome:
                nonlocal cuts
                if cuts < 3:  # cut each of the first three attempts partway into its bytes
                    proxy.plan.cut_after_client_bytes = CHUNK_BYTES + 40_000 * (cuts + 1)
                    cuts += 1
                else:
                    proxy.plan.cut_after_client_bytes = None
                return await drive(session, transport, reader)

            try:
                await drive_with_retries(
                    attempt, RetryPolicy(initial_s=0.01, max_s=0.05, attempts=6)
                )
            finally:
                reader.close()
                await transport.aclose()
        [stored] = peer.stored_files()
        assert stored.read_bytes() == path.read_bytes()
    assert proxy.cuts == 3
    resent_bytes = session.body_bytes_sent - size_bytes
    assert 0 < resent_bytes <= 3 * CHUNK_BYTES, "at most one in-flight chunk is sent twice"


async def test_a_wrong_pin_sends_nothing_to_tus_node(tmp_path: Path, pki: TestPki) -> None:
    path, sha256_hex = evidence_file(tmp_path, CHUNK_BYTES)
    with tus_node_server(tmp_path / "node-store", pki) as peer:
        settings = pki.client_settings(pins=[pki.backup_pin])  # not the key it presents
        transport = await HttpsTransport.connect("127.0.0.1", peer.port, settings)
        session = TusSession(spec_for(path, sha256_hex), chunk_bytes=CHUNK_BYTES)
        reader = SliceReader(path)
        with pytest.raises(PinMismatch):
            await drive(session, transport, reader)
        reader.close()
        await transport.aclose()
        assert peer.stored_files() == []
