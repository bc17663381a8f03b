"""The audit log's I/O shell: `AuditLog`, the single appender of one audit log file.

The format, the encoding and signing of an entry and the verification are pure, in
storage/audit.py (whose docstring is the format's specification); this module owns the file: the
exclusive `flock`, the appends, the fsyncs and the repair of a torn tail.

Invariants:
- One process appends to a file (an exclusive `flock`; a second `AuditLog.open` fails with
  AuditLogError), so two writers cannot fork the chain.
- An entry is durable when `append` returns: one line per `os.write` on an `O_APPEND`
  descriptor, then `fsync`. A failed write is rolled back to the previous size; if even that
  fails, the log refuses further appends until it is reopened.
- After `open` and after every `append` returns or raises, the file holds only complete lines. A
  torn tail left by a power cut was never acknowledged: `open` drops it and records that it did,
  in a TORN_TAIL_EVENT entry with `{"dropped_bytes": n}`.
- `open` continues only a chain whose last entry is well formed and signed by this device key.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from common.closing import Closing
from common.durable import fsync_dir
from common.faults import StorageFault
from storage.audit import (
    GENESIS_PREV_HEX,
    MAX_LINE_BYTES,
    TORN_TAIL_EVENT,
    AuditEntry,
    Scalar,
    encode_entry,
    parse_line,
    signature_verifies,
    split_lines,
    validate_entry,
)
from storage.audit_head import AuditHead, SignedHead
from storage.devicekey import DeviceKey, DevicePublicKey

LOG_FILE_MODE = 0o600


class AuditLogError(RuntimeError, StorageFault):
    """The log cannot be continued safely: locked, corrupt tail, foreign key or failed I/O."""


def wall_clock_ms() -> int:
    """Wall-clock milliseconds since the epoch: a stamp only, never used for ordering."""
    return time.time_ns() // 1_000_000


# --- the writer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tail:
    """What `open` learns from the end of the file."""

    last_seq: int  # -1 when the log is empty
    head_sha256_hex: str  # GENESIS_PREV_HEX when the log is empty
    size: int  # bytes of complete lines
    torn_bytes: int  # bytes after the last LF


class AuditLog(Closing):
    """The single appender of one audit log file. Thread-safe; one instance per file and host.

    Invariants: the file holds only complete lines after `open` and after every `append` returns
    or raises; `last_seq` and `head_sha256_hex` describe its last line.
    """

    def __init__(
        self, path: Path, fd: int, device_key: DeviceKey, clock_ms: Callable[[], int], tail: _Tail
    ) -> None:
        """Use `AuditLog.open`."""
        self._path = path
        self._fd = fd
        self._device_key = device_key
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._last_seq = tail.last_seq
        self._head_hex = tail.head_sha256_hex
        self._size = tail.size
        self._broken = False

    @classmethod
    def open(
        cls, path: Path, device_key: DeviceKey, *, clock_ms: Callable[[], int] = wall_clock_ms
    ) -> AuditLog:
        """Open (creating if needed) the log at `path` for appending.

        Raises AuditLogError if another AuditLog holds it, or if its last complete line is not a
        well-formed entry signed by `device_key` (continuing would fork or mix the chain).
        """
        fd = _open_locked(path)
        try:
            tail = _read_tail(fd, path, device_key.public_key())
            if tail.torn_bytes:
                # Dropped bytes were never acknowledged (fsync had not returned): nothing promised
                # is lost, and the repair entry below records that it happened.
                os.ftruncate(fd, tail.size)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        log = cls(path, fd, device_key, clock_ms, tail)
        if tail.torn_bytes:
            try:
                log.append(TORN_TAIL_EVENT, dropped_bytes=tail.torn_bytes)
            except BaseException:
                log.close()
                raise
        return log

    @property
    def path(self) -> Path:
        return self._path

    @property
    def last_seq(self) -> int:
        """Seq of the last entry, -1 for an empty log."""
        with self._lock:
            return self._last_seq

    @property
    def head_sha256_hex(self) -> str:
        """SHA-256 of the last line (64 zeros when empty): an anchor to send off the box."""
        with self._lock:
            return self._head_hex

    def public_key(self) -> DevicePublicKey:
        """The device key's public half: what verifies this log and its heads."""
        return self._device_key.public_key()

    def durable_end(self) -> tuple[AuditHead, int]:
        """The head of the log and the size of its complete lines in bytes, both as of the last
        append that returned: only durable entries (fsynced) are ever described."""
        with self._lock:
            return AuditHead(self._last_seq, self._head_hex), self._size

    def signed_head(self) -> SignedHead:
        """The durable head, signed with the device key (storage/audit_head.py): the anchor the
        box sends off with every upload and report."""
        head, _size = self.durable_end()
        return head.sign(self._device_key)

    def read_durable(self, offset_bytes: int, max_bytes: int) -> bytes:
        """At most `max_bytes` of the file from `offset_bytes`, never past the durable end (an
        entry being appended is not read). Blocking; AuditLogError when closed or past the end."""
        with self._lock:
            self._check_usable()
            size = self._size
        if not 0 <= offset_bytes <= size:
            raise AuditLogError(f"{self._path}: offset {offset_bytes} outside 0..{size}")
        with self._path.open("rb") as handle:
            handle.seek(offset_bytes)
            return handle.read(min(max_bytes, size - offset_bytes))

    def append(self, event: str, /, **fields: Scalar) -> AuditEntry:
        """Append one entry and return it once it is durable (written and fsynced).

        Raises ValueError for a bad event name or field (nothing is written), AuditLogError if the
        log is closed or unusable, OSError if the write or fsync failed (rolled back if possible).
        Blocks on fsync: call it from a thread, not directly on the event loop.
        """
        validate_entry(event, fields)
        with self._lock:
            self._check_usable()
            entry, line = encode_entry(
                self._last_seq + 1,
                self._clock_ms(),
                event,
                fields,
                self._head_hex,
                self._device_key,
            )
            if len(line) >= MAX_LINE_BYTES:
                raise ValueError(f"audit entry rejected: line longer than {MAX_LINE_BYTES} bytes")
            self._write_durably(line + b"\n")
            self._last_seq, self._head_hex = entry.seq, entry.line_sha256_hex
            return entry

    def entries(self) -> Iterator[AuditEntry]:
        """The entries on disk, in order (shape checked; use `verify_audit_log` for the chain)."""
        with self._lock:
            self._check_usable()
            size = self._size
        with self._path.open("rb") as handle:
            data = handle.read(size)
        for line in split_lines(data)[0]:
            yield parse_line(line)

    def close(self) -> None:
        """Release the file and its lock. Idempotent."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r}, last_seq={self._last_seq})"

    def _check_usable(self) -> None:
        if self._fd < 0:
            raise AuditLogError(f"{self._path}: audit log is closed")
        if self._broken:
            raise AuditLogError(
                f"{self._path}: an earlier write failed and could not be undone; "
                "reopen the log to repair its tail"
            )

    def _write_durably(self, data: bytes) -> None:
        """Append `data` and fsync; on failure restore the previous size so no torn line stays."""
        old_size = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            self._roll_back(old_size)
            raise
        self._size = old_size + len(data)

    def _roll_back(self, old_size: int) -> None:
        try:
            os.ftruncate(self._fd, old_size)
            os.fsync(self._fd)
        except OSError:
            # The file may now end in a partial line; refuse further appends until a reopen,
            # whose torn-tail repair fixes and records it.
            self._broken = True


def _open_locked(path: Path) -> int:
    """Open for appending and take an exclusive flock, so two writers cannot fork the chain."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise AuditLogError(f"{path}: audit log is already open by another writer") from None
        raise
    try:
        if os.fstat(fd).st_size == 0:
            fsync_dir(path.parent)  # a new file's directory entry must survive a power cut too
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_tail(fd: int, path: Path, public_key: DevicePublicKey) -> _Tail:
    """Find the last complete line and any torn bytes after it, reading at most ~2 lines back."""
    size = os.fstat(fd).st_size
    # Torn bytes are shorter than one line, and the last line is at most MAX_LINE_BYTES with its
    # LF, so this window always also holds the LF that ends the line before the last one.
    window_len = min(size, 2 * MAX_LINE_BYTES + 2)
    window = os.pread(fd, window_len, size - window_len)
    complete_end = window.rfind(b"\n") + 1
    torn_bytes = window_len - complete_end
    if complete_end == 0:
        if window_len < size:
            raise AuditLogError(f"{path}: no line break in the last {window_len} bytes")
        return _Tail(-1, GENESIS_PREV_HEX, 0, torn_bytes)
    line_start = window.rfind(b"\n", 0, complete_end - 1) + 1
    if line_start == 0 and window_len < size:
        raise AuditLogError(f"{path}: last line is longer than {MAX_LINE_BYTES} bytes")
    last = _last_entry(window[line_start : complete_end - 1], path, public_key)
    return _Tail(last.seq, last.line_sha256_hex, size - torn_bytes, torn_bytes)


def _last_entry(line: bytes, path: Path, public_key: DevicePublicKey) -> AuditEntry:
    """Parse the last complete line; refuse to continue a chain we did not write."""
    try:
        entry = parse_line(line)
    except ValueError as exc:
        raise AuditLogError(f"{path}: last entry is unreadable ({exc})") from None
    if not signature_verifies(entry, public_key):
        raise AuditLogError(
            f"{path}: last entry (seq {entry.seq}) is not signed by this device key "
            f"{public_key.key_id()}"
        )
    return entry
