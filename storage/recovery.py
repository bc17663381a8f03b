"""Recovery of the card after a power cut (docs/evidence-format.md section 6).

The box has no key for files it was writing (the data key died with the process), so recovery
works from the plaintext framing and the crc32 of each record: it keeps every intact chunk, cuts
the torn tail, and closes the file with an interruption record signed by the device key.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from common.durable import durable_rename, durable_unlink, sweep_tmp_files
from storage.card import PART_SUFFIX, SEALED_SUFFIX, CardLayout, Sidecar, write_sidecar
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
from storage.reader import interruption_message

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


@dataclass(slots=True)
class RecoveryReport:
    recovered: list[Sidecar] = field(default_factory=list)
    discarded: list[Path] = field(default_factory=list)
    swept_tmp: list[Path] = field(default_factory=list)


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
    layout: CardLayout, signer: Signer, audit: AuditSink, now_ms: int
) -> RecoveryReport:
    """Close every `.part` file on the card and sweep temp files. Idempotent."""
    report = RecoveryReport()
    for part in layout.part_files():
        sidecar = recover_part_file(layout, part, signer, audit, now_ms)
        if sidecar is None:
            report.discarded.append(part)
        else:
            report.recovered.append(sidecar)
    report.swept_tmp = sweep_tmp_files(layout.evidence_root)
    for tmp in report.swept_tmp:
        audit("storage.tmp_swept", name=tmp.name)
    return report


def recover_part_file(
    layout: CardLayout, part: Path, signer: Signer, audit: AuditSink, now_ms: int
) -> Sidecar | None:
    """Recover one file; None when it held nothing durable and was deleted."""
    data = part.read_bytes()
    file_id = part.name.removesuffix(PART_SUFFIX)
    try:
        prefix = scan_intact_prefix(data)
        header, header_len = decode_header(data)
    except EvidenceError as exc:
        durable_unlink(part)
        audit("storage.empty_file_discarded", file_id=file_id, reason=str(exc))
        return None
    kept = data[: prefix.end_offset]
    torn_bytes = len(data) - prefix.end_offset
    if not prefix.sealed:
        kept += interruption_record(
            data[:header_len], prefix.chunks, now_ms, hashlib.sha256(kept).digest(), signer
        )
    _rewrite_tail(part, prefix.end_offset, kept[prefix.end_offset :])
    sealed_path = part.with_name(file_id + SEALED_SUFFIX)
    durable_rename(part, sealed_path)
    sidecar = Sidecar(
        recording_id=header.recording_id.hex(),
        file_id=header.file_id.hex(),
        file_seq=header.file_seq,
        created_at_ms=header.created_at_ms,
        size_bytes=len(kept),
        sha256_hex=hashlib.sha256(kept).hexdigest(),
        sealed_at_ms=now_ms,
        interrupted_at_chunk=None if prefix.sealed else prefix.chunks,
    )
    write_sidecar(layout, sidecar)
    if prefix.sealed:
        audit("storage.seal_completed", file_id=file_id, chunks=prefix.chunks)
    else:
        audit(
            "storage.recording_interrupted",
            file_id=file_id,
            recording_id=sidecar.recording_id,
            interrupted_at_chunk=prefix.chunks,
            torn_bytes=torn_bytes,
        )
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
