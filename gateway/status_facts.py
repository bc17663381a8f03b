"""The facts the status document is built from (docs/webui.md section 3): plain values, pure.

The box's adapter (gateway/box_port.py, with gateway/status_gather.py) reads them off the
running parts; the faces build the document from them (gateway/web/status_view.py). Both sides
import this module and nothing of each other.

Invariant: a fact is a value as of `StatusInputs.at_ms` (wall clock, ms) or, for durations, of
the moment it was read; nothing here refers back to a live object.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage.models import FileRecord, FileState

WAITING_STATES = frozenset({FileState.SEALED, FileState.UPLOADING})
NOT_PAIRED = "not paired"
RECENT_RECORDINGS = 5  # the officer follows the newest few; the document stays small
DEFAULT_HOLD_TO_STOP_MS = 1500  # config/local.py [webui] hold_to_stop_ms
UPLINK_OFF = "off"  # [uplink] is off in the box's configuration


@functools.cache
def software_version() -> str:
    try:
        return importlib.metadata.version("mobile-video-box")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- facts: plain values the pure builder works from --------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordingFiles:
    """One recording's files as the officer follows its delivery (docs/webui.md 3): counts by
    state, not the files. `attested_*` include files deleted after the back office attested
    them (their evidence is safe); files retention deleted unattested are not counted.
    `started_at_ms` is the earliest file's wall-clock stamp (for the order and the label)."""

    recording_id: str
    started_at_ms: int
    files: int = 0
    size_bytes: int = 0
    recording_files: int = 0
    sealed_files: int = 0
    attested_files: int = 0
    attested_bytes: int = 0
    uploading_file_ids: frozenset[str] = frozenset()
    held: bool = False
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class StorageFacts:
    """What the card holds. `waiting_*` count sealed files not yet attested (the upload
    queue), per upload class; `flagged_recordings` have at least one P0 file;
    `held_recordings` have at least one held file on the card (storage/holds.py)."""

    card_total_bytes: int
    card_free_bytes: int
    reserve_bytes: int
    retention_days: int
    files_on_card: int = 0
    bytes_on_card: int = 0
    interrupted_files: int = 0
    waiting_files: Mapping[str, int] = field(default_factory=dict)
    waiting_bytes: Mapping[str, int] = field(default_factory=dict)
    oldest_waiting_created_ms: int | None = None
    flagged_recordings: frozenset[str] = frozenset()
    held_recordings: frozenset[str] = frozenset()
    recent_recordings: tuple[RecordingFiles, ...] = ()
    """The RECENT_RECORDINGS newest recordings with a file on the card, newest first."""


def storage_facts(
    records: Iterable[FileRecord],
    *,
    card_total_bytes: int,
    card_free_bytes: int,
    reserve_bytes: int,
    retention_days: int,
) -> StorageFacts:
    """Count the catalog's records (pure)."""
    records = tuple(records)  # walked twice: the counts, then the newest recordings
    files = bytes_on_card = interrupted = 0
    waiting_files: Counter[str] = Counter()
    waiting_bytes: Counter[str] = Counter()
    oldest_ms: int | None = None
    flagged: set[str] = set()
    held: set[str] = set()
    for record in records:
        if record.state is FileState.DELETED:
            continue
        files += 1
        bytes_on_card += record.size_bytes
        interrupted += record.interrupted_at_chunk is not None
        if record.upload_class == "P0":
            flagged.add(record.recording_id)
        if record.held:
            held.add(record.recording_id)
        if record.state in WAITING_STATES and not record.is_attested:
            waiting_files[record.upload_class] += 1
            waiting_bytes[record.upload_class] += record.size_bytes
            if oldest_ms is None or record.created_at_ms < oldest_ms:
                oldest_ms = record.created_at_ms
    return StorageFacts(
        card_total_bytes=card_total_bytes,
        card_free_bytes=card_free_bytes,
        reserve_bytes=reserve_bytes,
        retention_days=retention_days,
        files_on_card=files,
        bytes_on_card=bytes_on_card,
        interrupted_files=interrupted,
        waiting_files=dict(waiting_files),
        waiting_bytes=dict(waiting_bytes),
        oldest_waiting_created_ms=oldest_ms,
        flagged_recordings=frozenset(flagged),
        held_recordings=frozenset(held),
        recent_recordings=recent_recordings(records),
    )


def recent_recordings(
    records: Iterable[FileRecord], keep: int = RECENT_RECORDINGS
) -> tuple[RecordingFiles, ...]:
    """The `keep` newest recordings of `records`, newest first, each summed over its files
    (pure). A recording whose every file retention deleted unattested is gone: not listed."""
    by_recording: dict[str, RecordingFiles] = {}
    for record in records:
        attested = record.is_attested
        if record.state is FileState.DELETED and not attested:
            continue
        rid = record.recording_id
        now = by_recording.get(rid) or RecordingFiles(rid, record.created_at_ms)
        by_recording[rid] = RecordingFiles(
            recording_id=rid,
            started_at_ms=min(now.started_at_ms, record.created_at_ms),
            files=now.files + 1,
            size_bytes=now.size_bytes + record.size_bytes,
            recording_files=now.recording_files + (record.state is FileState.RECORDING),
            sealed_files=now.sealed_files + (record.state is FileState.SEALED and not attested),
            attested_files=now.attested_files + attested,
            attested_bytes=now.attested_bytes + (record.size_bytes if attested else 0),
            uploading_file_ids=now.uploading_file_ids
            | (
                frozenset({record.file_id})
                if record.state is FileState.UPLOADING and not attested
                else frozenset()
            ),
            held=now.held or record.held,
            flagged=now.flagged or record.upload_class == "P0",
        )
    newest = sorted(by_recording.values(), key=lambda r: (r.started_at_ms, r.recording_id))
    return tuple(reversed(newest[-keep:])) if keep > 0 else ()


@dataclass(frozen=True, slots=True)
class LinkBudget:
    """A link's monthly budget in its current billing cycle; `cap_bytes` None: no cap."""

    cap_bytes: int | None
    used_bytes: int


@dataclass(frozen=True, slots=True)
class UplinkFacts:
    """A running uplink: `status` is UplinkService.status(); `budgets` by link name."""

    status: Mapping[str, Any]
    budgets: Mapping[str, LinkBudget]


@dataclass(frozen=True, slots=True)
class UplinkIdle:
    """No uplink runs: `state` says why ("not paired", "off", or the reason the configured
    uplink did not start), `reason` in plain words."""

    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class GpsFacts:
    status: str
    mode: int | None = None
    speed_mps: float | None = None
    clock_offset_ms: int | None = None
    fix_age_s: float | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class RecordingFacts:
    """The running recording, if any: its id, the source that started it, its upload class."""

    recording_id: str | None
    trigger_source: str | None
    upload_class: str | None
    max_continuous_s: float


@dataclass(frozen=True, slots=True)
class StatusInputs:
    at_ms: int
    device_serial: str
    vehicle_id: str
    uptime_s: float
    service: Mapping[str, Any]
    recording: RecordingFacts
    storage: StorageFacts
    uplink: UplinkFacts | UplinkIdle
    gps: GpsFacts
    paired: bool
    fleet: Mapping[str, Any] | None
    shift: Mapping[str, Any]
    reports: Mapping[str, Any]
    software_version: str = field(default_factory=software_version)
    hold_to_stop_ms: int = DEFAULT_HOLD_TO_STOP_MS
    """How long the page's Stop must be held ([webui] hold_to_stop_ms; 0: a tap stops)."""
