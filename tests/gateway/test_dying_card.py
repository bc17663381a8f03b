"""A dying card under a running recording (issue 14 item 3), on a real labdisk card.

One test per case: the card turns read-only, a write fails EIO, an fsync fails EIO, the card is
pulled (ENODEV, ENOTCONN) and pushed back in. In each: nothing crashes (the capture loops and the
card watch run on), the pre-record ring keeps taking packets in RAM, the alarm the page turns
into the officer's alert is raised (card_read_only, card_write_failed, card_missing), the
evidence sealed before stays readable and queued for upload, and once a good card is in the
same recording goes on in new files, without a restart. fsync stalls of 2 s: no packet dropped,
the backlog measured (printed; docs/storage.md records the figure).

Left out here: the uplink's real upload after the card is back (the catalog's queue is checked
here; tests/transport/test_uplink_dying_card.py uploads what was sealed before a pull), and a
card that lies (acknowledges an fsync and loses the data: labdisk's power cut covers that, the
torture and the soak).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from demo.synthetic import generate_clip
from labdisk import Delay
from storage.envelope import RecipientPrivateKey
from storage.models import FileState
from tests.capture_helpers import wait_for
from tests.gateway.dying_card_rig import (
    DyingCardRig,
    dying_card_rig,
    every_file_reads,
    waiting_to_upload,
)

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of H.264 at 25 fps, a keyframe every 0.5 s."""
    path = tmp_path_factory.mktemp("clips") / "clip.ts"
    return generate_clip(path, seconds=4, fps=25, keyframe_interval_frames=12)


async def recording_with_durable_files(rig: DyingCardRig, files: int = 1) -> None:
    await wait_for(lambda: rig.camera.ring.span_ns() > 1_000_000_000, "the pre-record ring")
    await rig.service.trigger("officer")
    assert rig.service.recording is not None
    await wait_for(lambda: len(rig.sealed_files()) >= files, f"{files} sealed files")


async def resumes_on_a_good_card(rig: DyingCardRig, recipient: RecipientPrivateKey) -> None:
    """The card works again: the alarms clear, the same recording gets new sealed files,
    and at the end every file reads and waits for upload."""
    recording = rig.service.recording
    assert recording is not None
    await wait_for(lambda: not rig.store.card_faulted(), "the card alarms to clear")
    await wait_for(lambda: rig.audited("gateway.recording_resumed"), "the recording to resume")
    sealed_at_resume = len(rig.sealed_files())
    await wait_for(lambda: len(rig.sealed_files()) > sealed_at_resume, "a new file")
    assert rig.service.recording is recording, "the same recording goes on"
    await rig.service.stop_recording()
    await wait_for(lambda: rig.service.recording is None, "the recording to end")
    reports = every_file_reads(rig, recipient)
    assert {r.header.recording_id.hex() for r in reports} == {recording.recording_id}
    # The file the card failed is closed by recovery (interrupted, signed), not lost; a file
    # whose header the card never took is gone with its catalog entry. Nothing is left open.
    assert not list(rig.store.layout.part_files())
    assert not [r for r in rig.store.catalog.all() if r.state is FileState.RECORDING]
    interrupted = [r for r in reports if r.interrupted_at_chunk is not None]
    assert all(r.interruption_signature_checked for r in interrupted)
    seqs = sorted(r.header.file_seq for r in reports)
    assert seqs == list(range(len(seqs))), "the file numbers go on across the failure"
    assert rig.audited("storage.card_back")
    queued = waiting_to_upload(rig.store)
    assert len(queued) == len(rig.sealed_files())


async def test_the_card_turns_read_only_mid_recording(
    tmp_path: Path, clip: Path, recipient: RecipientPrivateKey
) -> None:
    async with dying_card_rig(tmp_path, clip, recipient) as rig:
        await recording_with_durable_files(rig)
        before = {p.name: p.read_bytes() for p in rig.sealed_files()}
        rig.disk.read_only()
        await wait_for(lambda: "card_read_only" in rig.store.alarms, "the read-only alarm")
        await asyncio.sleep(3 * 0.1)  # the watch probes meanwhile: still read-only
        assert "card_read_only" in rig.store.alarms
        await rig.alive()
        # What was durable stays readable on the read-only card, byte for byte.
        assert {p.name: p.read_bytes() for p in rig.sealed_files()} == before
        assert every_file_reads(rig, recipient)
        rig.disk.read_only(False)  # a good card is in (the lab's card, writable again)
        await resumes_on_a_good_card(rig, recipient)
        await rig.alive()


@pytest.mark.parametrize("operation", ["write", "fsync"])
async def test_an_eio_on_a_write_or_an_fsync(
    tmp_path: Path, clip: Path, recipient: RecipientPrivateKey, operation: str
) -> None:
    async with dying_card_rig(tmp_path, clip, recipient) as rig:
        await recording_with_durable_files(rig)
        rig.disk.fail("EIO", ops=[operation], path="evidence/*.part", times=1)
        await wait_for(
            lambda: rig.audited("alarm.raised", code="card_write_failed"), "the failed-card alarm"
        )
        await wait_for(
            lambda: rig.audited("storage.write_failed", camera_stream="dashcam"),
            "the failed write in the audit log",
        )
        await rig.alive()
        await resumes_on_a_good_card(rig, recipient)  # one EIO: the next probe succeeds


@pytest.mark.parametrize("error", ["ENODEV", "ENOTCONN"])
async def test_the_card_pulled_during_a_recording_and_pushed_back(
    tmp_path: Path, clip: Path, recipient: RecipientPrivateKey, error: str
) -> None:
    async with dying_card_rig(tmp_path, clip, recipient) as rig:
        await recording_with_durable_files(rig)
        durable = dict(waiting_to_upload(rig.store))
        rig.disk.pull(error)
        await wait_for(lambda: "card_missing" in rig.store.alarms, "the missing-card alarm")
        await rig.alive()
        await asyncio.sleep(0.5)  # out for a while: the watch keeps probing, nothing else
        assert "card_missing" in rig.store.alarms
        rig.disk.reinsert()
        await resumes_on_a_good_card(rig, recipient)
        # Every file sealed before the pull is still queued, with the same checksum.
        queued = waiting_to_upload(rig.store)
        assert {k: queued[k] for k in durable} == durable


async def test_fsync_stalls_of_two_seconds_drop_no_packet(
    tmp_path: Path, clip: Path, recipient: RecipientPrivateKey
) -> None:
    async with dying_card_rig(tmp_path, clip, recipient) as rig:
        await recording_with_durable_files(rig, files=1)
        dropped_before = rig.camera.source.health.dropped
        rule = rig.disk.stall(Delay.fixed(2.0), ops=["fsync"], path="evidence/*", times=3)
        await wait_for(lambda: rig.disk.status()["stalled"] > 0, "a stalled fsync")
        await rig.ring_moves()  # the ring takes packets while the card's fsync waits
        part = rig.camera.recording
        assert part is not None
        await wait_for(lambda: part.backlog_max_bytes > 0 and part.backlog_bytes == 0, "catch-up")
        await wait_for(
            lambda: all(r["times"] == 0 for r in rig.disk.status()["rules"] if r["id"] == rule),
            "the three stalls to pass",
            timeout_s=30,
        )
        await wait_for(lambda: part.backlog_bytes == 0, "the backlog to drain")
        assert rig.camera.source.health.dropped == dropped_before
        assert rig.store.alarms.snapshot() == {}, "a slow card is not a failed card"
        print(
            f"\nfsync stalls of 2 s: backlog at most {part.backlog_max_packets} packets, "
            f"{part.backlog_max_bytes} bytes; dropped {rig.camera.source.health.dropped}"
        )
        await rig.service.stop_recording()
        await wait_for(lambda: rig.service.recording is None, "the recording to end")
        assert every_file_reads(rig, recipient)


async def test_a_card_that_fails_again_while_it_is_taken_back_is_tried_again(
    tmp_path: Path, clip: Path, recipient: RecipientPrivateKey
) -> None:
    """resume_on_card while the card is still out: the reopen fails, the camera waits (a
    trigger meanwhile neither crashes nor gives it a part on the dead card), and the next call,
    with the card back, resumes it."""
    async with dying_card_rig(tmp_path, clip, recipient, probe_s=3600) as rig:
        await recording_with_durable_files(rig, files=1)
        rig.disk.pull("ENODEV")
        await wait_for(lambda: "card_missing" in rig.store.alarms, "the missing-card alarm")
        with pytest.raises(OSError, match="No such device"):  # ENODEV, as the card was pulled
            await rig.service.resume_on_card(rig.store.reopen_card)
        assert rig.camera.recording is None, "no part on a card that is not there"
        await rig.service.trigger("officer")  # extends the recording; nothing attaches
        assert rig.camera.recording is None
        await rig.alive()
        rig.disk.reinsert()
        assert await rig.service.resume_on_card(rig.store.reopen_card) == ["dashcam"]
        await resumes_on_a_good_card(rig, recipient)
