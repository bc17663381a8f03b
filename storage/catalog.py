"""The catalog of evidence files: one `FileRecord` per file id, in diskcache (sqlite) on the card.

Invariants:

- Every record is stored as a JSON object (a `str` value keyed by `file_id`), never a pickle, so
  that a later version of the box, or an investigator with the sqlite shell, can read it.
- Records are never removed: a deleted file stays catalogued as DELETED (RULES S5: the chain is
  logged up to the final deletion).
- A state only changes along `LEGAL_TRANSITIONS` (the h11 `_state.py` idea: the table is the
  specification, the code only looks it up). `put` and `transition` both obey it.
- A record only enters VERIFIED when the back office's echoed checksum equals the checksum the box
  wrote (`FileRecord.is_attested`): VERIFIED is what allows deletion under RULES S3.
- The catalog is rebuildable from the card: sidecars (and, failing those, the files themselves)
  hold every fact except what only the catalog knows. A broken catalog is moved aside, never
  deleted, because it may matter to an investigator.

A process that uses the catalog must never open and close its sqlite files (`catalog/`) by
other means (a scan of the card, a copy, a checksum): closing any descriptor of a file drops all
of that process's POSIX locks on it, and another process may then take the WAL for unused and
delete it under the open connections (seen in the demo: a writer's records became invisible).

What a rebuild cannot recover: attestations (`attested_sha256_hex`, hence VERIFIED), the time
facts retention judges by (`boot_id`, `created_mono_ms`, `trusted_created_*`), UPLOADING and
DELETED states exist only in the catalog. After a rebuild every file on the card is SEALED; the
box asks the back office again which files it holds. Until it has asked, retention only deletes
what expired (RULES S4), which is still lawful; a file without time facts counts its age from
when the box first sees it with trusted time known. Holds are not lost: the `held` flag is a copy
of the card's holds file (storage/holds.py), which the store copies in again at every open
(storage/store.py), so a rebuilt catalog is held exactly as before.

The rebuild's reading of the card (sidecars, evidence headers) is storage/catalog_rebuild.py.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

import diskcache

from common.closing import Closing
from common.durable import durable_rename, make_dirs
from common.faults import IllegalTransition, MisuseFault, RemoteFault, StorageFault
from storage.card import CardLayout
from storage.catalog_rebuild import scan_card
from storage.models import UPLOAD_CLASSES, FileRecord, FileState
from storage.sqlite_files import create_database

_T = TypeVar("_T")

_S = FileState
LEGAL_TRANSITIONS: Final[Mapping[FileState, frozenset[FileState]]] = MappingProxyType(
    {
        # RECORDING -> DELETED: recovery discarded a file whose header never became durable,
        # so it never held evidence (docs/evidence-format.md section 6, step 1).
        _S.RECORDING: frozenset({_S.SEALED, _S.DELETED}),
        # SEALED -> VERIFIED: the back office may attest a file it got by another route (or an
        # upload whose UPLOADING mark was lost in a rebuild).
        _S.SEALED: frozenset({_S.UPLOADING, _S.VERIFIED, _S.DELETED}),
        # UPLOADING -> SEALED: upload aborted, the file goes back in the queue.
        _S.UPLOADING: frozenset({_S.SEALED, _S.VERIFIED, _S.DELETED}),
        _S.VERIFIED: frozenset({_S.DELETED}),
        _S.DELETED: frozenset(),
    }
)
"""Allowed `from -> to` state changes. Anything not listed raises IllegalTransition
(common/faults.py, shared with the recorder); its message names the file id, from and to."""

RECORD_SCHEMA = 1
"""Version of the JSON object stored per record; readers ignore members they do not know."""

_SHA256_HEX_LEN = 64
# sqlite primary result codes that mean "this file is damaged" (not "busy" or "disk full", which
# must never make the box move a healthy catalog aside).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_CACHE_DIR_MODE = 0o755  # what diskcache.Cache gives the folder it makes


class CatalogError(Exception):
    """Base for catalog faults: a family of two kinds, never raised itself (a damaged catalog:
    StorageFault; an unknown file id: MisuseFault)."""


class CatalogCorruptError(CatalogError, StorageFault):
    """A stored record that is not a record this module wrote."""


class UnknownFileError(CatalogError, LookupError, MisuseFault):
    """No record for the file id."""


class AttestationMismatch(ValueError, RemoteFault):
    """The back office echoed a checksum other than the one the box wrote; the file stays."""


# --- record <-> JSON -------------------------------------------------------------------------


def record_to_json(record: FileRecord) -> str:
    """Encode a record as a JSON object with every FileRecord field plus `schema`."""
    obj: dict[str, object] = {f.name: getattr(record, f.name) for f in fields(FileRecord)}
    obj["state"] = FileState(record.state).value
    obj["schema"] = RECORD_SCHEMA
    return json.dumps(obj, sort_keys=True)


def record_from_json(raw: object) -> FileRecord:
    """Decode what `record_to_json` wrote. Unknown members are ignored; wrong types are not."""
    if not isinstance(raw, str):
        raise CatalogCorruptError(f"stored value is {type(raw).__name__}, not a JSON string")
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise CatalogCorruptError(f"stored value is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise CatalogCorruptError("stored value is not a JSON object")
    state_value = _req(obj, "state", str)
    try:
        state = FileState(state_value)
    except ValueError as exc:
        raise CatalogCorruptError(f"unknown state {state_value!r}") from exc
    return FileRecord(
        file_id=_req(obj, "file_id", str),
        recording_id=_req(obj, "recording_id", str),
        file_seq=_req(obj, "file_seq", int),
        created_at_ms=_req(obj, "created_at_ms", int),
        state=state,
        size_bytes=_req(obj, "size_bytes", int),
        sha256_hex=_opt(obj, "sha256_hex", str),
        sealed_at_ms=_opt(obj, "sealed_at_ms", int),
        interrupted_at_chunk=_opt(obj, "interrupted_at_chunk", int),
        attested_sha256_hex=_opt(obj, "attested_sha256_hex", str),
        held=_req(obj, "held", bool),
        deleted_at_ms=_opt(obj, "deleted_at_ms", int),
        upload_class=_upload_class(obj),
        boot_id=_opt(obj, "boot_id", str),
        created_mono_ms=_opt(obj, "created_mono_ms", int),
        trusted_created_low_ms=_opt(obj, "trusted_created_low_ms", int),
        trusted_created_high_ms=_opt(obj, "trusted_created_high_ms", int),
        trusted_created_by=_opt(obj, "trusted_created_by", str),
    )


def _upload_class(obj: dict[str, Any]) -> str:
    """Records written before upload classes existed are evidence (P1), the safe middle."""
    value = _opt(obj, "upload_class", str) or "P1"
    if value not in UPLOAD_CLASSES:
        raise CatalogCorruptError(f"unknown upload class {value!r}")
    return value


def _req(obj: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = _opt(obj, name, kind)
    if value is None:
        raise CatalogCorruptError(f"record member {name!r} is missing")
    return value


def _opt(obj: dict[str, Any], name: str, kind: type[_T]) -> _T | None:
    value = obj.get(name)
    if value is None:
        return None
    # bool is an int subclass in Python; a stored `true` must not pass as a size or a time.
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
        raise CatalogCorruptError(f"record member {name!r} is not {kind.__name__}: {value!r}")
    return value


# --- the catalog -----------------------------------------------------------------------------


class Catalog(Closing):
    """The evidence catalog of one card. Create with `Catalog.open(layout)`.

    After `open`, `rebuilt_reason` is None when the stored catalog was trusted as it was, and
    otherwise a one-line reason fit for an audit event (broken catalog moved aside, empty catalog
    filled from the card, or files on the card that the catalog did not know). `adopted_from_card`
    lists the records that `open` took from the card; `unreadable_files` lists evidence files on
    the card that could not be catalogued at all (no sidecar and no readable header);
    `complete_before_open` is True when the stored catalog was neither broken nor empty, so that
    every file the box wrote was in it before `open` adopted anything (recovery relies on it:
    storage/recovery.py `CatalogKnowledge`).
    """

    def __init__(self, layout: CardLayout, cache: Any) -> None:
        """Wrap an open diskcache. Use `Catalog.open`, which checks and reconciles it."""
        self.layout = layout
        self._cache = cache
        self.rebuilt_reason: str | None = None
        self.adopted_from_card: tuple[FileRecord, ...] = ()
        self.unreadable_files: tuple[Path, ...] = ()
        self.complete_before_open = False

    @classmethod
    def open(cls, layout: CardLayout) -> Catalog:
        """Open (or create) the catalog, recover from a broken one, and reconcile with the card.

        A catalog sqlite cannot read, or holding a record this module cannot decode, is renamed to
        `catalog.broken-<ms>` next to it (kept, never deleted) and rebuilt from the card.
        """
        broken: str | None = None
        try:
            cache = _open_checked_cache(layout.catalog_dir)
        except (sqlite3.DatabaseError, CatalogCorruptError) as exc:
            if not _means_corrupt(exc):
                raise
            aside = _move_aside(layout.catalog_dir)
            broken = f"catalog unreadable ({exc}); moved aside to {aside.name}"
            cache = _open_checked_cache(layout.catalog_dir)
        catalog = cls(layout, cache)
        try:
            catalog._reconcile_with_card(broken)
        except BaseException:
            catalog.close()
            raise
        return catalog

    def close(self) -> None:
        self._cache.close()

    # --- reads ---

    def get(self, file_id: str) -> FileRecord | None:
        raw = self._cache.get(file_id, default=None)
        return None if raw is None else record_from_json(raw)

    def all(self) -> list[FileRecord]:
        """Every record, DELETED ones included, oldest first (by created_at_ms, then ids)."""
        records = (self.get(key) for key in list(self._cache.iterkeys()))
        return sorted(
            (r for r in records if r is not None),
            key=lambda r: (r.created_at_ms, r.recording_id, r.file_seq, r.file_id),
        )

    def by_recording(self, recording_id: str) -> list[FileRecord]:
        """The files of one recording, in file_seq order (all cameras interleaved)."""
        mine = (r for r in self.all() if r.recording_id == recording_id)
        return sorted(mine, key=lambda r: (r.file_seq, r.file_id))

    # --- writes ---

    def put(self, record: FileRecord) -> None:
        """Insert a record, or replace one with the same file id.

        Replacing obeys the table: if the state changes it must be a legal transition, and a file
        never moves to another recording.
        """
        with self._cache.transact():
            current = self.get(record.file_id)
            if current is not None:
                _check_replacement(current, record)
            self._store(record)

    def transition(self, file_id: str, new_state: FileState, /, **changes: object) -> FileRecord:
        """Move a file to `new_state` (with field `changes`) if the table allows; return it.

        `file_id` and `new_state` are positional-only so that `file_id=`, `recording_id=` or
        `state=` in `changes` is caught and refused (identity never changes; state only via the
        table).

        Entering VERIFIED also requires the result to be attested (see `record_attestation`).
        """
        forbidden = changes.keys() & {"file_id", "recording_id", "state"}
        if forbidden:
            raise ValueError(f"transition cannot change {sorted(forbidden)}")
        with self._cache.transact():
            current = self._require(file_id)
            _check_transition(file_id, current.state, new_state)
            updated = _with_changes(current, state=new_state, **changes)
            if new_state is FileState.VERIFIED and not updated.is_attested:
                raise AttestationMismatch(
                    f"file {file_id}: cannot enter verified without a matching attestation"
                )
            self._store(updated)
        return updated

    def set_held(self, file_id: str, held: bool) -> FileRecord:
        """Hold (request, complaint, police demand) or release a file; any state. Only the store
        calls it, to copy its holds book (storage/holds.py) into the flags."""
        with self._cache.transact():
            updated = self._require(file_id).with_changes(held=held)
            self._store(updated)
        return updated

    def set_trusted_created(
        self, file_id: str, low_ms: int | None, high_ms: int, by: str
    ) -> FileRecord:
        """Note a file's creation in trusted time (storage/trusted_time.py), learnt after it was
        recorded; any state. A bound once noted is never replaced: retention judges by it."""
        with self._cache.transact():
            current = self._require(file_id)
            if current.trusted_created_high_ms is not None:
                return current
            updated = current.with_changes(
                trusted_created_low_ms=low_ms,
                trusted_created_high_ms=high_ms,
                trusted_created_by=by,
            )
            self._store(updated)
        return updated

    def set_upload_class(self, file_id: str, upload_class: str) -> FileRecord:
        """Change a file's upload priority (an incident flagged after the fact); any state."""
        if upload_class not in UPLOAD_CLASSES:
            raise ValueError(f"unknown upload class {upload_class!r}")
        with self._cache.transact():
            updated = self._require(file_id).with_changes(upload_class=upload_class)
            self._store(updated)
        return updated

    def record_attestation(self, file_id: str, sha256_hex: str) -> FileRecord:
        """Store the checksum the back office echoed; move to VERIFIED only if it matches.

        On a mismatch the echoed value is still stored (it is a fact worth keeping), the state is
        unchanged, and AttestationMismatch is raised: the file must not be deleted for S3.
        """
        echoed = _normalise_sha256(sha256_hex)
        with self._cache.transact():
            current = self._require(file_id)
            noted = current.with_changes(attested_sha256_hex=echoed)
            if noted.is_attested and current.state is not FileState.VERIFIED:
                _check_transition(file_id, current.state, FileState.VERIFIED)
                noted = noted.with_changes(state=FileState.VERIFIED)
            self._store(noted)
        if not noted.is_attested:
            raise AttestationMismatch(
                f"file {file_id}: back office echoed sha256 {echoed}, "
                f"box wrote {current.sha256_hex}; state stays {current.state.value}"
            )
        return noted

    # --- internals ---

    def _require(self, file_id: str) -> FileRecord:
        record = self.get(file_id)
        if record is None:
            raise UnknownFileError(f"no catalog record for file {file_id}")
        return record

    def _store(self, record: FileRecord) -> None:
        raw = record_to_json(record)
        try:
            record_from_json(raw)  # never store what the next open would call corrupt
        except CatalogCorruptError as exc:
            raise ValueError(f"file {record.file_id}: refusing to store it: {exc}") from exc
        self._cache.set(record.file_id, raw)

    def _reconcile_with_card(self, broken: str | None) -> None:
        was_empty = len(self._cache) == 0
        scan = scan_card(self.layout)
        self.adopted_from_card = tuple(self._adopt(scan.records))
        self.unreadable_files = scan.unreadable
        self.complete_before_open = broken is None and not was_empty
        self.rebuilt_reason = _rebuilt_reason(broken, was_empty, len(self.adopted_from_card))

    def _adopt(self, card_records: Iterable[FileRecord]) -> list[FileRecord]:
        """Merge what the card says into the catalog; return the files it did not know.

        Unknown files are added. A file the catalog still thinks is RECORDING but the card shows
        SEALED takes the sealed facts. Everything else the catalog knows better (uploads,
        attestations, holds, deletions) and is kept as it is, as are records of files no longer on
        the card.
        """
        adopted: list[FileRecord] = []
        with self._cache.transact():
            for found in card_records:
                current = self.get(found.file_id)
                if current is None:
                    self._store(found)
                    adopted.append(found)
                elif current.state is FileState.RECORDING and found.state is FileState.SEALED:
                    # A file the catalog knew, sealed or recovered since: an update, not news.
                    # What only the catalog knows stays: the hold and the time facts.
                    self._store(found.with_changes(held=current.held, **_time_facts(current)))
        return adopted


def _time_facts(record: FileRecord) -> dict[str, object]:
    """The time facts of a record (FileRecord's retention fields), which the card does not hold."""
    return {
        "boot_id": record.boot_id,
        "created_mono_ms": record.created_mono_ms,
        "trusted_created_low_ms": record.trusted_created_low_ms,
        "trusted_created_high_ms": record.trusted_created_high_ms,
        "trusted_created_by": record.trusted_created_by,
    }


def _check_transition(file_id: str, from_state: FileState, to_state: FileState) -> None:
    if to_state not in LEGAL_TRANSITIONS[from_state]:
        raise IllegalTransition(
            f"file {file_id}: illegal state transition {from_state.value} -> {to_state.value}"
        )


def _check_replacement(current: FileRecord, new: FileRecord) -> None:
    if new.recording_id != current.recording_id:
        raise ValueError(
            f"file {new.file_id} belongs to recording {current.recording_id}, "
            f"not {new.recording_id}"
        )
    if new.state is not current.state:
        _check_transition(new.file_id, current.state, new.state)


def _with_changes(record: FileRecord, **changes: object) -> FileRecord:
    try:
        return record.with_changes(**changes)
    except TypeError as exc:  # dataclasses.replace on an unknown field name
        raise ValueError(f"file {record.file_id}: {exc}") from exc


def _normalise_sha256(sha256_hex: str) -> str:
    lowered = sha256_hex.lower()
    if len(lowered) != _SHA256_HEX_LEN or any(c not in "0123456789abcdef" for c in lowered):
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return lowered


def _rebuilt_reason(broken: str | None, was_empty: bool, adopted: int) -> str | None:
    lost = "attestations known only to the old catalog are lost; ask the back office"
    if broken is not None:
        return f"{broken}; rebuilt from {adopted} evidence files on the card; {lost}"
    if adopted and was_empty:
        return f"catalog missing or empty; rebuilt from {adopted} evidence files on the card"
    if adopted:
        return f"adopted {adopted} evidence files from the card that the catalog did not know"
    return None


# --- the diskcache ---------------------------------------------------------------------------


def _open_checked_cache(directory: Path) -> Any:
    """Open the diskcache and decode every record, so corruption shows now and not mid-upload."""
    # Made here, not by diskcache (which would not fsync the card root), with diskcache's mode.
    make_dirs(directory, mode=_CACHE_DIR_MODE)
    # Small pages: a commit appends each page it changed to the WAL (storage/sqlite_files.py).
    create_database(directory)
    cache = diskcache.Cache(
        str(directory),
        # Never evict or cull: an evicted record is evidence the box forgets (S4, S5).
        eviction_policy="none",
        cull_limit=0,
        statistics=False,
        tag_index=False,
        # FULL: a committed transition (VERIFIED, DELETED) survives a power cut.
        sqlite_synchronous=2,
    )
    try:
        for key in list(cache.iterkeys()):
            record = record_from_json(cache.get(key, default=None))
            if record.file_id != key:
                raise CatalogCorruptError(f"record under key {key!r} is file {record.file_id}")
    except BaseException:
        cache.close()
        raise
    return cache


def _means_corrupt(exc: BaseException) -> bool:
    """True for damage; False for busy, locked, full or I/O trouble (retry, do not move aside)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return isinstance(exc, CatalogCorruptError)


def _move_aside(catalog_dir: Path) -> Path:
    """Rename the broken catalog to `<name>.broken-<ms>` (a fresh name); return the new path."""
    stamp = time.time_ns() // 1_000_000
    target = catalog_dir.with_name(f"{catalog_dir.name}.broken-{stamp}")
    while target.exists():  # two rebuilds within one millisecond must not clobber each other
        stamp += 1
        target = catalog_dir.with_name(f"{catalog_dir.name}.broken-{stamp}")
    durable_rename(catalog_dir, target)
    return target
