"""Recovery after a power cut: intact chunks kept, torn tail cut, interruption signed and named;
and only for files the catalog knew as being written (storage/recovery.py `judge_part`)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from storage.card import CardLayout, read_sidecar
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.errors import BadInterruptionRecord, TruncatedFile
from storage.evidence_format import RECORD_FRAMING_BYTES, decode_framing, decode_header
from storage.models import FileState
from storage.reader import ReadReport, read_evidence
from storage.recovery import (
    CatalogKnowledge,
    KnownFile,
    Verdict,
    judge_part,
    recover_card,
    scan_intact_prefix,
)
from tests.evidence_helpers import FIXED_NOW_MS, open_writer, write_file


class Events:
    """Collects what recovery reports, the way the audit log would receive it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def __call__(self, event: str, **fields: object) -> None:
        self.seen.append((event, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


@pytest.fixture
def device_key() -> DeviceKey:
    return DeviceKey.generate()


def writing(card: Path) -> CatalogKnowledge:
    """What the store's catalog knows of a card after a power cut: every `.part` on it as
    RECORDING (the store catalogues a file before its first byte)."""
    files = {
        part.name.removesuffix(".mvbe.part"): KnownFile(FileState.RECORDING, part.parent.name)
        for part in CardLayout(card).part_files()
    }
    return CatalogKnowledge(files, complete=True)


def unsealed_file(card: Path, recipient: RecipientPrivateKey, media: bytes, syncs: int) -> Path:
    """A `.part` file as a power cut leaves it: `syncs` durable segments, then abandoned."""
    writer, _ = open_writer(card, recipient)
    writer.append_metadata({"type": "recording", "camera": "dashcam"})
    step = len(media) // syncs
    for start in range(0, step * syncs, step):
        writer.append_media(media[start : start + step])
        writer.sync()
    path = writer.path
    writer.abandon()
    return path


def decrypt(
    path: Path, key: RecipientPrivateKey, device: DeviceKey | None
) -> tuple[ReadReport, bytes]:
    media = io.BytesIO()
    with path.open("rb") as handle:
        report = read_evidence(
            handle, key, media_out=media, device_key=device.public_key() if device else None
        )
    return report, media.getvalue()


def test_torn_tail_is_cut_and_interruption_reported(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    media = os.urandom(40_000)
    part = unsealed_file(tmp_path, recipient, media, syncs=4)
    intact = scan_intact_prefix(part.read_bytes())
    with part.open("ab") as handle:
        handle.write(os.urandom(3000))  # a torn record: garbage after the last durable point
    events = Events()
    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, writing(tmp_path))
    assert len(report.recovered) == 1
    sidecar = report.recovered[0]
    assert sidecar.interrupted_at_chunk == intact.chunks
    assert "storage.recording_interrupted" in events.names()
    sealed = part.with_name(part.name.removesuffix(".part"))
    assert not part.exists()
    assert sealed.exists()
    assert read_sidecar(sealed.with_suffix(".json")) == sidecar
    result, out = decrypt(sealed, recipient, device_key)
    assert out == media
    assert result.interrupted_at_chunk == intact.chunks
    assert result.interruption_signature_checked


def test_record_cut_mid_way_is_dropped(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    media = os.urandom(40_000)
    part = unsealed_file(tmp_path, recipient, media, syncs=4)
    full = part.read_bytes()
    before = scan_intact_prefix(full)
    part.write_bytes(full[:-100])  # the last record lost its end
    after = scan_intact_prefix(part.read_bytes())
    assert after.chunks == before.chunks - 1
    recover_card(CardLayout(tmp_path), device_key, Events(), FIXED_NOW_MS, writing(tmp_path))
    sealed = part.with_name(part.name.removesuffix(".part"))
    result, out = decrypt(sealed, recipient, device_key)
    assert media.startswith(out)
    assert len(out) < len(media)
    assert result.interrupted_at_chunk == after.chunks


def test_sealed_but_not_renamed_is_completed(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    writer, _ = open_writer(tmp_path, recipient)
    writer.append_media(b"x" * 10_000)
    sealed = writer.seal()
    sealed.path.rename(writer.path)  # power cut between the LAST chunk and the rename
    sealed.path.with_suffix(".json").unlink()
    events = Events()
    recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, writing(tmp_path))
    assert events.names() == ["storage.seal_completed"]
    result, out = decrypt(sealed.path, recipient, None)
    assert out == b"x" * 10_000
    assert result.interrupted_at_chunk is None


def test_header_never_durable_is_discarded(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    writer, _ = open_writer(tmp_path, recipient)
    path = writer.path
    writer.abandon()
    path.write_bytes(path.read_bytes()[:30])
    events = Events()
    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, writing(tmp_path))
    assert report.discarded == [path]
    assert not path.exists()
    assert events.names() == ["storage.empty_file_discarded"]


def test_leftover_tmp_files_are_swept(tmp_path: Path, device_key: DeviceKey) -> None:
    stray = tmp_path / "evidence" / "abc" / "x.json.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"{")
    events = Events()
    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, writing(tmp_path))
    assert report.swept_tmp == [stray]
    assert not stray.exists()
    assert events.names() == ["storage.tmp_swept"]


def test_recovery_is_idempotent(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    unsealed_file(tmp_path, recipient, os.urandom(20_000), syncs=2)
    layout = CardLayout(tmp_path)
    recover_card(layout, device_key, Events(), FIXED_NOW_MS, writing(tmp_path))
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = recover_card(layout, device_key, Events(), FIXED_NOW_MS + 5, writing(tmp_path))
    assert again.recovered == []
    assert again.discarded == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_interruption_signed_by_another_box_is_rejected(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    part = unsealed_file(tmp_path, recipient, os.urandom(20_000), syncs=2)
    recover_card(
        CardLayout(tmp_path), DeviceKey.generate(), Events(), FIXED_NOW_MS, writing(tmp_path)
    )
    sealed = part.with_name(part.name.removesuffix(".part"))
    with pytest.raises(BadInterruptionRecord, match="not signed by this box"):
        decrypt(sealed, recipient, device_key)


def test_truncating_a_recovered_file_is_not_an_interruption(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    """Someone cutting chunks off after recovery cannot pass it off as the power cut."""
    part = unsealed_file(tmp_path, recipient, os.urandom(40_000), syncs=4)
    recover_card(CardLayout(tmp_path), device_key, Events(), FIXED_NOW_MS, writing(tmp_path))
    sealed = part.with_name(part.name.removesuffix(".part"))
    data = sealed.read_bytes()
    _, header_len = decode_header(data)
    assert header_len < len(data)
    sealed.write_bytes(data[:-88])  # drop the interruption record
    with pytest.raises(TruncatedFile):
        decrypt(sealed, recipient, device_key)


# --- a sealed file is never passed off as a power cut (issue 13, item 3) -----------------------

RECORDING = "ab" * 16
FILE = "cd" * 16


@pytest.mark.parametrize(
    ("known", "complete", "sealed", "sidecar", "verdict", "reason"),
    [
        (FileState.RECORDING, True, False, False, Verdict.RECOVER, ""),
        (FileState.SEALED, True, False, False, Verdict.REFUSE, "knows this file as sealed"),
        (FileState.UPLOADING, True, False, False, Verdict.REFUSE, "as uploading"),
        (FileState.VERIFIED, True, False, False, Verdict.REFUSE, "as verified"),
        (FileState.DELETED, True, False, False, Verdict.REFUSE, "as deleted"),
        (FileState.RECORDING, True, True, False, Verdict.REFUSE, "sealed file with the same id"),
        (FileState.RECORDING, True, False, True, Verdict.REFUSE, "holds its sidecar"),
        (None, True, False, False, Verdict.REFUSE, "never registered"),
        (None, False, False, False, Verdict.RECOVER_UNCHECKED, "catalog was lost"),
        (None, False, True, False, Verdict.REFUSE, "sealed file with the same id"),
        (None, False, False, True, Verdict.REFUSE, "holds its sidecar"),
    ],
)
def test_only_a_file_the_catalog_knew_as_being_written_is_a_power_cut(
    known: FileState | None,
    complete: bool,
    sealed: bool,
    sidecar: bool,
    verdict: Verdict,
    reason: str,
) -> None:
    files = {} if known is None else {FILE: KnownFile(known, RECORDING)}
    judgement = judge_part(
        FILE,
        RECORDING,
        CatalogKnowledge(files, complete),
        sealed_exists=sealed,
        sidecar_exists=sidecar,
    )
    assert judgement.verdict is verdict
    assert reason in judgement.reason


def test_a_file_known_in_another_recording_is_refused() -> None:
    catalog = CatalogKnowledge({FILE: KnownFile(FileState.RECORDING, "ef" * 16)}, complete=True)
    judgement = judge_part(FILE, RECORDING, catalog, sealed_exists=False, sidecar_exists=False)
    assert judgement.verdict is Verdict.REFUSE
    assert "another recording" in judgement.reason


def cut_to_chunks(data: bytes, chunks: int) -> bytes:
    """The first `chunks` records of an evidence file, header included: a sealed file cut short
    on a whole record, as someone laundering it would cut it."""
    _, offset = decode_header(data)
    for _ in range(chunks):
        framing = decode_framing(data[offset : offset + RECORD_FRAMING_BYTES])
        offset += framing.record_len()
    return data[:offset]


def test_a_sealed_file_cut_short_and_renamed_part_is_quarantined_not_signed(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    written = write_file(tmp_path, recipient, os.urandom(60_000), segments=6)
    assert written.sealed is not None
    sealed = written.sealed.path
    data = sealed.read_bytes()
    part = sealed.with_name(sealed.name + ".part")
    part.write_bytes(cut_to_chunks(data, 5))
    sealed.unlink()
    sealed.with_suffix(".json").unlink()  # the thief removes every trace of the sealing
    file_id = sealed.name.removesuffix(".mvbe")
    catalog = CatalogKnowledge(
        {file_id: KnownFile(FileState.SEALED, sealed.parent.name)}, complete=True
    )
    events = Events()

    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, catalog)

    assert report.recovered == []
    [refused] = report.refused
    assert refused.file_id == file_id
    assert "sealed" in refused.reason
    assert refused.quarantined == sealed.with_name(file_id + ".mvbe.quarantined")
    assert refused.quarantined.read_bytes() == cut_to_chunks(data, 5), "kept exactly as found"
    assert not part.exists()
    assert not sealed.exists(), "nothing the uplink would send"
    assert events.names() == ["storage.part_refused"]
    assert events.seen[0][1]["kept_as"] == refused.quarantined.name
    # idempotent: a second run finds nothing, and a second laundering keeps both copies
    part.write_bytes(cut_to_chunks(data, 3))
    again = recover_card(CardLayout(tmp_path), device_key, Events(), FIXED_NOW_MS, catalog)
    assert [r.quarantined.name for r in again.refused] == [f"{file_id}.mvbe.quarantined-2"]
    assert refused.quarantined.read_bytes() == cut_to_chunks(data, 5)


def test_a_part_whose_header_names_another_file_is_quarantined(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    """A cut sealed file moved into the name of a genuine power cut's file: the catalog was
    asked about the name, so the header must be that file's."""
    genuine = unsealed_file(tmp_path, recipient, os.urandom(20_000), syncs=2)
    catalog = writing(tmp_path)
    written = write_file(tmp_path, recipient, os.urandom(40_000), segments=4)
    assert written.sealed is not None
    genuine.write_bytes(cut_to_chunks(written.sealed.path.read_bytes(), 3))
    events = Events()

    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, catalog)

    assert report.recovered == []
    [refused] = report.refused
    assert "header names another file" in refused.reason
    assert events.names() == ["storage.part_refused"]


def test_without_a_catalog_a_power_cut_is_recovered_and_says_it_was_not_checked(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    unsealed_file(tmp_path, recipient, os.urandom(20_000), syncs=2)
    events = Events()
    lost = CatalogKnowledge({}, complete=False)
    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, lost)
    [sidecar] = report.recovered
    assert report.unchecked == [sidecar.file_id]
    [(name, fields)] = events.seen
    assert name == "storage.recording_interrupted"
    assert fields["catalog_checked"] is False


def test_every_repair_is_audited_with_what_was_cut_and_left(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    part = unsealed_file(tmp_path, recipient, os.urandom(30_000), syncs=3)
    with part.open("ab") as handle:
        handle.write(b"\x00" * 777)
    events = Events()
    [sidecar] = recover_card(
        CardLayout(tmp_path), device_key, events, FIXED_NOW_MS, writing(tmp_path)
    ).recovered
    [(name, fields)] = events.seen
    assert name == "storage.recording_interrupted"
    assert fields["torn_bytes"] == 777
    assert fields["sha256"] == sidecar.sha256_hex
    assert fields["size_bytes"] == sidecar.size_bytes
    assert fields["catalog_checked"] is True
