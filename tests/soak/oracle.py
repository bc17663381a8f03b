"""The soak's oracle: what the box's audit log says it recorded, against what the back office holds.

Which oracle for what (docs/soak.md):
- *which files* were recorded, and *which bytes*: the box's audit log. Every file the box made
  evidence of is named there once, by how it became evidence: `storage.file_sealed` (with its
  SHA-256), `storage.recording_interrupted` (a power cut: the chunks recovery kept, closed with a
  record the device key signs), or `storage.seal_completed` (the last chunk was on the card, only
  the rename was missing). The log is hash-chained and signed, and is verified separately.
- *how many seconds*: only the segment metadata inside the encrypted files knows (the box writes
  no footage facts in plaintext, not even into its audit log). Seconds are therefore read from
  the back office's decrypted copies, and they are the recorded seconds because the bytes are
  bound to what the box wrote: by the audited SHA-256 (sealed), by the device signature over the
  kept bytes (interrupted), by the attestation the box accepted (all of them). A seconds oracle
  kept by the test itself (wall clock between the scripted trigger and stop) would be a timed
  guess, and wrong for every recording a power cut ended.

Pure, apart from `read_back_office`, which decrypts the stored files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backoffice.decrypt import decrypt_file
from storage.devicekey import DevicePublicKey
from storage.envelope import RecipientPrivateKey
from storage.errors import EvidenceError

NS_PER_S = 1_000_000_000
RECORDED_HOW = {
    "storage.file_sealed": "sealed",
    "storage.recording_interrupted": "interrupted",
    "storage.seal_completed": "completed",
}
NEVER_IN_A_SOAK = frozenset(
    {
        "storage.attestation_mismatch",
        "storage.catalog_rebuilt",
        "uplink.upload_blocked",
        "uplink.pin_mismatch",
        "uplink.uploaded_unattested",
        "storage.card_full",
        "storage.recording_refused",
        "storage.part_refused",
    }
)
"""Events that mean the soak found trouble: nothing in it corrupts a card, fills it or changes
a certificate."""


@dataclass(frozen=True, slots=True)
class RecordedFile:
    """One file the audit log names as evidence. `sha256_hex` is known for sealed files only."""

    file_id: str
    how: str
    recording_id: str | None
    sha256_hex: str | None
    interrupted_at_chunk: int | None


@dataclass
class AuditFacts:
    """What one audit log says (events in seq order; later events win where it matters)."""

    recorded: dict[str, RecordedFile] = field(default_factory=dict)
    trigger_of: dict[str, str | None] = field(default_factory=dict)  # recording id -> source
    flagged: set[str] = field(default_factory=set)  # recording ids flagged P0
    uploaded_on: dict[str, str] = field(default_factory=dict)  # file id -> link
    attested: dict[str, str] = field(default_factory=dict)  # file id -> SHA-256 echoed
    deleted: set[str] = field(default_factory=set)
    troubles: list[str] = field(default_factory=list)
    starts: int = 0
    torn_tails_repaired: int = 0
    events: int = 0

    @classmethod
    def parse(cls, lines: Iterable[bytes]) -> AuditFacts:
        facts = cls()
        for line in lines:
            entry = json.loads(line)
            facts.note(str(entry["event"]), entry["fields"])
        return facts

    def note(self, event: str, fields: Mapping[str, Any]) -> None:
        self.events += 1
        if event in RECORDED_HOW:
            self._note_recorded(event, fields)
        elif event == "storage.recording_started":
            self.trigger_of[str(fields["recording_id"])] = fields.get("trigger_source")
        elif event == "storage.recording_flagged":
            self.flagged.add(str(fields["recording_id"]))
        elif event == "uplink.uploaded":
            self.uploaded_on[str(fields["file_id"])] = str(fields["link"])
        elif event == "storage.file_attested":
            self.attested[str(fields["file_id"])] = str(fields["sha256"])
        elif event == "storage.file_deleted":
            self.deleted.add(str(fields["file_id"]))
        elif event == "gateway.started":
            self.starts += 1
        elif event == "audit_torn_tail_repaired":
            self.torn_tails_repaired += 1
        elif event in NEVER_IN_A_SOAK:
            self.troubles.append(f"{event} {dict(fields)}")

    def _note_recorded(self, event: str, fields: Mapping[str, Any]) -> None:
        file_id = str(fields["file_id"])
        before = self.recorded.get(file_id)
        if before is not None and _completes(before, event, fields):
            return  # sealed and audited, then the rename done by recovery after a power cut
        if before is not None:
            self.troubles.append(f"file {file_id} became evidence twice ({event})")
        recording_id = fields.get("recording_id")
        chunk = fields.get("interrupted_at_chunk")
        sha256 = fields.get("sha256")
        self.recorded[file_id] = RecordedFile(
            file_id=file_id,
            how=RECORDED_HOW[event],
            recording_id=None if recording_id is None else str(recording_id),
            sha256_hex=None if sha256 is None else str(sha256),
            interrupted_at_chunk=None if chunk is None else int(chunk),
        )

    def upload_class(self, recording_id: str, classes_by_source: Mapping[str, str]) -> str:
        """The class the recording's files uploaded as: P0 once flagged, else by its trigger."""
        if recording_id in self.flagged:
            return "P0"
        return classes_by_source.get(str(self.trigger_of.get(recording_id)), "P1")


def _completes(before: RecordedFile, event: str, fields: Mapping[str, Any]) -> bool:
    """A seal audited before its rename (storage/writer.py `seal`), completed by recovery after
    a power cut: the same bytes, announced once and completed once."""
    return (
        before.how == "sealed"
        and RECORDED_HOW[event] == "completed"
        and fields.get("sha256") == before.sha256_hex
    )


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file in the back office's `complete/`, as its decryption saw it."""

    file_id: str
    recording_id: str
    size_bytes: int
    sha256_hex: str
    interrupted_at_chunk: int | None
    signature_checked: bool
    segments: int
    media_ns: int
    error: str | None = None  # the decryption's refusal, if it refused


def media_span_ns(metadata: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(segments, nanoseconds): each segment spans its first to its last packet (the box's
    monotonic clock); a file's media time is the sum over its segments. Integers, so that sums
    compare exactly whatever their order."""
    spans_ns = [
        int(m["end_mono_ns"]) - int(m["start_mono_ns"])
        for m in metadata
        if m.get("type") == "segment"
    ]
    return len(spans_ns), sum(spans_ns)


def read_back_office(
    store_dir: Path, key: RecipientPrivateKey, device_key: DevicePublicKey, out_dir: Path
) -> dict[str, StoredFile]:
    """Decrypt every file of `store_dir/complete` with the back office's key (as `mvb-admin
    decrypt` does); power-cut records are checked against the box's device key."""
    stored = {}
    for path in sorted((store_dir / "complete").glob("*.mvbe")):
        file_id = path.name.removesuffix(".mvbe")
        try:
            result = decrypt_file(path, key, out_dir, device_key)
        except EvidenceError as exc:
            error = f"{type(exc).__name__}: {exc}"
            size = path.stat().st_size
            stored[file_id] = StoredFile(file_id, "", size, "", None, False, 0, 0, error)
            continue
        report = result.report
        segments, span_ns = media_span_ns(report.metadata)
        stored[file_id] = StoredFile(
            file_id=file_id,
            recording_id=report.header.recording_id.hex(),
            size_bytes=path.stat().st_size,
            sha256_hex=report.file_sha256_hex,
            interrupted_at_chunk=report.interrupted_at_chunk,
            signature_checked=report.interruption_signature_checked,
            segments=segments,
            media_ns=span_ns,
        )
    return stored


def find_problems(
    facts: AuditFacts,
    stored: Mapping[str, StoredFile],
    classes_by_source: Mapping[str, str],
    cellular_links: frozenset[str],
) -> list[str]:
    """Every way the back office's holdings differ from what the audit log says was recorded."""
    problems = list(facts.troubles)
    for recorded in facts.recorded.values():
        problems += _file_problems(facts, recorded, stored.get(recorded.file_id))
    for file_id in sorted(set(stored) - set(facts.recorded)):
        problems.append(f"file {file_id} arrived but the audit log never names it as recorded")
    for file_id, link in sorted(facts.uploaded_on.items()):
        holding = stored.get(file_id)
        problems += _link_problems(facts, holding, link, classes_by_source, cellular_links)
    return problems


def _file_problems(
    facts: AuditFacts, recorded: RecordedFile, stored: StoredFile | None
) -> list[str]:
    name = f"file {recorded.file_id} ({recorded.how})"
    if stored is None:
        return [f"{name} is not at the back office"]
    if stored.error is not None:
        return [f"{name} does not decrypt: {stored.error}"]
    problems = []
    if recorded.sha256_hex is not None and stored.sha256_hex != recorded.sha256_hex:
        problems.append(f"{name}: the back office holds other bytes than the box sealed")
    if facts.attested.get(recorded.file_id) != stored.sha256_hex:
        problems.append(f"{name}: no audited attestation of the stored bytes")
    if recorded.file_id not in facts.deleted:
        problems.append(f"{name}: its deletion from the card is not audited")
    if recorded.recording_id not in (None, stored.recording_id):
        problems.append(f"{name}: stored under recording {stored.recording_id}")
    if stored.interrupted_at_chunk != recorded.interrupted_at_chunk:
        problems.append(
            f"{name}: interrupted at chunk {stored.interrupted_at_chunk} at the back office, "
            f"{recorded.interrupted_at_chunk} per the audit log"
        )
    if stored.interrupted_at_chunk is not None and not stored.signature_checked:
        problems.append(f"{name}: its power-cut record does not carry the device's signature")
    return problems


def _link_problems(
    facts: AuditFacts,
    stored: StoredFile | None,
    link: str,
    classes_by_source: Mapping[str, str],
    cellular_links: frozenset[str],
) -> list[str]:
    if stored is None or link not in cellular_links or not stored.recording_id:
        return []
    upload_class = facts.upload_class(stored.recording_id, classes_by_source)
    if upload_class == "P2":
        return [f"file {stored.file_id} (routine, P2) went over cellular link {link}"]
    return []


@dataclass(frozen=True, slots=True)
class Totals:
    """What was recorded and what arrived, for the summary and the media-time check."""

    recorded_files: int
    interrupted_files: int
    recorded_ns: int
    arrived_files: int
    arrived_ns: int
    arrived_bytes: int

    @property
    def recorded_s(self) -> float:
        return self.recorded_ns / NS_PER_S

    @property
    def arrived_s(self) -> float:
        return self.arrived_ns / NS_PER_S


def totals(facts: AuditFacts, stored: Mapping[str, StoredFile]) -> Totals:
    recorded = [stored[f] for f in facts.recorded if f in stored]
    return Totals(
        recorded_files=len(facts.recorded),
        interrupted_files=sum(r.how == "interrupted" for r in facts.recorded.values()),
        recorded_ns=sum(s.media_ns for s in recorded),
        arrived_files=len(stored),
        arrived_ns=sum(s.media_ns for s in stored.values()),
        arrived_bytes=sum(s.size_bytes for s in stored.values()),
    )
