"""The full card on a real, size-limited file system (a tmpfs): the reserve holds, the file being
written is sealed, new recordings are refused, nothing is deleted to make room, and retention of
attested files lets recording resume. Also: a writer that meets a real ENOSPC leaves no torn record.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.audit import verify_audit_log
from storage.audit_io import AuditLog
from storage.card import CardLayout
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.errors import RecordingRefused, StoreError
from storage.models import FileState
from storage.reader import ReadReport, read_evidence
from storage.recovery import recover_card, scan_intact_prefix
from storage.recovery_alarm import catalog_knowledge
from storage.retention import DeletionReason
from storage.space import CardFullError, SpacePolicy, card_free_bytes
from storage.store import EvidenceStore, StoreSettings
from tests.evidence_helpers import mounted_tmpfs, open_evidence_fds

KIB = 1024
MIB = 1024 * KIB
CARD_SIZE = "8m"
SEGMENT_BYTES = 200 * KIB
CHUNK_MAX_BYTES = 65536
FULL_POLICY = SpacePolicy(reserve_bytes=1 * MIB, min_free_to_start_bytes=2 * MIB)
BRIM_POLICY = SpacePolicy(reserve_bytes=0, min_free_to_start_bytes=1)
START_MS = 1_790_000_000_000

pytestmark = pytest.mark.root


class Clock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        self.now_ms += 1
        return self.now_ms


@dataclass
class Box:
    """A store on the tmpfs card; the audit log and device key live off the card, as on a box."""

    card: Path
    state: Path
    device: DeviceKey
    audit: AuditLog
    store: EvidenceStore
    clock: Clock

    def events(self) -> list[str]:
        return [entry.event for entry in self.audit.entries()]

    def reopen(self, recipient: RecipientPrivateKey) -> EvidenceStore:
        """Close and reopen the store as a box does at start (recovery runs)."""
        self.store.close()
        self.store, _ = EvidenceStore.open(
            self.store.settings, (recipient.public(),), self.device, self.audit, self.clock
        )
        return self.store


@pytest.fixture
def card(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs card."""
    with mounted_tmpfs(tmp_path / "card", CARD_SIZE) as mountpoint:
        yield mountpoint


def open_box(
    tmp_path: Path, card: Path, recipient: RecipientPrivateKey, policy: SpacePolicy
) -> Iterator[Box]:
    state = tmp_path / "state"
    state.mkdir()
    device = DeviceKey.load_or_create(state)
    clock = Clock()
    audit = AuditLog.open(state / "audit.jsonl", device, clock_ms=clock)
    settings = StoreSettings(card_dir=card, chunk_max_bytes=CHUNK_MAX_BYTES, space=policy)
    store, _ = EvidenceStore.open(settings, (recipient.public(),), device, audit, clock)
    box = Box(card, state, device, audit, store, clock)
    try:
        yield box
    finally:
        box.store.close()  # closes the catalog on the card so that it can be unmounted
        box.audit.close()


@pytest.fixture
def box(tmp_path: Path, card: Path, recipient: RecipientPrivateKey) -> Iterator[Box]:
    yield from open_box(tmp_path, card, recipient, FULL_POLICY)


@pytest.fixture
def brim_box(tmp_path: Path, card: Path, recipient: RecipientPrivateKey) -> Iterator[Box]:
    yield from open_box(tmp_path, card, recipient, BRIM_POLICY)


def record_small(store: EvidenceStore, media: bytes) -> str:
    recording = store.start_recording({"officer_id": "boa-17", "vehicle_id": "veh-3"})
    stream = recording.open_stream("dashcam")
    stream.append_media(media)
    stream.end_segment({"index": 0})
    recording.close()
    return recording.recording_id


def hash_card_files(card: Path) -> dict[str, str]:
    """SHA-256 of every evidence file and sidecar on the card, by path relative to the card."""
    layout = CardLayout(card)
    return {
        str(path.relative_to(card)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(layout.evidence_root.rglob("*"))
        if path.is_file()
    }


def decrypt(path: Path, key: RecipientPrivateKey, device: DeviceKey) -> tuple[bytes, ReadReport]:
    media = io.BytesIO()
    with path.open("rb") as handle:
        report = read_evidence(handle, key, media_out=media, device_key=device.public_key())
    return media.getvalue(), report


@dataclass
class FullCard:
    """What filling the card left behind."""

    older: dict[str, str]  # hashes of the evidence that was on the card before the big recording
    recording_id: str
    media: bytes  # everything handed to append_media, in order
    acked: int  # media bytes acknowledged durable by end_segment before the error
    error: CardFullError


def fill_card(box: Box) -> FullCard:
    """Two older recordings, then one that records 200 KB segments until the card is full."""
    rng = random.Random(20240601)
    for _ in range(2):
        record_small(box.store, rng.randbytes(300 * KIB))
    older = hash_card_files(box.card)
    assert len(older) == 4  # two evidence files, two sidecars

    recording = box.store.start_recording({"officer_id": "boa-17", "vehicle_id": "veh-3"})
    stream = recording.open_stream("dashcam")
    media = bytearray()
    acked = 0
    error: CardFullError | None = None
    for index in range(1000):  # an 8 MiB card is full long before 200 MB
        segment = rng.randbytes(SEGMENT_BYTES)
        try:
            media += segment  # handed over: the writer may keep what it already took of it
            stream.append_media(segment)
            durable = stream.end_segment({"index": index})
        except CardFullError as exc:
            error = exc
            break
        acked = durable.media_bytes
        assert acked == len(media)
    assert error is not None, "the card never filled up"
    recording.close()
    return FullCard(older, recording.recording_id, bytes(media), acked, error)


def test_a_full_card_stops_the_writer_and_seals_what_was_acknowledged(
    box: Box, recipient: RecipientPrivateKey
) -> None:
    full = fill_card(box)

    assert full.acked >= 10 * SEGMENT_BYTES  # the card really held several MiB first
    assert full.error.reserve_bytes == FULL_POLICY.reserve_bytes
    assert "card full" in box.store.alarms["card_full"]
    assert "storage.card_full" in box.events()

    layout = box.store.layout
    assert list(layout.part_files()) == []
    [record] = box.store.catalog.by_recording(full.recording_id)
    assert record.state is FileState.SEALED
    assert record.interrupted_at_chunk is None
    sealed = layout.sealed_path(full.recording_id, record.file_id)
    assert sealed.exists()
    assert hashlib.sha256(sealed.read_bytes()).hexdigest() == record.sha256_hex

    media, report = decrypt(sealed, recipient, box.device)
    assert report.interrupted_at_chunk is None
    assert len(media) >= full.acked
    assert media == full.media[: len(media)]
    assert report.metadata[-1]["type"] == "end"
    assert report.metadata[-1]["media_bytes"] == len(media)

    free = card_free_bytes(box.card)
    assert free > 0, "sealing ate the reserve"
    # the reserve paid for sealing (at most one pending chunk and the LAST chunk) and the
    # catalog's writes about it: most of it is still there
    assert free > FULL_POLICY.reserve_bytes - CHUNK_MAX_BYTES - 128 * KIB
    assert verify_audit_log(box.audit.path.read_bytes(), box.device.public_key()).ok


def test_a_full_card_refuses_new_recordings_and_deletes_nothing(
    box: Box, recipient: RecipientPrivateKey
) -> None:
    full = fill_card(box)
    before = hash_card_files(box.card)
    assert full.older.items() <= before.items()  # the big recording did not touch older evidence
    assert len(before) == 6

    with pytest.raises(RecordingRefused, match="card full") as refused:
        box.store.start_recording({"officer_id": "boa-17"})
    assert "evidence on the card is kept" in str(refused.value)
    assert "card full" in box.store.alarms["card_full"]
    assert box.events()[-1] == "storage.recording_refused"

    assert hash_card_files(box.card) == before  # nothing deleted, nothing rewritten
    states = {r.file_id: r.state for r in box.store.catalog.all()}
    assert list(states.values()) == [FileState.SEALED] * 3
    assert "storage.file_deleted" not in box.events()

    box.reopen(recipient)  # a restart does not make room either
    with pytest.raises(RecordingRefused, match="card full"):
        box.store.start_recording({"officer_id": "boa-17"})
    assert hash_card_files(box.card) == before


def test_retention_of_attested_files_lets_recording_resume(
    box: Box, recipient: RecipientPrivateKey
) -> None:
    fill_card(box)
    with pytest.raises(RecordingRefused):
        box.store.start_recording({"officer_id": "boa-17"})
    free_when_full = card_free_bytes(box.card)

    records = box.store.catalog.all()
    assert len(records) == 3
    for record in records:  # the back office stored each file and echoes its checksum
        assert record.sha256_hex is not None
        attested = box.store.catalog.record_attestation(record.file_id, record.sha256_hex)
        assert attested.state is FileState.VERIFIED

    deleted = box.store.apply_retention()
    assert sorted(d.file_id for d in deleted) == sorted(r.file_id for r in records)
    assert {d.reason for d in deleted} == {DeletionReason.ATTESTED}
    assert hash_card_files(box.card) == {}
    assert all(r.state is FileState.DELETED for r in box.store.catalog.all())
    assert box.events().count("storage.file_deleted") == 3
    assert card_free_bytes(box.card) >= free_when_full + 6 * MIB

    media = random.Random(7).randbytes(500 * KIB)
    recording_id = record_small(box.store, media)
    [record] = box.store.catalog.by_recording(recording_id)
    assert record.state is FileState.SEALED
    got, _ = decrypt(
        box.store.layout.sealed_path(recording_id, record.file_id), recipient, box.device
    )
    assert got == media
    assert verify_audit_log(box.audit.path.read_bytes(), box.device.public_key()).ok


def fill_to_the_brim(card: Path, leave_bytes: int) -> Path:
    """Take all but `leave_bytes` of the card's free space with a file that is not evidence."""
    filler = card / "filler.bin"
    size = card_free_bytes(card) - leave_bytes
    assert size > 0
    with filler.open("wb") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    assert card_free_bytes(card) == leave_bytes
    return filler


def test_a_real_enospc_leaves_no_torn_record_and_recovery_keeps_the_acknowledged(
    brim_box: Box, recipient: RecipientPrivateKey
) -> None:
    box = brim_box
    rng = random.Random(99)
    recording = box.store.start_recording({"officer_id": "boa-17"})
    stream = recording.open_stream("dashcam")
    media = bytearray()
    for index in range(2):
        segment = rng.randbytes(3000)
        media += segment
        stream.append_media(segment)
        assert stream.end_segment({"index": index}).media_bytes == len(media)
    acked = len(media)
    [part] = box.store.layout.part_files()

    # Something else takes the card to the brim. Without a reserve nothing pays for sealing: the
    # guard refuses the next whole chunk, and sealing what is pending meets the real ENOSPC.
    filler = fill_to_the_brim(box.card, leave_bytes=4 * KIB)
    big = rng.randbytes(SEGMENT_BYTES)
    media += big
    with pytest.raises(StoreError, match="No space left on device") as failed:
        stream.append_media(big)
    assert isinstance(failed.value.__cause__, OSError)
    assert failed.value.__cause__.errno == errno.ENOSPC
    assert isinstance(failed.value.__cause__.__context__, CardFullError)  # the guard came first
    assert "storage.card_full" in box.events()
    recording.close()
    assert open_evidence_fds(box.card) == [], "the failed writer still holds its file open"

    # The card holds only whole records: the failed write was cut back, nothing torn remains.
    assert list(box.store.layout.part_files()) == [part]
    data = part.read_bytes()
    prefix = scan_intact_prefix(data)
    assert prefix.end_offset == len(data), "a torn record was left on the card"
    assert not prefix.sealed

    # Recovery of the file itself (what EvidenceStore.open does after opening the catalog) fits
    # on the full card: the interruption record goes into the file's last page, the sidecar into
    # the 4 KiB left.
    knowledge = catalog_knowledge(box.store.catalog)
    box.store.close()
    report = recover_card(box.store.layout, box.device, box.audit.append, box.clock(), knowledge)
    [recovered] = report.recovered
    assert recovered.interrupted_at_chunk == prefix.chunks
    assert list(box.store.layout.part_files()) == []
    assert box.events()[-1] == "storage.recording_interrupted"

    # The catalog (sqlite) needs more room than a reserve of 0 leaves, so the space hog goes
    # before the box starts again; the restart must then account for the recovered file.
    filler.unlink()
    store = box.reopen(recipient)
    [path] = store.layout.sealed_files()
    got, read = decrypt(path, recipient, box.device)
    assert len(got) >= acked
    assert got == bytes(media[: len(got)])
    assert read.interrupted_at_chunk == prefix.chunks
    assert read.interruption_signature_checked
    [record] = store.catalog.all()
    assert record.state is FileState.SEALED
    assert record.interrupted_at_chunk == prefix.chunks
    assert record.sha256_hex == hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify_audit_log(box.audit.path.read_bytes(), box.device.public_key()).ok


def test_a_report_on_a_full_card_is_refused_and_leaves_nothing_behind(
    box: Box, recipient: RecipientPrivateKey
) -> None:
    """The officer's report (R4) on a full card: CardFullError (the page says "card full"),
    no half-written report file, no evidence touched; the report can be filed once there is
    room."""
    full = fill_card(box)
    before = hash_card_files(box.card)
    with pytest.raises(CardFullError):
        box.store.write_report(full.recording_id, {"what": "a report that does not fit"})
    assert list(box.store.layout.part_files()) == []
    after = hash_card_files(box.card)
    assert before.items() <= after.items(), "no evidence touched"
    # The refused file had no durable header: it leaves the catalog as DELETED (found by this
    # test: it stayed RECORDING for good, a file no upload and no recovery would ever end).
    states = sorted(
        r.state.value for r in box.store.catalog.all() if r.recording_id == full.recording_id
    )
    assert states == ["deleted", "sealed"]
