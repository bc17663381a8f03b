"""Recovery after a power cut: intact chunks kept, torn tail cut, interruption signed and named."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from storage.card import CardLayout, read_sidecar
from storage.devicekey import DeviceKey
from storage.envelope import RecipientPrivateKey
from storage.errors import BadInterruptionRecord, TruncatedFile
from storage.evidence_format import decode_header
from storage.reader import ReadReport, read_evidence
from storage.recovery import recover_card, scan_intact_prefix
from tests.evidence_helpers import FIXED_NOW_MS, open_writer


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
    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS)
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
    recover_card(CardLayout(tmp_path), device_key, Events(), FIXED_NOW_MS)
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
    recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS)
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
    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS)
    assert report.discarded == [path]
    assert not path.exists()
    assert events.names() == ["storage.empty_file_discarded"]


def test_leftover_tmp_files_are_swept(tmp_path: Path, device_key: DeviceKey) -> None:
    stray = tmp_path / "evidence" / "abc" / "x.json.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"{")
    events = Events()
    report = recover_card(CardLayout(tmp_path), device_key, events, FIXED_NOW_MS)
    assert report.swept_tmp == [stray]
    assert not stray.exists()
    assert events.names() == ["storage.tmp_swept"]


def test_recovery_is_idempotent(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    unsealed_file(tmp_path, recipient, os.urandom(20_000), syncs=2)
    layout = CardLayout(tmp_path)
    recover_card(layout, device_key, Events(), FIXED_NOW_MS)
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = recover_card(layout, device_key, Events(), FIXED_NOW_MS + 5)
    assert again.recovered == []
    assert again.discarded == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_interruption_signed_by_another_box_is_rejected(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    part = unsealed_file(tmp_path, recipient, os.urandom(20_000), syncs=2)
    recover_card(CardLayout(tmp_path), DeviceKey.generate(), Events(), FIXED_NOW_MS)
    sealed = part.with_name(part.name.removesuffix(".part"))
    with pytest.raises(BadInterruptionRecord, match="not signed by this box"):
        decrypt(sealed, recipient, device_key)


def test_truncating_a_recovered_file_is_not_an_interruption(
    tmp_path: Path, recipient: RecipientPrivateKey, device_key: DeviceKey
) -> None:
    """Someone cutting chunks off after recovery cannot pass it off as the power cut."""
    part = unsealed_file(tmp_path, recipient, os.urandom(40_000), syncs=4)
    recover_card(CardLayout(tmp_path), device_key, Events(), FIXED_NOW_MS)
    sealed = part.with_name(part.name.removesuffix(".part"))
    data = sealed.read_bytes()
    _, header_len = decode_header(data)
    assert header_len < len(data)
    sealed.write_bytes(data[:-88])  # drop the interruption record
    with pytest.raises(TruncatedFile):
        decrypt(sealed, recipient, device_key)
