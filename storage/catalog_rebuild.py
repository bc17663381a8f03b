"""Rebuilding the catalog from the card: what the evidence files and their sidecars say.

`scan_card` reads every `*.mvbe` and `*.mvbe.part` of a card (the catalog, storage/catalog.py,
merges the result into its records when it opens or was rebuilt); `rebuild_from_card` is its
list of records. Reading a file's facts from its bytes (`header_facts`,
`interrupted_at_chunk`) is pure; the rest reads the card and rewrites missing sidecars.

Invariants:
- A sealed file becomes SEALED, from its sidecar, or, if that is missing, unreadable or names
  another file, from the file itself, in which case a fresh sidecar is written (best effort: a
  full card only means it is recomputed on the next rebuild). A `.part` file becomes RECORDING.
- A file whose header cannot be read is left out and listed in `CardScan.unreadable`, never fatal:
  the box must still start. Nothing known only to a catalog (attestations, holds, deletions) can
  come back from here.
- Only the header facts the catalog needs are read (file_seq, created_at_ms), so a file whose
  header is otherwise damaged is still catalogued (and so still expires under S4).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.faults import StorageFault
from storage.card import (
    PART_SUFFIX,
    SEALED_SUFFIX,
    CardLayout,
    Sidecar,
    SidecarError,
    read_sidecar,
    write_sidecar,
)
from storage.errors import EvidenceError
from storage.evidence_format import (
    FLAG_INTERRUPTED,
    INTERRUPTION_BODY_BYTES,
    MAGIC,
    MAX_HEADER_BYTES,
    RECORD_FRAMING_BYTES,
    crc32,
    decode_framing,
    decode_header,
    file_tag,
)
from storage.models import FileRecord, FileState

_log = logging.getLogger(__name__)

# Header facts the catalog needs (docs/evidence-format.md 4.1): file_seq (uint32 BE) at 44 and
# created_at_ms (uint64 BE) at 48.
_HEADER_FACTS = struct.Struct(">IQ")
_HEADER_FACTS_OFFSET = 44
_HEADER_FACTS_END = _HEADER_FACTS_OFFSET + _HEADER_FACTS.size
_HEADER_PROBE_BYTES = MAX_HEADER_BYTES  # the longest header any version allows
_INTERRUPTION_RECORD_BYTES = RECORD_FRAMING_BYTES + INTERRUPTION_BODY_BYTES


@dataclass(frozen=True, slots=True)
class CardScan:
    """The records a card holds, and the files that could not be read."""

    records: list[FileRecord]
    unreadable: tuple[Path, ...]


class _UnreadableHeaderError(StorageFault):
    pass


def rebuild_from_card(layout: CardLayout) -> list[FileRecord]:
    """What the card says about its evidence files, repairing missing or broken sidecars.

    Every `*.mvbe` becomes SEALED: from its sidecar, or, if that is missing, unreadable or names
    another file, from the file itself (size and SHA-256 by reading it, ids from its path,
    file_seq and created_at_ms from its header), in which case a fresh sidecar is written.
    Every `*.mvbe.part` becomes RECORDING (recovery normally finishes those before the catalog
    opens). Files whose header cannot be read are left out (see `Catalog.unreadable_files`).
    Nothing known only to a catalog (attestations, holds, deletions) can come back from here.
    """
    return scan_card(layout).records


def scan_card(layout: CardLayout) -> CardScan:
    records: list[FileRecord] = []
    unreadable: list[Path] = []
    candidates = [(p, True) for p in layout.sealed_files()]
    candidates += [(p, False) for p in layout.part_files()]
    for path, sealed in candidates:
        try:
            records.append(_sealed_record(layout, path) if sealed else _part_record(path))
        except (OSError, _UnreadableHeaderError) as exc:
            # Not fatal: the box must still start; the caller audits `unreadable_files`.
            _log.warning("cannot catalogue evidence file %s: %s", path, exc)
            unreadable.append(path)
    return CardScan(records, tuple(unreadable))


def _ids_from_path(path: Path, suffix: str) -> tuple[str, str]:
    """(recording_id, file_id) from `evidence/<recording_id>/<file_id><suffix>`."""
    return path.parent.name, path.name.removesuffix(suffix)


def _sealed_record(layout: CardLayout, path: Path) -> FileRecord:
    recording_id, file_id = _ids_from_path(path, SEALED_SUFFIX)
    sidecar = _usable_sidecar(layout, recording_id, file_id)
    if sidecar is None:
        sidecar = _sidecar_from_file(path, recording_id, file_id)
        _write_sidecar_best_effort(layout, sidecar)
    return FileRecord(
        file_id=sidecar.file_id,
        recording_id=sidecar.recording_id,
        file_seq=sidecar.file_seq,
        created_at_ms=sidecar.created_at_ms,
        state=FileState.SEALED,
        size_bytes=sidecar.size_bytes,
        sha256_hex=sidecar.sha256_hex,
        sealed_at_ms=sidecar.sealed_at_ms,
        interrupted_at_chunk=sidecar.interrupted_at_chunk,
    )


def _part_record(path: Path) -> FileRecord:
    recording_id, file_id = _ids_from_path(path, PART_SUFFIX)
    with path.open("rb") as stream:
        file_seq, created_at_ms = _header_facts(stream.read(_HEADER_FACTS_END))
        size = os.fstat(stream.fileno()).st_size
    return FileRecord(
        file_id=file_id,
        recording_id=recording_id,
        file_seq=file_seq,
        created_at_ms=created_at_ms,
        state=FileState.RECORDING,
        size_bytes=size,
    )


def _usable_sidecar(layout: CardLayout, recording_id: str, file_id: str) -> Sidecar | None:
    """The sidecar, if it exists, parses, and is about this very file."""
    try:
        sidecar = read_sidecar(layout.sidecar_path(recording_id, file_id))
    except (OSError, SidecarError):
        return None
    if (sidecar.recording_id, sidecar.file_id) != (recording_id, file_id):
        return None
    return sidecar


def _sidecar_from_file(path: Path, recording_id: str, file_id: str) -> Sidecar:
    """Recompute a sidecar from the sealed file itself (spec 5.5 facts)."""
    with path.open("rb") as stream:
        head = stream.read(_HEADER_PROBE_BYTES)
        file_seq, created_at_ms = _header_facts(head)
        stat = os.fstat(stream.fileno())
        interrupted = _interrupted_at_chunk(stream, head, stat.st_size)
        stream.seek(0)
        sha256_hex = hashlib.file_digest(stream, "sha256").hexdigest()
    return Sidecar(
        recording_id=recording_id,
        file_id=file_id,
        file_seq=file_seq,
        created_at_ms=created_at_ms,
        size_bytes=stat.st_size,
        sha256_hex=sha256_hex,
        # The last write was the LAST chunk or the interruption record: the best fact left.
        sealed_at_ms=stat.st_mtime_ns // 1_000_000,
        interrupted_at_chunk=interrupted,
    )


def _header_facts(head: bytes) -> tuple[int, int]:
    """(file_seq, created_at_ms) from the first bytes of an evidence file."""
    if len(head) < _HEADER_FACTS_END or not head.startswith(MAGIC):
        raise _UnreadableHeaderError("no evidence header (bad magic or too short)")
    file_seq, created_at_ms = _HEADER_FACTS.unpack_from(head, _HEADER_FACTS_OFFSET)
    return int(file_seq), int(created_at_ms)


def _interrupted_at_chunk(stream: BinaryIO, head: bytes, size: int) -> int | None:
    """N if the file ends in a well-formed interruption record of this file (spec 6.4).

    Only the framing, file tag and crc are checked; the signature is the back office's to check.
    A file without a valid full header is reported as not interrupted.
    """
    try:
        _, header_len = decode_header(head)
    except EvidenceError:
        return None
    if size < header_len + _INTERRUPTION_RECORD_BYTES:
        return None
    stream.seek(size - _INTERRUPTION_RECORD_BYTES)
    tail = stream.read(_INTERRUPTION_RECORD_BYTES)
    framing = decode_framing(tail[:RECORD_FRAMING_BYTES])
    body = tail[RECORD_FRAMING_BYTES:]
    if (
        framing.flags != FLAG_INTERRUPTED
        or framing.body_len != INTERRUPTION_BODY_BYTES
        or framing.file_tag != file_tag(head[:header_len])
        or framing.crc32 != crc32(body)
    ):
        return None
    return framing.index


def _write_sidecar_best_effort(layout: CardLayout, sidecar: Sidecar) -> None:
    # The catalog record is what matters now; a sidecar that cannot be written (card full) is
    # recomputed on the next rebuild.
    try:
        write_sidecar(layout, sidecar)
    except OSError as exc:
        _log.warning("cannot rewrite sidecar of file %s: %s", sidecar.file_id, exc)
