"""The uplink end to end: store -> scheduler -> tus over pinned mTLS -> reference back office.

Real TLS, real back office, real sockets; links are fault proxies the tests cut and restore.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from tests.tls_helpers import TestPki
from tests.transport.uplink_rig import (
    CHUNK_BYTES,
    Rig,
    lte,
    record_evidence,
    uplink_rig,
    wifi,
)
from transport.links import HOLD_DOWN_MAX_S
from transport.pacing import BURST_S

MIB = 1024 * 1024


def audit_events(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["event"] for line in lines]


def card_files(rig: Rig) -> list[Path]:
    return list(rig.store.layout.sealed_files())


async def test_every_file_is_attested_then_deleted_from_the_card(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        for size in (10_000, 3 * CHUNK_BYTES + 5, 0):
            record_evidence(rig.store, size)
        expected = {r.sha256_hex for r in rig.records()}
        await rig.settle()
        assert {r.state for r in rig.records()} == {FileState.DELETED}
        assert card_files(rig) == []
        assert rig.back_office.completed_sha256() == expected
    events = audit_events(tmp_path)
    assert events.count("uplink.uploaded") == 3
    assert events.count("storage.file_attested") == 3
    assert events.count("storage.file_deleted") == 3


async def test_wifi_drops_mid_upload_and_the_upload_continues_on_lte(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(), lte())) as rig:
        record_evidence(rig.store, 24 * CHUNK_BYTES)
        [record] = rig.records()
        await rig.probe()
        wifi_proxy = rig.proxies["wifi"]
        # WiFi fades out after about a third of the file: the radio loses carrier
        wifi_proxy.plan.cut_after_client_bytes = 8 * CHUNK_BYTES
        await rig.service.run_once()
        await wifi_proxy.wait_until(lambda: wifi_proxy.cuts == 1, timeout_s=20)
        rig.carrier["wifi"] = False
        wifi_proxy.plan.blackhole = True
        await rig.settle()
        assert rig.store.catalog.get(record.file_id).state is FileState.DELETED  # type: ignore[union-attr]
        via_lte = rig.proxies["lte"].bytes_client_to_server
        via_wifi = wifi_proxy.bytes_client_to_server
    resent_bytes = via_lte + via_wifi - record.size_bytes
    assert via_lte < record.size_bytes, "LTE resumed from the server's offset, not from zero"
    assert resent_bytes < 2 * CHUNK_BYTES + 64 * 1024, "about one chunk (plus HTTP/TLS) resent"


async def test_lte_budget_runs_out_p2_waits_for_wifi_while_p0_still_goes(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    cap = 2 * MIB
    links = (wifi(), lte(monthly_cap_bytes=cap, p0_reserve_bytes=MIB))
    async with uplink_rig(tmp_path, recipient, pki, links) as rig:
        rig.carrier["wifi"] = False
        routine = record_evidence(rig.store, 200_000, upload_class="P2")
        evidence = record_evidence(rig.store, int(1.5 * MIB), upload_class="P1")
        incident = record_evidence(rig.store, int(0.8 * MIB), upload_class="P0")
        await rig.settle()
        state = {r.recording_id: r.state for r in rig.records()}
        assert state[incident] is FileState.DELETED, "P0 goes over LTE from its reserve"
        assert state[evidence] is FileState.SEALED, "P1 does not fit what is left for P1"
        assert state[routine] is FileState.SEALED, "P2 never goes over LTE"
        waiting = {w["file_id"]: w["reason"] for w in rig.service.status()["waiting"]}
        assert any("WiFi" in reason for reason in waiting.values())
        # WiFi comes back (after its hold-down, so a flapping WiFi is not trusted at once)
        rig.carrier["wifi"] = True
        rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        await rig.settle()
        assert {r.state for r in rig.records()} == {FileState.DELETED}


async def test_a_wrong_certificate_receives_zero_evidence_bytes(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    impostor = (pki.impostor_server_cert, pki.impostor_server_key)
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),), server_cert=impostor) as rig:
        record_evidence(rig.store, 100_000)
        for _ in range(5):
            await rig.settle()
            rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        [record] = rig.records()
        assert record.state is FileState.SEALED
        assert len(card_files(rig)) == 1
        assert rig.connector.connects["wifi"] == 1, "a pin mismatch is never retried"
        assert any(k.startswith("uplink_pin_") for k in rig.store.alarms.codes())
        status = rig.service.status()["links"][0]
        assert status["pin_blocked"] is True
        assert status["usable"] is False
        assert not (tmp_path / "backoffice" / "uploads").exists() or not any(
            (tmp_path / "backoffice" / "uploads").iterdir()
        )
    assert "uplink.pin_mismatch" in audit_events(tmp_path)


async def test_the_back_office_restarts_mid_upload(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        record_evidence(rig.store, 20 * CHUNK_BYTES)
        [record] = rig.records()
        proxy = rig.proxies["wifi"]
        await rig.probe()
        await rig.service.run_once()
        await proxy.wait_until(lambda: proxy.bytes_client_to_server > 6 * CHUNK_BYTES, timeout_s=20)
        await rig.back_office.stop()
        await rig.back_office.start()
        for _ in range(10):
            await rig.settle()
            if rig.store.catalog.get(record.file_id).state is FileState.DELETED:  # type: ignore[union-attr]
                break
            rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        assert rig.store.catalog.get(record.file_id).state is FileState.DELETED  # type: ignore[union-attr]
        assert rig.back_office.completed_sha256() == {record.sha256_hex}


async def test_a_week_offline_then_everything_goes(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(), lte())) as rig:
        rig.carrier.update(wifi=False, lte=False)
        for day in range(7):
            record_evidence(rig.store, 50_000 + day)
            for _ in range(24):
                await rig.settle()
                rig.clock.advance(3600)
        assert {r.state for r in rig.records()} == {FileState.SEALED}
        assert rig.connector.connects == {}, "nothing is tried without a carrier"
        rig.carrier.update(wifi=True)
        await rig.settle()
        rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        await rig.settle()
        assert {r.state for r in rig.records()} == {FileState.DELETED}
        assert len(rig.back_office.completed_sha256()) == 7


async def test_a_link_that_prefers_http3_uploads_over_it(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    link = wifi(prefer_h3=True, udp_allowed=True)
    async with uplink_rig(tmp_path, recipient, pki, (link,)) as rig:
        record_evidence(rig.store, 6 * CHUNK_BYTES)
        [record] = rig.records()
        await rig.settle()
        assert rig.store.catalog.get(record.file_id).state is FileState.DELETED  # type: ignore[union-attr]
        assert rig.udp_proxies["wifi"].bytes_client_to_server > record.size_bytes
        assert rig.service.status()["links"][0]["udp_blocked"] is False
    assert rig.back_office.completed_sha256() == {record.sha256_hex}


async def test_blocked_udp_falls_back_to_https(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    link = wifi(prefer_h3=True, udp_allowed=True)
    async with uplink_rig(tmp_path, recipient, pki, (link,)) as rig:
        rig.udp_proxies["wifi"].plan.blackhole = True  # a network that drops UDP
        record_evidence(rig.store, 6 * CHUNK_BYTES)
        [record] = rig.records()
        for _ in range(3):
            await rig.settle()
            rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        assert rig.store.catalog.get(record.file_id).state is FileState.DELETED  # type: ignore[union-attr]
        status = rig.service.status()["links"][0]
        assert status["udp_blocked"] is True
        assert status["usable"] is True, "a UDP failure does not take the link down"
        assert rig.connector.h3_connects["wifi"] >= 1


async def test_the_rate_cap_holds_an_upload_back(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    cap_bytes_per_s = 128 * 1024
    async with uplink_rig(
        tmp_path, recipient, pki, (wifi(rate_cap_bytes_per_s=cap_bytes_per_s),)
    ) as rig:
        record_evidence(rig.store, 5 * CHUNK_BYTES)
        [record] = rig.records()
        await rig.probe()
        started_s = time.monotonic()
        await rig.settle()
        elapsed_s = time.monotonic() - started_s
        assert rig.store.catalog.get(record.file_id).state is FileState.DELETED  # type: ignore[union-attr]
    burst_bytes = cap_bytes_per_s * BURST_S
    assert elapsed_s >= (record.size_bytes - burst_bytes) / cap_bytes_per_s


async def test_a_file_attested_before_a_power_cut_is_deleted_when_the_uplink_starts(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """Found by the soak: retention ran only after an upload, so the last file attested before
    a cut stayed on the card (S3) until some later upload, or for good."""
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        record_evidence(rig.store, 10_000)
        (record,) = rig.records()
        assert record.sha256_hex is not None
        rig.store.record_attestation(record.file_id, record.sha256_hex)  # then the power was cut
        assert card_files(rig) != []
        loop = asyncio.create_task(rig.service.run())
        try:
            deadline = time.monotonic() + 10
            while rig.records()[0].state is not FileState.DELETED:
                assert time.monotonic() < deadline, "the attested file is still on the card"
                await asyncio.sleep(0.02)
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        assert card_files(rig) == []
    assert "uplink.uploaded" not in audit_events(tmp_path), "deleted without a second upload"
