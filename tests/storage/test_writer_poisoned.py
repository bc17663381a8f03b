"""A writer that fails once refuses every further write, so no (key, nonce) pair is used twice.

The card is labdisk (a real FUSE file system, tests/labdisk): it fails one write or one fsync
of the evidence file with a real errno and then works again, so a writer that carried on would
be able to write again, and would re-seal the failed chunk's index under the same key. The
sealer's own invariant (each index sealed once, nothing after LAST) is checked on its output.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labdisk import LabDisk
from storage.audit_io import AuditLog
from storage.card import CardLayout
from storage.chunk_crypto import RECORD_OVERHEAD_BYTES, ChunkSealer, NonceExhausted
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.errors import WriterPoisoned
from storage.evidence_format import NONCE_PREFIX_BYTES, chunk_nonce, decode_framing, decode_header
from storage.reader import read_evidence
from storage.recovery import recover_card, scan_intact_prefix
from storage.space import SpacePolicy
from storage.store import EvidenceStore, StoreSettings
from storage.writer import EvidenceFileWriter
from tests.evidence_helpers import fixed_clock, open_evidence_fds, open_writer
from tests.storage.test_recovery import writing

pytestmark = pytest.mark.root

CHUNK_MAX_BYTES = 4096
ERRNO_TEXT = {"EIO": "Input/output error", "ENOSPC": "No space left on device"}


@pytest.fixture
def card(tmp_path: Path) -> Iterator[LabDisk]:
    disk = LabDisk(
        tmp_path / "backing", tmp_path / "card", classes=[("evidence", "evidence/*")]
    ).start()
    try:
        yield disk
    finally:
        disk.close()


def evidence_writes(card: LabDisk) -> int:
    return int(card.stats()["classes"]["evidence"]["writes"])


def record_indexes(data: bytes) -> list[tuple[int, bool]]:
    """(chunk index, LAST) of every record after the header, as the card holds them."""
    _, offset = decode_header(data)
    found = []
    while offset < len(data):
        framing = decode_framing(data[offset : offset + 16])
        found.append((framing.index, framing.is_last))
        offset += framing.record_len()
    return found


def every_call(writer: EvidenceFileWriter) -> dict[str, Callable[[], object]]:
    return {
        "append_media": lambda: writer.append_media(os.urandom(3 * CHUNK_MAX_BYTES)),
        "append_metadata": lambda: writer.append_metadata({"type": "event", "name": "x"}),
        "sync": writer.sync,
        "seal": writer.seal,
    }


@pytest.mark.parametrize(
    ("error", "operation"), [("EIO", "write"), ("ENOSPC", "write"), ("EIO", "fsync")]
)
def test_a_failed_write_poisons_the_writer_and_nothing_more_reaches_the_card(
    card: LabDisk, recipient: RecipientPrivateKey, error: str, operation: str
) -> None:
    writer, _ = open_writer(card.mountpoint, recipient, chunk_max_bytes=CHUNK_MAX_BYTES)
    rng = random.Random(5)
    durable_media = rng.randbytes(10_000)
    writer.append_metadata({"type": "recording", "camera": "dashcam", "container": "mpegts"})
    writer.append_media(durable_media)
    durable = writer.sync()
    part = writer.path

    # One failure, then the card works again: only the writer's own refusal stops more writes.
    card.fail(error, ops=[operation], path="evidence/*", times=1)

    def write_a_segment() -> None:  # a write fails in append_media, an fsync in sync
        writer.append_media(rng.randbytes(2 * CHUNK_MAX_BYTES))
        writer.sync()

    with pytest.raises(WriterPoisoned, match=ERRNO_TEXT[error]) as first:
        write_a_segment()
    assert isinstance(first.value.__cause__, OSError)
    assert writer.poisoned is not None
    assert open_evidence_fds(card.mountpoint) == [], "a poisoned writer must close its file"
    writes_at_failure = evidence_writes(card)

    for name, call in every_call(writer).items():
        with pytest.raises(WriterPoisoned, match="refuses further writes") as refused:
            call()
        assert ERRNO_TEXT[error] in str(refused.value), name
        assert writer.path.name.removesuffix(".mvbe.part") in str(refused.value), name
    assert evidence_writes(card) == writes_at_failure, "a refused call still wrote to the card"

    # The card holds whole records only, each index once: no nonce appears twice.
    data = part.read_bytes()
    assert scan_intact_prefix(data).end_offset == len(data)
    indexes = record_indexes(data)
    assert [index for index, _ in indexes] == list(range(len(indexes)))
    assert not any(last for _, last in indexes)
    assert len(indexes) >= durable.chunks

    # Recovery closes the file; the back office reads at least what was reported durable.
    device = DeviceKey.generate()
    layout = CardLayout(card.mountpoint)
    report = recover_card(layout, device, lambda *a, **k: None, fixed_clock(), writing(layout.root))
    [recovered] = report.recovered
    sealed = part.with_name(part.name.removesuffix(".part"))
    media = io.BytesIO()
    read = read_evidence(
        io.BytesIO(sealed.read_bytes()), recipient, media_out=media, device_key=device.public_key()
    )
    assert read.interrupted_at_chunk == recovered.interrupted_at_chunk == len(indexes)
    assert media.getvalue()[: len(durable_media)] == durable_media


def test_a_refused_header_write_leaves_no_file(
    card: LabDisk, recipient: RecipientPrivateKey
) -> None:
    card.fail("EIO", ops=["write"], path="evidence/*", times=1)
    with pytest.raises(WriterPoisoned, match=ERRNO_TEXT["EIO"]):
        open_writer(card.mountpoint, recipient)
    assert list(CardLayout(card.mountpoint).part_files()) == []
    assert open_evidence_fds(card.mountpoint) == []


def test_a_failed_write_ends_the_stream_with_an_alarm_and_the_recording_still_closes(
    card: LabDisk, recipient: RecipientPrivateKey, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    device = DeviceKey.load_or_create(state)
    audit = AuditLog.open(state / "audit.jsonl", device, clock_ms=fixed_clock)
    settings = StoreSettings(
        card_dir=card.mountpoint,
        chunk_max_bytes=CHUNK_MAX_BYTES,
        space=SpacePolicy(reserve_bytes=0, min_free_to_start_bytes=1),
    )
    store, _ = EvidenceStore.open(settings, (recipient.public(),), device, audit, fixed_clock)
    try:
        recording = store.start_recording({"officer_id": "boa-17"})
        stream = recording.open_stream("dashcam")
        stream.append_media(os.urandom(5000))
        stream.end_segment({"index": 0})
        card.fail("EIO", ops=["fsync"], path="evidence/*", times=1)
        stream.append_media(os.urandom(5000))
        with pytest.raises(WriterPoisoned):
            stream.end_segment({"index": 1})
        assert "card_write_failed" in store.alarms.snapshot()
        with pytest.raises(ValueError, match="closed"):
            stream.append_media(b"more")
        assert recording.close() == []  # nothing sealed, and no exception: the key is destroyed
        assert recording.key.destroyed
        events = [entry.event for entry in audit.entries()]
        assert "storage.write_failed" in events
        assert events[-1] == "storage.recording_sealed"
        [part] = store.layout.part_files()  # left for recovery at the next start
    finally:
        store.close()
    store, report = EvidenceStore.open(settings, (recipient.public(),), device, audit, fixed_clock)
    try:
        [recovered] = report.recovered
        assert recovered.interrupted_at_chunk is not None
        assert not part.exists()
    finally:
        store.close()
        audit.close()


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=40))
def test_a_sealer_never_uses_a_nonce_twice(sizes: list[int]) -> None:
    prefix = os.urandom(NONCE_PREFIX_BYTES)
    sealer = ChunkSealer(os.urandom(32), b"header", prefix)
    nonces = []
    buffer = memoryview(bytearray(300 + RECORD_OVERHEAD_BYTES))
    for position, size in enumerate(sizes):
        last = position == len(sizes) - 1
        sealed = sealer.seal_into(bytes(size), buffer, last=last)
        assert len(sealed) == size + RECORD_OVERHEAD_BYTES
        record = decode_framing(sealed[:16].tobytes())
        nonces.append(chunk_nonce(prefix, record.index, record.is_last))
    assert len(set(nonces)) == len(nonces) == sealer.chunks_sealed
    with pytest.raises(NonceExhausted):
        sealer.seal_into(b"after the last", buffer, last=False)
    assert sealer.chunks_sealed == len(sizes)


def test_the_writer_makes_one_sealer_per_file(
    recipient: RecipientPrivateKey, tmp_path: Path
) -> None:
    """A second writer of the same file would start its nonces at 0 again: the file cannot be
    opened twice (O_EXCL), so that never happens."""
    writer, key = open_writer(tmp_path, recipient)
    header, _ = decode_header(writer.path.read_bytes())
    with pytest.raises(FileExistsError):
        EvidenceFileWriter(
            CardLayout(tmp_path), header, key.file_keys(header.file_id), clock_ms=fixed_clock
        )
    writer.seal()
