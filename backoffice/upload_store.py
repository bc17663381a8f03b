"""Uploads on disk for the reference tus server, crash-safe.

Layout under the store root:

    store.lock                      flock'ed by the one process serving this directory
    uploads/<upload_id>/info.json   length, metadata, owner, state, stored SHA-256
    uploads/<upload_id>/data        the bytes received so far (only while receiving)
    complete/<file_id>.mvbe         finished uploads whose bytes match their declared SHA-256
    corrupt/<upload_id>.mvbe        finished uploads that do not (kept for an integrity review)
    claims/<file_id>                the box that owns the file id (backoffice/file_claims.py)

Invariants:
- info.json is only ever replaced whole (common/durable.py: write a temporary file, fsync,
  rename, fsync the directory, as litestream does): a reader sees the old or the new version,
  never a mix.
- An upload's offset is the size of its data file. Bytes are appended only at that offset, by one
  Appender at a time (UploadBusy otherwise), and fsynced before the append is acknowledged; so
  after a crash the stored offset is at least the last acknowledged one, never past the length.
- While an Appender holds an upload, `status()` reports the offset it started from: only
  durable bytes are ever reported.
- Finished bytes are never modified or deleted through this store: they are hashed (streamed,
  never whole in memory), their SHA-256 is recorded, and they are linked into `complete/` or
  `corrupt/` without ever replacing an existing file there.
- Opening a store repairs what a crash interrupted (see `UploadStore.open`), so a new server on
  the same directory continues every upload at its stored offset.
- A file id belongs to the box that first created an upload naming it (FileClaims); a creation
  by another box is refused before anything is written.
- Every unfinished upload is booked in `reservations` from its creation (or the store's
  opening) until it is completed or deleted: a creation is refused (InsufficientStorage,
  ClientShareExceeded) unless the disk holds it beside every other promise and the reserve,
  and its box stays within its share.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from backoffice.file_claims import CLAIMS_DIR, ClaimDamaged, FileClaims
from backoffice.reservations import Reservations

# The errors and records are re-exported (`X as X`): the store's users reach them here.
from backoffice.upload_errors import AppendReleased as AppendReleased
from backoffice.upload_errors import ClientShareExceeded as ClientShareExceeded
from backoffice.upload_errors import InsufficientStorage as InsufficientStorage
from backoffice.upload_errors import OffsetMismatch as OffsetMismatch
from backoffice.upload_errors import StoreLocked as StoreLocked
from backoffice.upload_errors import UploadBusy as UploadBusy
from backoffice.upload_errors import UploadDamaged as UploadDamaged
from backoffice.upload_errors import UploadFinished as UploadFinished
from backoffice.upload_errors import UploadIncomplete as UploadIncomplete
from backoffice.upload_errors import UploadNotFound as UploadNotFound
from backoffice.upload_errors import UploadStoreError as UploadStoreError
from backoffice.upload_info import Incident as Incident
from backoffice.upload_info import UploadInfo as UploadInfo
from backoffice.upload_info import UploadState as UploadState
from backoffice.upload_info import UploadStatus as UploadStatus
from common.closing import Closing
from common.durable import (
    atomic_write_bytes,
    durable_unlink,
    fsync_dir,
    make_dir,
    make_dirs,
    remove_tree,
    sweep_tmp_files,
)

log = logging.getLogger(__name__)

UPLOAD_ID_BYTES: Final = 16
"""128 random bits per upload id (url-safe base64: 22 characters)."""
UPLOAD_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{22}")
FILE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A file id becomes a file name: url-safe characters only, so it can never name another path."""
SHA256_HEX_PATTERN: Final = re.compile(r"[0-9a-f]{64}")
DEFAULT_RESERVE_BYTES: Final = 1024**3
"""Free space the store never eats into: the system and its logs need room too."""
EVIDENCE_SUFFIX: Final = ".mvbe"

_INFO_NAME: Final = "info.json"
_DATA_NAME: Final = "data"
_LOCK_NAME: Final = "store.lock"
_MAX_INFO_BYTES: Final = 64 * 1024

FreeBytes = Callable[[Path], int]
"""How many bytes are free on the file system holding a path."""


def disk_free_bytes(path: Path) -> int:
    """Bytes available to this (unprivileged) process on `path`'s file system."""
    return shutil.disk_usage(path).free


class UploadStore(Closing):
    """The uploads under one directory; see the module docstring for layout and invariants.

    Called from one thread (the event loop), except `complete()` and an Appender's `keep()` /
    `discard()`, which may run in a worker thread for an upload the Appender holds (placement
    into `complete/` is serialised by a lock).
    """

    def __init__(
        self, root: Path, lock_fd: int, *, reserve_bytes: int, free_bytes: FreeBytes
    ) -> None:
        """Use `UploadStore.open`; this only wires the parts."""
        self.root = root
        self._lock_fd: int | None = lock_fd
        self._reserve_bytes = reserve_bytes
        self._free_bytes = free_bytes
        self._uploads = root / "uploads"
        self._complete = root / "complete"
        self._corrupt = root / "corrupt"
        self._busy_offsets: dict[str, int] = {}
        self._placement_lock = threading.Lock()
        self.claims = FileClaims(root)
        self.reservations = Reservations()

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        free_bytes: FreeBytes = disk_free_bytes,
    ) -> UploadStore:
        """Open (creating it if needed) and lock the store at `root`, then repair it.

        Repair: an upload directory without info.json was never acknowledged and is removed; a
        data file is fsynced (so its size is durable) and cut back to the length if longer; an
        upload that has all its bytes is finished; an interrupted finish is completed. Raises
        StoreLocked when another store already has `root` open.
        """
        if reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, got {reserve_bytes}")
        make_dirs(root, mode=0o700)
        for name in ("uploads", "complete", "corrupt", CLAIMS_DIR):
            make_dir(root / name, mode=0o700, exist_ok=True)
        lock_fd = os.open(root / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(lock_fd)
            raise StoreLocked(f"{root} is already served by another process or store") from exc
        store = cls(root, lock_fd, reserve_bytes=reserve_bytes, free_bytes=free_bytes)
        try:
            store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Release the directory lock. Idempotent."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    # -- queries --------------------------------------------------------------------------------

    def status(self, upload_id: str) -> UploadStatus:
        """The upload and its durable offset; UploadNotFound if there is none."""
        info = self._read_info(upload_id)
        if info.state is not UploadState.RECEIVING:
            return UploadStatus(info, info.length_bytes)
        busy_offset = self._busy_offsets.get(upload_id)
        if busy_offset is not None:
            return UploadStatus(info, busy_offset)
        try:
            size_bytes = (self._uploads / upload_id / _DATA_NAME).stat().st_size
        except FileNotFoundError as exc:
            raise UploadNotFound(upload_id) from exc
        return UploadStatus(info, size_bytes)

    def receiving_ids(self) -> list[str]:
        """The ids of every upload still receiving bytes (for the expiration sweep)."""
        return sorted(
            entry.name
            for entry in self._uploads.iterdir()
            if UPLOAD_ID_PATTERN.fullmatch(entry.name) and (entry / _DATA_NAME).exists()
        )

    def last_activity_s(self, upload_id: str) -> float:
        """When bytes last arrived for an unfinished upload (or it was created): wall clock s.
        UploadNotFound if it is gone."""
        try:
            return (self._uploads / upload_id / _DATA_NAME).stat().st_mtime
        except FileNotFoundError as exc:
            raise UploadNotFound(upload_id) from exc

    def is_busy(self, upload_id: str) -> bool:
        """Whether an append holds the upload now."""
        return upload_id in self._busy_offsets

    def path_of(self, info: UploadInfo) -> Path | None:
        """Where a finished upload's bytes are; None while receiving."""
        return None if info.stored_path is None else self.root / info.stored_path

    def ensure_space(self, incoming_bytes: int) -> None:
        """InsufficientStorage unless `incoming_bytes` fit above the reserve (an append: its
        bytes were promised at creation, so they are not counted twice)."""
        if self._free_bytes(self.root) - incoming_bytes < self._reserve_bytes:
            raise InsufficientStorage(
                f"{incoming_bytes} more bytes would leave less than the "
                f"{self._reserve_bytes}-byte reserve free"
            )

    def ensure_reservable(
        self, client_id: str, length_bytes: int, max_client_bytes: int | None
    ) -> None:
        """Refuse a creation the disk or the box's share cannot hold (see `create`)."""
        if max_client_bytes is not None:
            held_bytes = self.reservations.client_bytes(client_id)
            if held_bytes + length_bytes > max_client_bytes:
                raise ClientShareExceeded(
                    f"this box's unfinished uploads hold {held_bytes} bytes; "
                    f"{length_bytes} more would pass its {max_client_bytes}-byte share"
                )
        free_bytes = self._free_bytes(self.root)
        if not self.reservations.fits_disk(free_bytes, self._reserve_bytes, length_bytes):
            raise InsufficientStorage(
                f"{length_bytes} bytes do not fit beside the "
                f"{self.reservations.outstanding_bytes()} bytes promised to unfinished uploads "
                f"and the {self._reserve_bytes}-byte reserve"
            )

    # -- changes --------------------------------------------------------------------------------

    def create(
        self,
        *,
        client_id: str,
        length_bytes: int,
        metadata_header: str,
        file_id: str,
        declared_sha256: str,
        max_client_bytes: int | None = None,
    ) -> UploadStatus:
        """A new, empty upload, durable (with its file id's claim) before this returns, and
        booked in `reservations`.

        ValueError on a malformed file id or SHA-256; FileIdClaimed if another box owns
        `file_id`; ClientShareExceeded if the box's unfinished uploads would pass
        `max_client_bytes` (None: no share); InsufficientStorage if the disk cannot hold
        `length_bytes` beside the other promises and the reserve. Nothing is written then."""
        if not FILE_ID_PATTERN.fullmatch(file_id):
            raise ValueError("file_id must be 1-64 url-safe characters")
        if not SHA256_HEX_PATTERN.fullmatch(declared_sha256):
            raise ValueError("declared_sha256 must be 64 lower-case hex characters")
        if length_bytes < 0:
            raise ValueError(f"length_bytes must be >= 0, got {length_bytes}")
        owned = self.claims.check(file_id, client_id)
        self.ensure_reservable(client_id, length_bytes, max_client_bytes)
        upload_id = secrets.token_urlsafe(UPLOAD_ID_BYTES)
        if not owned:
            # Before the upload exists: a crash in between leaves a claim of this box, which
            # only this box can use.
            self.claims.claim(file_id, client_id, upload_id)
        directory = self._uploads / upload_id
        make_dir(directory, mode=0o700)
        data_fd = os.open(directory / _DATA_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fsync(data_fd)
        finally:
            os.close(data_fd)
        info = UploadInfo(
            upload_id=upload_id,
            client_id=client_id,
            length_bytes=length_bytes,
            metadata_header=metadata_header,
            file_id=file_id,
            declared_sha256=declared_sha256,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        # info.json last: a directory without it is an unacknowledged creation (removed on open).
        _write_json_atomic(directory, info.to_json())
        if length_bytes > 0:
            self.reservations.book(upload_id, client_id, length_bytes)
        return UploadStatus(info, 0)

    def begin_append(self, upload_id: str, offset_bytes: int, *, all_or_nothing: bool) -> Appender:
        """Take the upload for one append starting at `offset_bytes`.

        `all_or_nothing`: bytes not explicitly kept are discarded on release (a checksummed
        PATCH); otherwise they are kept (plain tus keeps whatever arrived).
        Raises UploadNotFound, UploadBusy, UploadFinished or OffsetMismatch.
        """
        status = self.status(upload_id)
        if upload_id in self._busy_offsets:
            raise UploadBusy(upload_id)
        if status.finished:
            raise UploadFinished(upload_id)
        if offset_bytes != status.offset_bytes:
            raise OffsetMismatch(f"append at {offset_bytes}, stored offset {status.offset_bytes}")
        fd = os.open(self._uploads / upload_id / _DATA_NAME, os.O_WRONLY)
        self._busy_offsets[upload_id] = offset_bytes
        return Appender(self, upload_id, fd, offset_bytes, all_or_nothing=all_or_nothing)

    def complete(self, upload_id: str) -> UploadStatus:
        """Hash an upload that has all its bytes, record the SHA-256 and move the bytes into
        `complete/` (or `corrupt/`). Idempotent; blocking (run it in a worker thread).
        UploadIncomplete if the upload does not have all its bytes."""
        info = self._read_info(upload_id)
        if info.state is not UploadState.RECEIVING:
            self.reservations.release(upload_id)
            return UploadStatus(info, info.length_bytes)
        data_path = self._uploads / upload_id / _DATA_NAME
        size_bytes = data_path.stat().st_size
        if size_bytes != info.length_bytes:
            raise UploadIncomplete(f"upload has {size_bytes} of {info.length_bytes} bytes")
        stored_sha256 = sha256_of_file(data_path)
        finished = self._place(info, data_path, stored_sha256)
        self.reservations.release(upload_id)
        return UploadStatus(finished, finished.length_bytes)

    def delete(self, upload_id: str) -> None:
        """Remove an unfinished upload (tus termination). UploadNotFound, UploadBusy or
        UploadFinished otherwise."""
        status = self.status(upload_id)
        if upload_id in self._busy_offsets:
            raise UploadBusy(upload_id)
        if status.finished:
            raise UploadFinished(upload_id)
        directory = self._uploads / upload_id
        # info.json first: if we crash halfway, the rest is an unacknowledged directory that the
        # next open removes, never an upload with its bytes missing.
        durable_unlink(directory / _INFO_NAME, missing_ok=False)
        remove_tree(directory)
        self.reservations.release(upload_id)

    # -- internals ------------------------------------------------------------------------------

    def _release(self, upload_id: str) -> None:
        self._busy_offsets.pop(upload_id, None)

    def _progressed(self, upload_id: str, offset_bytes: int) -> None:
        self.reservations.progress(upload_id, offset_bytes)

    def _read_info(self, upload_id: str) -> UploadInfo:
        if not UPLOAD_ID_PATTERN.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        path = self._uploads / upload_id / _INFO_NAME
        try:
            with path.open("rb") as handle:
                raw = handle.read(_MAX_INFO_BYTES + 1)
        except FileNotFoundError as exc:
            raise UploadNotFound(upload_id) from exc
        if len(raw) > _MAX_INFO_BYTES:
            raise UploadDamaged(f"{path} is larger than {_MAX_INFO_BYTES} bytes")
        try:
            return UploadInfo.from_json(json.loads(raw))
        except ValueError as exc:
            raise UploadDamaged(f"{path} is damaged: {exc}") from exc

    def _place(self, info: UploadInfo, data_path: Path, stored_sha256: str) -> UploadInfo:
        """Link the finished bytes to their final name, record that, drop the data name.

        Each step is idempotent so `_recover` can redo a finish a crash interrupted."""
        with self._placement_lock:
            target, incident = self._link_target(info, data_path, stored_sha256)
            state = UploadState.COMPLETE if incident is None else UploadState.CORRUPT
            finished = replace(
                info,
                state=state,
                stored_sha256=stored_sha256,
                stored_path=str(target.relative_to(self.root)),
                incident=incident,
            )
            _write_json_atomic(data_path.parent, finished.to_json())
            durable_unlink(data_path, missing_ok=False)
        return finished

    def _link_target(
        self, info: UploadInfo, data_path: Path, stored_sha256: str
    ) -> tuple[Path, Incident | None]:
        if stored_sha256 == info.declared_sha256:
            target = self._complete / f"{info.file_id}{EVIDENCE_SUFFIX}"
            if _link_no_replace(data_path, target) or sha256_of_file(target) == stored_sha256:
                # A re-upload of bytes already complete keeps the first copy: same SHA-256.
                return target, None
            incident: Incident = Incident.FILE_ID_CONFLICT
        else:
            incident = Incident.SHA256_MISMATCH
        target = self._corrupt / f"{info.upload_id}{EVIDENCE_SUFFIX}"
        if not _link_no_replace(data_path, target):
            # Only a crashed earlier attempt can have left this name (upload ids are unique).
            target.unlink()
            os.link(data_path, target)
            fsync_dir(target.parent)
        return target, incident

    def _recover(self) -> None:
        sweep_tmp_files(self.claims.directory)  # a claim a crash cut short was never acknowledged
        infos: list[UploadInfo] = []
        for directory in sorted(self._uploads.iterdir()):
            if not directory.is_dir() or not UPLOAD_ID_PATTERN.fullmatch(directory.name):
                log.warning("store: ignoring unexpected entry %s", directory.name)
                continue
            info = self._recover_upload(directory)
            if info is not None:
                infos.append(info)
        self._claim_unclaimed(infos)

    def _claim_unclaimed(self, infos: list[UploadInfo]) -> None:
        """Claims for uploads made before file ids had owners: the earliest creation wins. A
        later upload by another box under the same file id is left as it is, and logged."""
        for info in sorted(infos, key=lambda item: (item.created_at, item.upload_id)):
            try:
                claim = self.claims.owner(info.file_id)
            except ClaimDamaged:
                log.exception("store: damaged claim left for review file_id=%s", info.file_id)
                continue
            if claim is None:
                self.claims.claim(info.file_id, info.client_id, info.upload_id, info.created_at)
            elif claim.client_id != info.client_id:
                log.error(
                    "store: an upload names a file id another box owns upload_id=%s "
                    "file_id=%s client_id=%s owner=%s",
                    info.upload_id,
                    info.file_id,
                    info.client_id,
                    claim.client_id,
                )

    def _recover_upload(self, directory: Path) -> UploadInfo | None:
        upload_id = directory.name
        sweep_tmp_files(directory)  # an info.json write a crash cut short
        if not (directory / _INFO_NAME).exists():
            remove_tree(directory)
            log.info("store: removed unacknowledged upload upload_id=%s", upload_id)
            return None
        try:
            info = self._read_info(upload_id)
        except UploadStoreError:
            log.exception("store: left damaged upload for review upload_id=%s", upload_id)
            return None
        data_path = directory / _DATA_NAME
        if info.state is not UploadState.RECEIVING:
            if data_path.exists() and info.stored_sha256 is not None:
                self._place(info, data_path, info.stored_sha256)
                log.info("store: finished an interrupted move upload_id=%s", upload_id)
            return info
        self._recover_receiving(info, data_path)
        return info

    def _recover_receiving(self, info: UploadInfo, data_path: Path) -> None:
        fd = os.open(data_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            size_bytes = os.fstat(fd).st_size
            if size_bytes > info.length_bytes:
                log.warning(
                    "store: cut upload back to its length upload_id=%s size_bytes=%d",
                    info.upload_id,
                    size_bytes,
                )
                os.ftruncate(fd, info.length_bytes)
                size_bytes = info.length_bytes
            os.fsync(fd)  # from now on the size we report is durable
        finally:
            os.close(fd)
        if size_bytes == info.length_bytes:
            self.complete(info.upload_id)
            log.info("store: finished a complete upload on open upload_id=%s", info.upload_id)
        else:
            self.reservations.book(info.upload_id, info.client_id, info.length_bytes, size_bytes)


class Appender:
    """One append to one upload (the body of one PATCH or creation-with-upload POST).

    Invariant: holds the upload's busy slot from creation until `release()`; writes land at
    `start_offset_bytes + written_bytes`; `keep()` makes them durable, `discard()` cuts the file
    back to `start_offset_bytes`. `release()` settles what neither did (keep, or discard when
    all-or-nothing), so a cancelled request leaves a consistent upload either way.
    """

    def __init__(
        self,
        store: UploadStore,
        upload_id: str,
        fd: int,
        start_offset_bytes: int,
        *,
        all_or_nothing: bool,
    ) -> None:
        self.upload_id = upload_id
        self.start_offset_bytes = start_offset_bytes
        self.written_bytes = 0
        self._store = store
        self._fd: int | None = fd
        self._all_or_nothing = all_or_nothing
        self._settled = False

    @property
    def end_offset_bytes(self) -> int:
        return self.start_offset_bytes + self.written_bytes

    def write(self, data: bytes | memoryview) -> None:
        fd = self._open_fd()
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, self.end_offset_bytes)
            self.written_bytes += written
            view = view[written:]

    def keep(self) -> int:
        """fsync what was written; return the new durable offset."""
        os.fsync(self._open_fd())
        self._settled = True
        self._store._progressed(self.upload_id, self.end_offset_bytes)
        return self.end_offset_bytes

    def discard(self) -> None:
        """Cut the data file back to where this append started."""
        fd = self._open_fd()
        os.ftruncate(fd, self.start_offset_bytes)
        os.fsync(fd)
        self.written_bytes = 0
        self._settled = True
        self._store._progressed(self.upload_id, self.start_offset_bytes)

    def release(self) -> None:
        """Settle what is unsettled, close the file, free the upload. Idempotent."""
        if self._fd is None:
            return
        try:
            if not self._settled:
                if self._all_or_nothing:
                    self.discard()
                else:
                    self.keep()
        finally:
            os.close(self._fd)
            self._fd = None
            self._store._release(self.upload_id)

    def _open_fd(self) -> int:
        if self._fd is None:
            raise AppendReleased("append already released")
        return self._fd


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in bounded pieces."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def is_out_of_space(exc: OSError) -> bool:
    """Whether a write failed because the disk (or the quota) is full."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _link_no_replace(source: Path, target: Path) -> bool:
    """Hard-link `source` at `target` unless `target` exists (then False, unless it already is
    `source`, as after a crash between link and unlink). Durable when it returns True."""
    try:
        os.link(source, target)
    except FileExistsError:
        if not source.samefile(target):
            return False
    fsync_dir(target.parent)
    return True


def _write_json_atomic(directory: Path, value: dict[str, object]) -> None:
    data = json.dumps(value, sort_keys=True).encode("utf-8")
    atomic_write_bytes(directory / _INFO_NAME, data, mode=0o600)
