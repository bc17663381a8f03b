"""The evidence store: recordings in, sealed encrypted files + catalog + audit events out.

This is the synchronous shell around the pure parts (format, retention, space policy). The async
shell (`gateway/capture/service.py`) gives each camera stream a worker thread so the event loop
never blocks on the card.

Invariants:
- a recording's data key lives in its `Recording` object only and is destroyed when it closes;
- every file written or recovered is in the catalog with its SHA-256 before anything reports it;
- nothing un-attested or held is ever deleted to make room: a full card refuses new recordings;
- the holds (storage/holds.py) live in `<card>/holds/holds.json`, written before the catalog's
  `held` flags that copy them; every open copies the book into the catalog again, and every file
  catalogued or sealed takes its recording's hold, so a hold covers files sealed later and
  survives a catalog rebuild and a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.alarms import Alarms
from storage.audit_io import AuditLog
from storage.card import PART_SUFFIX, CardLayout, Sidecar
from storage.card_health import ALARM_OF, CardCondition
from storage.card_reopen import CardAway
from storage.catalog import AttestationMismatch, Catalog
from storage.devicekey import DeviceKey
from storage.envelope import Recipients, RecordingKey
from storage.errors import RecordingRefused, WriterPoisoned
from storage.evidence_format import NONCE_PREFIX_BYTES, EvidenceHeader
from storage.holds import HoldBook
from storage.holds_io import load_holds
from storage.models import UPLOAD_CLASSES, FileRecord, FileState
from storage.recovery import RecoveryReport
from storage.recovery_alarm import raise_recovery_alarm
from storage.retention import RetentionPlan
from storage.space import (
    CardFullError,
    SpacePolicy,
    card_free_bytes,
    decide_admission,
    write_guard,
)
from storage.store_card import CardEpisodes, open_card
from storage.store_holds import StoreHolds
from storage.store_retention import StoreRetention
from storage.store_settings import StoreSettings as StoreSettings  # importers take it here
from storage.trusted_time_io import TrustedClock
from storage.writer import (
    DurablePoint,
    EvidenceFileWriter,
    MetadataTooLarge,
    SealedFile,
)

log = logging.getLogger(__name__)

Clock = Callable[[], int]
_RECORDING_ID_HEX = re.compile(r"[0-9a-f]{32}")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class EvidenceStore(CardEpisodes, StoreHolds, StoreRetention):
    """Owns the card: recovery at open, recordings, catalog, retention.

    Its holds (storage/store_holds.py), retention pass (storage/store_retention.py) and dying
    card episodes (storage/store_card.py) are mixins in files of their own."""

    def __init__(
        self,
        settings: StoreSettings,
        recipients: Recipients,
        device_key: DeviceKey,
        audit: AuditLog,
        catalog: Catalog,
        clock_ms: Clock,
        alarms: Alarms | None = None,
        trusted: TrustedClock | None = None,
        holds: HoldBook | None = None,
    ) -> None:
        self.settings = settings
        self.layout = CardLayout(settings.card_dir)
        self.recipients = recipients
        self.device_key = device_key
        self.audit = audit
        self.catalog = catalog
        self.clock_ms = clock_ms
        self.alarms = Alarms() if alarms is None else alarms  # the box's one Alarms
        # Retention's clock (docs/retention.md); `clock_ms` only stamps. Kept nowhere by default:
        # without an anchor nothing unattested ever expires, which is the safe side.
        self.trusted = TrustedClock.open(None) if trusted is None else trusted
        self.last_retention: RetentionPlan | None = None
        self.holds = HoldBook() if holds is None else holds  # the record; catalog flags copy it
        # Upload class of each recording still being written (its future files inherit it).
        self._live_upload_classes: dict[str, str] = {}
        self.check_space = write_guard(self.layout.root, settings.space)
        self._lock = threading.Lock()
        # One retention pass at a time: the uplink starts one after every attested upload,
        # from worker threads, and two passes planned from the same catalog would both delete
        # (and audit) the same file. Separate from _lock, which each deletion takes.
        self._retention_lock = threading.Lock()
        self._holds_lock = threading.Lock()  # one change of the book at a time
        # Files a writer has open: a reopen after a card fault must not recover them.
        self._live_files: set[str] = set()

    @classmethod
    def open(
        cls,
        settings: StoreSettings,
        recipients: Recipients,
        device_key: DeviceKey,
        audit: AuditLog,
        clock_ms: Clock = wall_clock_ms,
        alarms: Alarms | None = None,
        trusted: TrustedClock | None = None,
    ) -> tuple[EvidenceStore, RecoveryReport]:
        """Recover the card, open (or rebuild) the catalog, and register recovered files."""
        layout = CardLayout(settings.card_dir)
        catalog, report = open_card(layout, device_key, audit, clock_ms(), frozenset())
        store = cls(settings, recipients, device_key, audit, catalog, clock_ms, alarms, trusted)
        store._adopt_recovery(report)
        store._forget_never_written(frozenset())  # no writer runs yet at open
        return store, report

    def _adopt_recovery(self, report: RecoveryReport) -> None:
        """Catalog what recovery closed or discarded, read the holds, raise its alarm."""
        self.holds = load_holds(self.layout, self.catalog, self.audit, self.alarms, self.clock_ms())
        for sidecar in report.recovered:
            self._register_sealed(sidecar)
        for discarded in report.discarded:
            self._forget_discarded(discarded.name.removesuffix(PART_SUFFIX))
        raise_recovery_alarm(self.alarms, self.layout, report)
        # A rebuilt catalog knows no holds, and a power cut may have come between book and flags.
        self._copy_holds_to_catalog(None, self.holds)

    def close(self) -> None:
        with contextlib.suppress(CardAway):  # the card went away and did not come back
            self.catalog.close()

    # -- recordings -------------------------------------------------------------------------

    def start_recording(self, facts: dict[str, Any]) -> Recording:
        """Begin a recording (one incident); refuse with an alarm when the card is too full.

        `facts` are the plaintext-free recording facts (device serial, officer, vehicle, trigger):
        they go into each file's encrypted `recording` metadata object, never into plaintext.
        """
        admission = decide_admission(card_free_bytes(self.layout.root), self.settings.space)
        if not admission.admitted:
            reason = str(admission.reason)
            self.alarms.raise_("card_full", reason)
            self.audit.append("storage.recording_refused", reason=reason)
            raise RecordingRefused(f"recording refused: {reason}")
        upload_class = str(facts.get("upload_class", "P1"))
        if upload_class not in UPLOAD_CLASSES:
            raise ValueError(f"unknown upload class {upload_class!r}")
        recording_id = uuid.uuid4().bytes
        self._live_upload_classes[recording_id.hex()] = upload_class
        key = RecordingKey(recording_id, self.recipients)
        trigger = facts.get("trigger")
        source = trigger.get("source") if isinstance(trigger, dict) else None
        self.audit.append(
            "storage.recording_started",
            recording_id=recording_id.hex(),
            trigger_source=None if source is None else str(source),
        )
        return Recording(self, key, facts)

    def _register_recording_file(self, header: EvidenceHeader) -> None:
        # Stamped after the header: a later stamp only makes the file look younger (safe side).
        reading, created = self.trusted.stamp()
        record = FileRecord(
            file_id=header.file_id.hex(),
            recording_id=header.recording_id.hex(),
            file_seq=header.file_seq,
            created_at_ms=header.created_at_ms,
            state=FileState.RECORDING,
            upload_class=self._live_upload_classes.get(header.recording_id.hex(), "P1"),
            boot_id=reading.boot_id,
            created_mono_ms=reading.mono_ms,
            trusted_created_low_ms=None if created is None else created.low_ms,
            trusted_created_high_ms=None if created is None else created.high_ms,
            trusted_created_by=None if created is None else created.by,
        )
        with self._lock, _catalog_full_is_card_full(self.layout.root, self.settings.space):
            # Under the lock that `change_holds` takes to copy a new book: never a stale hold.
            self.catalog.put(record.with_changes(held=self.holds.is_held(record.recording_id)))

    def flag_incident(self, recording_id: str) -> list[FileRecord]:
        """Make every file of a recording, present and future, a P0 upload (officer's flag).

        Audited; deleted files are left as they are. Returns the files that changed.
        """
        with self._lock:
            if recording_id in self._live_upload_classes:
                self._live_upload_classes[recording_id] = "P0"
            changed = [
                self.catalog.set_upload_class(record.file_id, "P0")
                for record in self.catalog.by_recording(recording_id)
                if record.state is not FileState.DELETED and record.upload_class != "P0"
            ]
        self.audit.append(
            "storage.recording_flagged", recording_id=recording_id, files=len(changed)
        )
        return changed

    def write_report(self, recording_id_hex: str, report: dict[str, Any]) -> SealedFile:
        """Seal the officer's `report` (RULES R4) as an evidence file of recording
        `recording_id_hex`: a fresh data key for the store's recipients, one stream "report"
        (container "json") whose only content is the report as a metadata object.

        So the report is encrypted like video, catalogued under the recording's id and uploaded
        with it (at the recording's upload class: P0 when any of its files is P0). The key is
        destroyed before returning; no report text is left in plaintext anywhere. Raises
        ValueError for an id that is not 32 hex digits, CardFullError when the card is full.
        """
        sealed = self._seal_note(recording_id_hex, "report", {"type": "report", **report})
        self.audit.append(
            "storage.report_sealed", recording_id=recording_id_hex, file_id=sealed.sidecar.file_id
        )
        return sealed

    def write_hold_note(self, recording_id_hex: str, note: dict[str, Any]) -> SealedFile:
        """Seal why a recording is held (the admin's words: they may be personal) as an
        encrypted evidence file of it, stream "hold", exactly as `write_report` seals a report:
        only the back office can read it, and it reaches the back office with the recording."""
        sealed = self._seal_note(recording_id_hex, "hold", {"type": "hold", **note})
        self.audit.append(
            "storage.hold_note_sealed",
            recording_id=recording_id_hex,
            file_id=sealed.sidecar.file_id,
        )
        return sealed

    def _seal_note(
        self, recording_id_hex: str, stream_name: str, obj: dict[str, Any]
    ) -> SealedFile:
        if _RECORDING_ID_HEX.fullmatch(recording_id_hex) is None:
            raise ValueError("a recording id is 32 lowercase hex digits")
        recording_id = bytes.fromhex(recording_id_hex)
        # A note filed while its recording still runs shares the live upload class.
        live = recording_id_hex in self._live_upload_classes
        if not live:
            with self._lock:
                classes = {r.upload_class for r in self.catalog.by_recording(recording_id_hex)}
            self._live_upload_classes[recording_id_hex] = "P0" if "P0" in classes else "P1"
        recording = Recording(self, RecordingKey(recording_id, self.recipients), {})
        try:
            stream = recording.open_stream(stream_name, container="json")
            stream.add_metadata(obj)
            stream.close()
        finally:
            recording.key.destroy()
            if not live:
                self._end_recording(recording_id_hex)
        (sealed,) = recording.sealed
        return sealed

    def _end_recording(self, recording_id: str) -> None:
        self._live_upload_classes.pop(recording_id, None)

    def _forget_discarded(self, file_id: str) -> None:
        """A `.part` that recovery deleted (no durable header) leaves the catalog as DELETED."""
        with self._lock:
            record = self.catalog.get(file_id)
            if record is not None and record.state is FileState.RECORDING:
                self.catalog.transition(file_id, FileState.DELETED, deleted_at_ms=self.clock_ms())

    def _register_sealed(self, sealed: Sidecar) -> None:
        """Catalog a sealed or recovered file with its checksum."""
        file_id, recording_id = sealed.file_id, sealed.recording_id
        with self._lock:
            existing = self.catalog.get(file_id)
            base = existing or FileRecord(
                file_id=file_id,
                recording_id=recording_id,
                file_seq=sealed.file_seq,
                created_at_ms=sealed.created_at_ms,
                state=FileState.RECORDING,
            )
            self.catalog.put(
                base.with_changes(
                    state=FileState.SEALED,
                    size_bytes=sealed.size_bytes,
                    sha256_hex=sealed.sha256_hex,
                    sealed_at_ms=sealed.sealed_at_ms,
                    interrupted_at_chunk=sealed.interrupted_at_chunk,
                    held=self.holds.is_held(recording_id),
                )
            )

    def record_attestation(self, file_id: str, sha256_hex: str) -> FileRecord:
        """The back office echoed `sha256_hex` for `file_id`: note it, audit it (RULES S5).

        A match moves the file to VERIFIED (deletable, S3); a mismatch is audited and raises
        AttestationMismatch, and the file stays on the card. A match is audited *before* the
        catalog makes the file deletable: a power cut between the two leaves an audited
        attestation of a file still queued (asked again, audited again), never a file deleted
        on an attestation the log does not hold.
        """
        with self._lock:
            current = self.catalog.get(file_id)
        if current is not None and current.sha256_hex == sha256_hex.lower():
            self.audit.append("storage.file_attested", file_id=file_id, sha256=sha256_hex)
        try:
            with self._lock:
                return self.catalog.record_attestation(file_id, sha256_hex)
        except AttestationMismatch:
            self.audit.append(
                "storage.attestation_mismatch", file_id=file_id, echoed_sha256=sha256_hex
            )
            raise


@contextlib.contextmanager
def _catalog_full_is_card_full(card: Path, space: SpacePolicy) -> Iterator[None]:
    """sqlite's own "database or disk is full" is the card being full: say so by fault."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "full" not in str(exc):
            raise
        raise CardFullError(card_free_bytes(card), space.reserve_bytes) from exc


class Recording:
    """One incident: one data key, one stream writer per camera. Close it to destroy the key."""

    def __init__(self, store: EvidenceStore, key: RecordingKey, facts: dict[str, Any]) -> None:
        self.store = store
        self.key = key
        self.facts = dict(facts)
        self.recording_id = key.recording_id.hex()
        self.streams: dict[str, StreamWriter] = {}
        self.sealed: list[SealedFile] = []

    def open_stream(
        self, camera: str, *, container: str = "mpegts", resume: bool = False, **camera_facts: Any
    ) -> StreamWriter:
        """The camera's stream in this recording. With `resume` (its card failed and is back)
        the camera's earlier stream is abandoned (recovery closes its `.part`) and the new one
        goes on with the next file number; without it a second stream is refused."""
        earlier = self.streams.get(camera)
        if earlier is not None and not resume:
            raise ValueError(f"camera {camera!r} already has a stream in this recording")
        stream = StreamWriter(self, camera, container, camera_facts)
        if earlier is not None:
            earlier.abandon()
            stream._file_seq = earlier.next_file_seq
        self.streams[camera] = stream
        return stream

    def close(self) -> list[SealedFile]:
        """Seal every stream, destroy the data key, and audit the recording as sealed."""
        try:
            for stream in self.streams.values():
                stream.close()
        finally:
            self.key.destroy()
            self.store._end_recording(self.recording_id)
        self.store.audit.append(
            "storage.recording_sealed", recording_id=self.recording_id, files=len(self.sealed)
        )
        return self.sealed


class StreamWriter:
    """One camera's files within a recording; rolls to a new file at segment boundaries.

    Not thread-safe: exactly one thread drives it (the async shell's worker for this camera).
    """

    def __init__(
        self, recording: Recording, camera: str, container: str, camera_facts: dict[str, Any]
    ) -> None:
        self.recording = recording
        self.camera = camera
        self.container = container
        self.camera_facts = camera_facts
        self._file_seq = 0
        self._writer: EvidenceFileWriter | None = None
        self._file_opened_mono_s = 0.0
        self._file_first_mono_ns: int | None = None  # capture time of the file's first segment
        self._closed = False

    @property
    def store(self) -> EvidenceStore:
        return self.recording.store

    def append_media(self, data: bytes) -> None:
        with self._stop_on_full_card():
            self._current().append_media(data)

    def add_metadata(self, obj: dict[str, Any]) -> None:
        """Record `obj` in the recording; one too large for a chunk is replaced by a record of
        its refusal (type and size only), so the file stays readable and the gap is evidence."""
        with self._stop_on_full_card():
            writer = self._current()
            try:
                writer.append_metadata(obj)
            except MetadataTooLarge as exc:
                log.error("recording metadata refused: %s", exc)  # no content: it may be personal
                writer.append_metadata(
                    {
                        "type": "metadata_refused",
                        "refused_type": str(obj.get("type", ""))[:64],
                        "bytes": exc.plaintext_bytes,
                    }
                )

    def end_segment(self, segment: dict[str, Any]) -> DurablePoint:
        """Record the segment's facts, make everything durable, roll the file if it is full."""
        with self._stop_on_full_card():
            writer = self._current()
            writer.append_metadata({"type": "segment", **segment})
            durable = writer.sync()
        settings = self.store.settings
        if writer.file_bytes >= settings.file_target_bytes or (
            self._file_span_s(segment) >= settings.file_target_s
        ):
            self._seal_current()
        return durable

    def _file_span_s(self, segment: dict[str, Any]) -> float:
        """How much time the current file holds, up to the end of `segment`: from the capture
        time of its first segment (so a first file counts its pre-record, written in a burst
        when the recording starts), and never less than the time since the file opened (a
        segment without capture times: an import)."""
        opened_s = time.monotonic() - self._file_opened_mono_s
        start_ns = segment.get("start_mono_ns")
        end_ns = segment.get("end_mono_ns")
        if self._file_first_mono_ns is None and isinstance(start_ns, int):
            self._file_first_mono_ns = start_ns
        first_ns = self._file_first_mono_ns
        if first_ns is None or not isinstance(end_ns, int):
            return opened_s
        return max(opened_s, (end_ns - first_ns) / 1e9)

    def close(self) -> None:
        if self._writer is not None:
            self._seal_current()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def next_file_seq(self) -> int:
        return self._file_seq

    def abandon(self) -> None:
        """End the stream without sealing (its card failed): the `.part` keeps its whole
        records and recovery closes it once the card is back. Never raises."""
        writer, self._writer = self._writer, None
        self._closed = True
        if writer is not None:
            with contextlib.suppress(Exception):  # closing a dead card's file may fail too
                writer.abandon()
            self.store._writer_ended(writer.path.name.removesuffix(PART_SUFFIX))

    @contextlib.contextmanager
    def _stop_on_full_card(self) -> Iterator[None]:
        """On a full card: seal what was written (the reserve pays for it), alarm, re-raise.
        On a failed write: end the stream without sealing (`_write_failed`), alarm, re-raise.

        Older evidence is never touched to make room (issue: refuse rather than destroy).
        """
        try:
            yield
        except CardFullError as exc:
            self.store.alarms.raise_("card_full", str(exc))
            self.store.audit.append("storage.card_full", camera_stream=self.camera)
            self.close()
            raise
        except WriterPoisoned as exc:
            self._write_failed(exc)
            raise

    def _write_failed(self, exc: WriterPoisoned) -> None:
        """A write or fsync failed: the writer refuses from now on (no nonce twice), and this
        stream ends. Its `.part` keeps the whole records; recovery closes it at the next start.
        No new file is opened on a card that just failed a write."""
        writer, self._writer = self._writer, None
        self._closed = True
        if writer is not None:
            self.store._writer_ended(writer.path.name.removesuffix(PART_SUFFIX))
        if self.store.note_card_fault(exc) is None:  # not an errno of the card's: still failed
            self.store.alarms.raise_(ALARM_OF[CardCondition.FAILED], str(exc))
        self.store.audit.append(
            "storage.write_failed",
            camera_stream=self.camera,
            file_id=None if writer is None else writer.path.name.removesuffix(PART_SUFFIX),
        )

    def _current(self) -> EvidenceFileWriter:
        if self._closed:
            raise ValueError(f"stream {self.camera!r} is closed")
        if self._writer is None:
            self._writer = self._open_file()
        return self._writer

    def _open_file(self) -> EvidenceFileWriter:
        store = self.store
        header = EvidenceHeader(
            recording_id=self.recording.key.recording_id,
            file_id=uuid.uuid4().bytes,
            file_seq=self._file_seq,
            created_at_ms=store.clock_ms(),
            chunk_max_bytes=store.settings.chunk_max_bytes,
            nonce_prefix=os.urandom(NONCE_PREFIX_BYTES),
            recipients=self.recording.key.stanzas,
            threshold=self.recording.key.threshold,
        )
        store._register_recording_file(header)
        store._writer_opened(header.file_id.hex())  # before its `.part` exists: see reopen_card
        try:
            writer = EvidenceFileWriter(
                store.layout,
                header,
                self.recording.key.file_keys(header.file_id),
                space_check=store.check_space,
                clock_ms=store.clock_ms,
            )
        except BaseException:
            # No durable header (e.g. a full card): the writer removed its .part, so the
            # catalog must not keep a RECORDING entry that no file and no recovery will end.
            store._writer_ended(header.file_id.hex())
            store._forget_discarded(header.file_id.hex())
            raise
        self._file_seq += 1  # its header is durable: recovery keeps this file under its number
        try:
            self._write_recording_facts(writer, header)
        except BaseException:
            writer.abandon()  # the .part holds whole records; recovery closes it at next start
            store._writer_ended(header.file_id.hex())
            raise
        self._file_opened_mono_s = time.monotonic()
        self._file_first_mono_ns = None
        return writer

    def _write_recording_facts(self, writer: EvidenceFileWriter, header: EvidenceHeader) -> None:
        writer.append_metadata(
            {
                "type": "recording",
                "recording_id": header.recording_id.hex(),
                "file_id": header.file_id.hex(),
                "file_seq": header.file_seq,
                "camera": self.camera,
                "container": self.container,
                **self.recording.facts,
                **self.camera_facts,
            }
        )

    def _seal_current(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return

        def audit_the_seal(sidecar: Sidecar) -> None:
            # Before the file's name changes (storage/writer.py `seal`): a power cut can leave a
            # seal audited and completed again by recovery, never a sealed file unaudited (S5).
            self.store.audit.append(
                "storage.file_sealed",
                file_id=sidecar.file_id,
                recording_id=sidecar.recording_id,
                size_bytes=sidecar.size_bytes,
                sha256=sidecar.sha256_hex,
            )

        try:
            sealed = writer.seal(before_publish=audit_the_seal)
        except WriterPoisoned as exc:
            self._writer = writer  # named in the audit entry
            self._write_failed(exc)
            raise
        finally:
            if writer.closed:  # sealed, or failed for good: recovery may close its `.part`
                self.store._writer_ended(writer.path.name.removesuffix(PART_SUFFIX))
        self.recording.sealed.append(sealed)
        self.store._register_sealed(sealed.sidecar)
