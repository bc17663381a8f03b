"""Where things live on the SD card, and the plaintext sidecar of each evidence file.

Layout (docs/evidence-format.md section 5):

    <card>/evidence/<recording_id>/<file_id>.mvbe.part   being written
    <card>/evidence/<recording_id>/<file_id>.mvbe        sealed or recovered
    <card>/evidence/<recording_id>/<file_id>.json        sidecar: plaintext facts, atomic writes
    <card>/evidence/<recording_id>/<file_id>.mvbe.quarantined   a `.part` recovery refused to
                                                         close (storage/recovery.py): kept as found
    <card>/catalog/                                      diskcache (sqlite); rebuildable
    <card>/holds/holds.json                              the holds (storage/holds.py); atomic
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.durable import atomic_write_bytes
from common.faults import StorageFault

EVIDENCE_DIR = "evidence"
CATALOG_DIR = "catalog"
HOLDS_DIR = "holds"
HOLDS_FILE = "holds.json"
SEALED_SUFFIX = ".mvbe"
PART_SUFFIX = ".mvbe.part"
QUARANTINE_SUFFIX = ".mvbe.quarantined"
SIDECAR_SUFFIX = ".json"


class SidecarError(ValueError, StorageFault):
    """A sidecar that is not the JSON object this module writes."""


@dataclass(frozen=True, slots=True)
class Sidecar:
    """Plaintext facts of a sealed or recovered evidence file. No personal data."""

    recording_id: str
    file_id: str
    file_seq: int
    created_at_ms: int
    size_bytes: int
    sha256_hex: str
    sealed_at_ms: int
    interrupted_at_chunk: int | None

    def to_json_bytes(self) -> bytes:
        return json.dumps(
            {
                "recording_id": self.recording_id,
                "file_id": self.file_id,
                "file_seq": self.file_seq,
                "created_at_ms": self.created_at_ms,
                "size_bytes": self.size_bytes,
                "sha256": self.sha256_hex,
                "sealed_at_ms": self.sealed_at_ms,
                "interrupted_at_chunk": self.interrupted_at_chunk,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> Sidecar:
        try:
            obj = json.loads(raw)
            interrupted = obj["interrupted_at_chunk"]
            sidecar = cls(
                recording_id=str(obj["recording_id"]),
                file_id=str(obj["file_id"]),
                file_seq=int(obj["file_seq"]),
                created_at_ms=int(obj["created_at_ms"]),
                size_bytes=int(obj["size_bytes"]),
                sha256_hex=str(obj["sha256"]),
                sealed_at_ms=int(obj["sealed_at_ms"]),
                interrupted_at_chunk=None if interrupted is None else int(interrupted),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SidecarError(f"malformed sidecar: {exc}") from exc
        if len(sidecar.sha256_hex) != 64:
            raise SidecarError("malformed sidecar: sha256 is not 64 hex digits")
        return sidecar


@dataclass(frozen=True, slots=True)
class CardLayout:
    """Paths on one card. Pure: constructing it touches nothing."""

    root: Path

    @property
    def evidence_root(self) -> Path:
        return self.root / EVIDENCE_DIR

    @property
    def catalog_dir(self) -> Path:
        return self.root / CATALOG_DIR

    @property
    def holds_dir(self) -> Path:
        return self.root / HOLDS_DIR

    @property
    def holds_path(self) -> Path:
        return self.holds_dir / HOLDS_FILE

    def recording_dir(self, recording_id: str) -> Path:
        return self.evidence_root / recording_id

    def part_path(self, recording_id: str, file_id: str) -> Path:
        return self.recording_dir(recording_id) / (file_id + PART_SUFFIX)

    def sealed_path(self, recording_id: str, file_id: str) -> Path:
        return self.recording_dir(recording_id) / (file_id + SEALED_SUFFIX)

    def sidecar_path(self, recording_id: str, file_id: str) -> Path:
        return self.recording_dir(recording_id) / (file_id + SIDECAR_SUFFIX)

    def quarantine_path(self, recording_id: str, file_id: str) -> Path:
        return self.recording_dir(recording_id) / (file_id + QUARANTINE_SUFFIX)

    def part_files(self) -> Iterator[Path]:
        """Files that were being written when the box stopped (sorted, for reproducible logs)."""
        if self.evidence_root.exists():
            yield from sorted(self.evidence_root.glob("*/*" + PART_SUFFIX))

    def sealed_files(self) -> Iterator[Path]:
        if self.evidence_root.exists():
            yield from sorted(self.evidence_root.glob("*/*" + SEALED_SUFFIX))


def write_sidecar(layout: CardLayout, sidecar: Sidecar) -> Path:
    """Write the sidecar atomically (tmp, fsync, rename, fsync dir); return its path."""
    path = layout.sidecar_path(sidecar.recording_id, sidecar.file_id)
    atomic_write_bytes(path, sidecar.to_json_bytes(), mode=0o640)
    return path


def read_sidecar(path: Path) -> Sidecar:
    return Sidecar.from_json_bytes(path.read_bytes())
