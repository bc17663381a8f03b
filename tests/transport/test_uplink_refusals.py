"""Refusals of the real reference back office are transient, and leave no orphans behind.

The back office runs in this process with its own limits (what `mvb-admin serve` options set):
its idle timeout answers a stalled body 408, its chunk limit answers 413, its per-box rate limit
answers 429 with Retry-After. The box reaches it through the fault proxy over real TLS with
client certificates (tests/transport/uplink_rig.py). None of these refusals blocks a file; each
file is uploaded once the back office takes it. Time for backoffs is the rig's FakeClock.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from backoffice.client_gate import ClientDenied
from backoffice.rate_limit import ClientRateLimit
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from tests.tls_helpers import TestPki
from tests.transport.uplink_rig import Rig, record_evidence, uplink_rig, wifi
from transport.links import HOLD_DOWN_MAX_S
from transport.refusals import CREDENTIALS_CHECK_S, WITHDRAWN_RECHECK_S
from transport.uplink import SWEEP_S
from transport.withdrawal import REASON as WITHDRAWN_REASON

MIB = 1024 * 1024
TERMINATED_WITHIN_S = 30.0
"""Bound on the wait for the back office to let go of a cut request (0.2-0.8 s measured)."""


def never_blocked(rig: Rig) -> None:
    for record in rig.records():
        assert rig.service.ledger.file(record.file_id).blocked_reason is None
    assert [code for code in rig.store.alarms.codes() if code.startswith("uplink_file_")] == []


def rows(rig: Rig) -> list[dict[str, object]]:
    files = rig.service.uploads()["files"]
    assert isinstance(files, list)
    return files


async def restart_back_office(rig: Rig, **limits: object) -> None:
    """The admin restarts `mvb-admin serve` with other limits (same directory and port)."""
    await rig.back_office.stop()
    for name, value in limits.items():
        setattr(rig.back_office, name, value)
    await rig.back_office.start()


async def drain(rig: Rig, rounds: int = 4) -> None:
    """Let waits run out (FakeClock) and the uplink go on until the card is empty."""
    for _ in range(rounds):
        rig.clock.advance(HOLD_DOWN_MAX_S + 1)
        await rig.settle()
        if {r.state for r in rig.records()} == {FileState.DELETED}:
            return


async def test_a_body_that_stalls_gets_408_and_the_file_goes_later(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await restart_back_office(rig, idle_timeout_s=0.5)
        rig.connector.read_timeout_s = 5.0  # the box waits for the back office's answer
        record_evidence(rig.store, 300_000)
        [record] = rig.records()
        plan = rig.proxies["wifi"].plan
        plan.stall_after_client_bytes = 30_000  # each connection: TLS, headers, part of a body

        await rig.settle()

        assert rig.back_office.answers[408] >= 1  # the back office's own idle timeout
        never_blocked(rig)
        [row] = rows(rig)
        assert row["state"] == "waiting"
        assert "(408)" in str(row["reason"])
        plan.stall_after_client_bytes = None
        await drain(rig)
        never_blocked(rig)
        assert {r.state for r in rig.records()} == {FileState.DELETED}
        assert record.sha256_hex in rig.back_office.completed_sha256()


async def test_a_chunk_over_the_back_offices_limit_is_413_and_never_blocks(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """The rig's chunk is 64 KiB, the back office takes 16 KiB and does not say so on OPTIONS
    (a plain tus server's way, or a limit lowered since the box asked). The box never blocks the
    file for it: a smaller chunk may go (the session halves it), or a back office with a larger
    limit."""
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await restart_back_office(rig, max_chunk_bytes=16 * 1024, advertise_max_chunk=False)
        record_evidence(rig.store, 200_000)
        [record] = rig.records()

        await rig.settle()

        assert rig.back_office.answers[413] >= 1
        never_blocked(rig)
        await restart_back_office(rig, max_chunk_bytes=16 * MIB)
        await drain(rig)
        never_blocked(rig)
        assert {r.state for r in rig.records()} == {FileState.DELETED}
        assert record.sha256_hex in rig.back_office.completed_sha256()


async def test_429_pauses_every_upload_for_its_retry_after_then_they_resume(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    limit = ClientRateLimit(rate_per_s=0.001, burst=3)  # Retry-After: 1000 s
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await restart_back_office(rig, rate_limit=limit)
        record_evidence(rig.store, 200_000)
        record_evidence(rig.store, 200_000)

        await rig.settle()

        queue = rig.service.uploads()
        assert "429" in str(queue["waiting_for_back_office"])
        waits = [row["retry_in_s"] for row in rows(rig)]
        assert all(isinstance(w, float) and 990 <= w <= 1000 for w in waits), waits
        proxy = rig.proxies["wifi"]
        sent_before = (proxy.connections, proxy.bytes_client_to_server)
        for _ in range(5):  # the pause holds: nothing is sent, however often the uplink looks
            rig.clock.advance(100)
            assert await rig.service.run_once() == []
        assert (proxy.connections, proxy.bytes_client_to_server) == sent_before
        never_blocked(rig)

        limit.rate_per_s = 1000.0  # the back office is no longer busy
        rig.clock.advance(600)
        await drain(rig)
        never_blocked(rig)
        assert {r.state for r in rig.records()} == {FileState.DELETED}


async def test_the_upload_of_a_file_deleted_from_the_card_is_terminated(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        record_evidence(rig.store, 1 * MIB)
        [record] = rig.records()
        proxy = rig.proxies["wifi"]
        proxy.plan.rate_bytes_per_s = 400_000.0  # slow enough to catch it half-way
        await rig.probe_until_up("wifi")
        # Under load the rig's probing takes more than one round, and the round that saw the
        # link come up has started the upload already; else this round starts it.
        uploads = rig.service.links["wifi"].uploads
        if record.file_id not in uploads:
            assert await rig.service.run_once() == [record.file_id]
        assert list(uploads) == [record.file_id]
        await proxy.wait_until(lambda: proxy.bytes_client_to_server > 300_000)
        rig.carrier["wifi"] = False  # the car drives off: the upload stops half-way
        stopping = list(rig.service.links["wifi"].uploads.values())
        await rig.service.run_once()  # cancels the upload: the file goes back to the queue
        await asyncio.wait(stopping)
        upload_url = rig.service.ledger.file(record.file_id).upload_url
        assert upload_url is not None
        partial = rig.back_office.directory / "uploads" / upload_url.rsplit("/", 1)[1]
        assert (partial / "data").stat().st_size > 0

        # Retention (or a person) removes the file from the card.
        rig.store.catalog.transition(record.file_id, FileState.DELETED, deleted_at_ms=0)
        proxy.plan.rate_bytes_per_s = None
        rig.carrier["wifi"] = True
        rig.clock.advance(max(SWEEP_S, HOLD_DOWN_MAX_S) + 1)
        await rig.settle()
        # The server may still be reading the PATCH the box cut (it answers DELETE 423 Locked
        # then): the box asks again at the next sweep, as long as the upload stays. How long
        # the server takes to let go of the cut request is its own (longer on a loaded machine:
        # five sweeps 0.2 s apart were once too few), so the sweeps go on until a deadline.
        deadline_s = time.monotonic() + TERMINATED_WITHIN_S
        while partial.exists() and time.monotonic() < deadline_s:
            rig.clock.advance(SWEEP_S + 1)
            await asyncio.sleep(0.2)  # the server notices the cut connection
            await rig.settle()

        assert not partial.exists()  # terminated: tus DELETE
        assert rig.service.ledger.file(record.file_id).upload_url is None
        assert rig.back_office.completed_sha256() == set()
    audit = (tmp_path / "state" / "audit.jsonl").read_text()
    assert '"event":"uplink.upload_terminated"' in audit.replace(" ", "")


async def test_orphans_of_lost_creations_expire_on_the_back_office(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """A creation whose answer never reaches the box leaves an upload the box cannot name (so
    cannot terminate): the back office's expiration removes it, and only it."""
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        await restart_back_office(rig, idle_timeout_s=0.5)
        rig.connector.read_timeout_s = 5.0
        record_evidence(rig.store, 300_000)
        [record] = rig.records()
        plan = rig.proxies["wifi"].plan
        plan.stall_after_client_bytes = 30_000  # each POST's body stalls: 408, upload unnamed
        await rig.settle()
        plan.stall_after_client_bytes = None
        await drain(rig)
        assert record.sha256_hex in rig.back_office.completed_sha256()
        uploads = rig.back_office.directory / "uploads"
        orphans = [d for d in uploads.iterdir() if (d / "data").exists()]
        assert orphans, "the stalled creations left unfinished uploads"
        week_ago_s = time.time() - 8 * 86_400
        for orphan in orphans:
            os.utime(orphan / "data", (week_ago_s, week_ago_s))
        assert rig.back_office.app is not None
        assert rig.back_office.app.expiration is not None

        expired = rig.back_office.app.expiration.expire_uploads()

        assert sorted(expired) == sorted(d.name for d in orphans)
        assert [d for d in uploads.iterdir() if (d / "data").exists()] == []
        complete = rig.back_office.directory / "complete"
        stored = [hashlib.sha256(p.read_bytes()).hexdigest() for p in complete.iterdir()]
        assert stored == [record.sha256_hex]  # the evidence itself never expires


class Gate:
    """The back office's certificate gate (docs/pairing.md 5.2): denies while `denied`."""

    def __init__(self) -> None:
        self.denied = False
        self.asked = 0

    async def __call__(self, _serial: int) -> None:
        self.asked += 1
        if self.denied:
            raise ClientDenied("this certificate was withdrawn")


class PairingOnDisk:
    """transport Credentials whose files the test replaces (a re-pair): fingerprints only."""

    def __init__(self) -> None:
        self.loaded = self.files = "first pairing"

    def in_use(self) -> str:
        return self.loaded

    def on_disk(self) -> str | None:
        return self.files

    def reload(self) -> None:
        self.loaded = self.files


async def test_a_withdrawn_certificate_stops_the_uplink_until_the_box_is_paired_again(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    gate, pairing = Gate(), PairingOnDisk()
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),), credentials=pairing) as rig:
        await restart_back_office(rig, client_gate=gate)
        record_evidence(rig.store, 200_000)
        gate.denied = True  # `mvb-admin unpair`

        await rig.settle()

        assert "uplink_credentials" in rig.store.alarms.codes()
        queue = rig.service.uploads()
        assert queue["credentials_withdrawn"] is True
        [row] = rows(rig)
        assert (row["state"], row["reason"]) == ("waiting", WITHDRAWN_REASON)
        never_blocked(rig)
        assert rig.service.ledger.withdrawal() is not None
        asked = gate.asked
        for _ in range(5):  # no hammering: nothing is sent while withdrawn
            rig.clock.advance(600)
            assert await rig.service.run_once() == []
        assert gate.asked == asked
        rig.clock.advance(WITHDRAWN_RECHECK_S)
        await rig.probe()  # the hourly recheck: one OPTIONS, refused again
        assert gate.asked == asked + 1
        assert rig.service.uploads()["credentials_withdrawn"] is True

        pairing.files = "second pairing"  # `mvb pair --re-pair`: new credentials on disk
        gate.denied = False  # which the back office accepts
        rig.clock.advance(CREDENTIALS_CHECK_S)
        await rig.settle()

        assert {r.state for r in rig.records()} == {FileState.DELETED}
        assert pairing.loaded == "second pairing"
        assert "uplink_credentials" not in rig.store.alarms.codes()
        assert rig.service.ledger.withdrawal() is None
    events = (tmp_path / "state" / "audit.jsonl").read_text()
    assert events.index("uplink.credentials_withdrawn") < events.index("uplink.credentials_renewed")


async def test_a_file_damaged_on_the_card_is_blocked_kept_and_reported(
    tmp_path: Path, recipient: RecipientPrivateKey, pki: TestPki
) -> None:
    """The card changed a byte of a sealed file: the back office stores what it got, attests its
    SHA-256 (not the one the box declared) and keeps it as an integrity incident; the box blocks
    the file with a sticky alarm, keeps its copy, and tells the back office it blocked it."""
    async with uplink_rig(tmp_path, recipient, pki, (wifi(),)) as rig:
        record_evidence(rig.store, 200_000)
        [record] = rig.records()
        sealed = rig.store.layout.sealed_path(record.recording_id, record.file_id)
        damaged = bytearray(sealed.read_bytes())
        damaged[len(damaged) // 2] ^= 0x01
        sealed.write_bytes(bytes(damaged))

        await rig.settle()

        upload = rig.service.ledger.file(record.file_id)
        assert upload.blocked_reason is not None
        assert "holds other bytes" in upload.blocked_reason
        assert f"uplink_file_{record.file_id[:12]}" in rig.store.alarms.codes()
        assert rig.store.catalog.get(record.file_id).state is FileState.SEALED  # type: ignore[union-attr]
        assert list((rig.back_office.directory / "corrupt").iterdir())  # the back office's side
        rig.clock.advance(SWEEP_S)
        await rig.settle()  # the next sweep reports the block
        [entry] = rig.back_office.blocked_log().entries()
        assert (entry["box_id"], entry["file_id"]) == ("MVB-TEST-0001", record.file_id)
        assert entry["recording_id"] == record.recording_id
        assert rig.service.ledger.file(record.file_id).block_reported
        rig.clock.advance(SWEEP_S)
        await rig.settle()
        assert len(rig.back_office.blocked_log().entries()) == 1  # told once
