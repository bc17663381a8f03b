"""Recovery of the card after a power cut (docs/evidence-format.md section 6).

The box has no key for files it was writing (the data key died with the process), so recovery
works from the plaintext framing and the crc32 of each record: it keeps every intact chunk, cuts
the torn tail, and closes the file with an interruption record signed by the device key.

The device key's signature says "this box was writing this file when it stopped", so recovery
first checks that it was (`judge_part`, pure): the store catalogues every file as RECORDING
before its first byte and as SEALED only after its rename (storage/store.py, writer.py), so a
`.part` is a power cut only when the catalog knew it as RECORDING and no sealed file or sidecar
of it is on the card. Anything else (a sealed file cut short and renamed `.part`, a file of
another card, a copy beside its sealed original) is refused: renamed `.mvbe.quarantined` as it
was found (never signed, never uploaded), audited `storage.part_refused` and returned in
`RecoveryReport.refused` for the store's sticky alarm. A catalog that was lost or broken before
this open cannot be asked: such a `.part` is recovered (a power cut that also broke the catalog
must not lose evidence) and audited with `catalog_checked` false.

Invariants: every change recovery makes to the card is audited (cut and closed, completed,
discarded, quarantined, temp files swept), with what it cut (`torn_bytes`) and the SHA-256 of
what it left; idempotent: a second run finds nothing to do.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from common.durable import durable_rename, durable_unlink, sweep_tmp_files
from storage.card import (
    PART_SUFFIX,
    QUARANTINE_SUFFIX,
    CardLayout,
    Sidecar,
    write_sidecar,
)
from storage.errors import EvidenceError
from storage.evidence_format import (
    FLAG_INTERRUPTED,
    INTERRUPTION_BODY_BYTES,
    KNOWN_FLAGS,
    RECORD_FRAMING_BYTES,
    RecordFraming,
    crc32,
    decode_framing,
    decode_header,
    file_tag,
)
from storage.models import FileState
from storage.reader import interruption_message

Scalar = str | int | bool
AuditSink = Callable[..., object]
"""`audit(event, **fields)`: where recovery reports what it did (`AuditLog.append`, audit_io)."""


class Signer(Protocol):
    """What recovery needs of the device key (storage.devicekey.DeviceKey fits)."""

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class IntactPrefix:
    """Result of walking a `.part` file: where the intact records end, and how many there are."""

    end_offset: int
    chunks: int
    sealed: bool


@dataclass(frozen=True, slots=True)
class KnownFile:
    state: FileState
    recording_id: str


@dataclass(frozen=True, slots=True)
class CatalogKnowledge:
    """What the catalog knew before this open: its `files` by file id (not those it adopted
    from the card at this open), and whether it was `complete` (neither broken nor lost: then
    every file the box ever wrote is in `files`)."""

    files: Mapping[str, KnownFile]
    complete: bool


class Verdict(enum.Enum):
    RECOVER = "recover"  # a power cut: close it, signed
    RECOVER_UNCHECKED = "recover_unchecked"  # no catalog to ask: close it, say so
    REFUSE = "refuse"  # not a file this box was writing: quarantine, alarm


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RefusedPart:
    """A `.part` recovery would not close: where its bytes are now, and why."""

    file_id: str
    recording_id: str
    quarantined: Path
    reason: str


@dataclass(slots=True)
class RecoveryReport:
    recovered: list[Sidecar] = field(default_factory=list)
    discarded: list[Path] = field(default_factory=list)
    swept_tmp: list[Path] = field(default_factory=list)
    refused: list[RefusedPart] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    """File ids recovered without a catalog to check them against."""


def judge_part(
    file_id: str,
    recording_id: str,
    catalog: CatalogKnowledge,
    *,
    sealed_exists: bool,
    sidecar_exists: bool,
) -> Judgement:
    """Pure: may recovery close this `.part` (ids from its path) as an interrupted recording of
    this box?

    Only a file the catalog knew as RECORDING of the same recording, with no sealed file and no
    sidecar of its id on the card: the catalog says RECORDING before the `.part` exists, a
    sealed file is renamed before the catalog says SEALED, and its sidecar is written after.
    """
    known = catalog.files.get(file_id)
    if sealed_exists:
        return Judgement(Verdict.REFUSE, "a sealed file with the same id is on the card")
    if known is not None and known.state is not FileState.RECORDING:
        return Judgement(Verdict.REFUSE, f"the catalog knows this file as {known.state.value}")
    if known is not None and known.recording_id != recording_id:
        return Judgement(Verdict.REFUSE, "the catalog knows this file in another recording")
    if sidecar_exists:
        return Judgement(Verdict.REFUSE, "the card holds its sidecar, written only once sealed")
    if known is not None:
        return Judgement(Verdict.RECOVER)
    if catalog.complete:
        return Judgement(Verdict.REFUSE, "the catalog never registered it: not written here")
    return Judgement(Verdict.RECOVER_UNCHECKED, "the catalog was lost: nothing to check against")


def scan_intact_prefix(data: bytes) -> IntactPrefix:
    """Pure: find the longest run of whole, crc-valid, consecutive records after the header.

    Raises EvidenceError when the header itself is not intact (nothing was ever durable then).
    """
    header, offset = decode_header(data)
    tag = file_tag(data[:offset])
    chunks = 0
    while True:
        record = _intact_record_at(data, offset, tag, chunks, header.chunk_max_bytes)
        if record is None:
            return IntactPrefix(offset, chunks, sealed=False)
        offset += record.record_len()
        chunks += 1
        if record.is_last:
            return IntactPrefix(offset, chunks, sealed=True)


def _intact_record_at(
    data: bytes, offset: int, tag: bytes, index: int, chunk_max_bytes: int
) -> RecordFraming | None:
    if offset + RECORD_FRAMING_BYTES > len(data):
        return None
    framing = decode_framing(data[offset : offset + RECORD_FRAMING_BYTES])
    plausible = (
        framing.file_tag == tag
        and framing.index == index
        and not framing.flags & (~KNOWN_FLAGS | FLAG_INTERRUPTED)
        and 1 <= framing.body_len <= chunk_max_bytes
        and offset + framing.record_len() <= len(data)
    )
    if not plausible:
        return None
    sealed = data[offset + RECORD_FRAMING_BYTES : offset + framing.record_len()]
    return framing if crc32(sealed) == framing.crc32 else None


def interruption_record(
    header_bytes: bytes, chunk_count: int, recovered_at_ms: int, prior_sha256: bytes, signer: Signer
) -> bytes:
    """The record that closes an interrupted file (spec section 6, step 4)."""
    message = interruption_message(header_bytes, chunk_count, recovered_at_ms, prior_sha256)
    body = struct.pack(">Q", recovered_at_ms) + signer.sign(message)
    framing = RecordFraming(
        file_tag(header_bytes), chunk_count, FLAG_INTERRUPTED, INTERRUPTION_BODY_BYTES, crc32(body)
    )
    return framing.encode() + body


def recover_card(
    layout: CardLayout,
    signer: Signer,
    audit: AuditSink,
    now_ms: int,
    catalog: CatalogKnowledge,
    *,
    skip: Collection[str] = (),
) -> RecoveryReport:
    """Close every `.part` file on the card that `judge_part` allows, quarantine the others,
    and sweep temp files. Idempotent. `skip`: file ids a writer of this process still has open
    (a card that came back while another camera went on writing): left alone, and with any of
    them open no temp file is swept (one may be a seal under way)."""
    report = RecoveryReport()
    for part in layout.part_files():
        recording_id, file_id = part.parent.name, part.name.removesuffix(PART_SUFFIX)
        if file_id in skip:
            continue
        judgement = judge_part(
            file_id,
            recording_id,
            catalog,
            sealed_exists=layout.sealed_path(recording_id, file_id).exists(),
            sidecar_exists=layout.sidecar_path(recording_id, file_id).exists(),
        )
        if judgement.verdict is Verdict.REFUSE:
            report.refused.append(quarantine_part(layout, part, judgement.reason, audit))
            continue
        checked = judgement.verdict is Verdict.RECOVER
        outcome = recover_part_file(layout, part, signer, audit, now_ms, catalog_checked=checked)
        if outcome is None:
            report.discarded.append(part)
        elif isinstance(outcome, RefusedPart):
            report.refused.append(outcome)
        else:
            report.recovered.append(outcome)
            if not checked:
                report.unchecked.append(file_id)
    report.swept_tmp = [] if skip else sweep_tmp_files(layout.evidence_root)
    for tmp in report.swept_tmp:
        audit("storage.tmp_swept", name=tmp.name)
    return report


def quarantine_part(layout: CardLayout, part: Path, reason: str, audit: AuditSink) -> RefusedPart:
    """Rename a refused `.part` to `<file_id>.mvbe.quarantined` (a fresh `-<n>` name when one
    is there), bytes untouched, and audit it. Nothing lists, uploads or deletes such a file."""
    recording_id, file_id = part.parent.name, part.name.removesuffix(PART_SUFFIX)
    target = layout.quarantine_path(recording_id, file_id)
    number = 1
    while target.exists():
        number += 1
        target = part.with_name(f"{file_id}{QUARANTINE_SUFFIX}-{number}")
    size_bytes = part.stat().st_size
    durable_rename(part, target)
    audit(
        "storage.part_refused",
        file_id=file_id,
        recording_id=recording_id,
        reason=reason,
        size_bytes=size_bytes,
        kept_as=target.name,
    )
    return RefusedPart(file_id, recording_id, target, reason)


def recover_part_file(
    layout: CardLayout,
    part: Path,
    signer: Signer,
    audit: AuditSink,
    now_ms: int,
    *,
    catalog_checked: bool,
) -> Sidecar | RefusedPart | None:
    """Recover one file the caller judged (`judge_part`; `catalog_checked`: there was a catalog
    to ask). None when it held nothing durable and was deleted; a RefusedPart, quarantined,
    when its header names another file than its path (the catalog was asked about the path)."""
    data = part.read_bytes()
    recording_id, file_id = part.parent.name, part.name.removesuffix(PART_SUFFIX)
    try:
        prefix = scan_intact_prefix(data)
        header, header_len = decode_header(data)
    except EvidenceError as exc:
        durable_unlink(part)
        audit(
            "storage.empty_file_discarded", file_id=file_id, reason=str(exc), size_bytes=len(data)
        )
        return None
    if (header.file_id.hex(), header.recording_id.hex()) != (file_id, recording_id):
        return quarantine_part(layout, part, "its header names another file than its path", audit)
    kept = data[: prefix.end_offset]
    torn_bytes = len(data) - prefix.end_offset
    if not prefix.sealed:
        kept += interruption_record(
            data[:header_len], prefix.chunks, now_ms, hashlib.sha256(kept).digest(), signer
        )
    _rewrite_tail(part, prefix.end_offset, kept[prefix.end_offset :])
    durable_rename(part, layout.sealed_path(recording_id, file_id))
    sidecar = Sidecar(
        recording_id=recording_id,
        file_id=file_id,
        file_seq=header.file_seq,
        created_at_ms=header.created_at_ms,
        size_bytes=len(kept),
        sha256_hex=hashlib.sha256(kept).hexdigest(),
        sealed_at_ms=now_ms,
        interrupted_at_chunk=None if prefix.sealed else prefix.chunks,
    )
    write_sidecar(layout, sidecar)
    repaired: dict[str, Scalar] = {
        "file_id": file_id,
        "recording_id": recording_id,
        "torn_bytes": torn_bytes,
        "size_bytes": sidecar.size_bytes,
        "sha256": sidecar.sha256_hex,
        "catalog_checked": catalog_checked,
    }
    if prefix.sealed:
        audit("storage.seal_completed", chunks=prefix.chunks, **repaired)
    else:
        audit("storage.recording_interrupted", interrupted_at_chunk=prefix.chunks, **repaired)
    return sidecar


def _rewrite_tail(path: Path, keep_bytes: int, append: bytes) -> None:
    """Cut the file to `keep_bytes`, append `append`, fsync: the file is whole on disk after."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, keep_bytes)
        os.lseek(fd, keep_bytes, os.SEEK_SET)
        view = memoryview(append)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
