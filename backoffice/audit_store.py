"""The back office's audit custody on disk: each box's shipped log, its head history, its alarms.

The shell around backoffice/audit_custody.py (the judge). Layout under `<store>/audit/`, one
directory per box, named by the client certificate's CN (never by anything a request says):

    <box_id>/log.jsonl            the box's audit log as shipped, byte for byte (only grows)
    <box_id>/index.txt            per held entry, the end offset of its line in log.jsonl
                                  (`%016x` and LF: fixed width, so entry n is found by a seek)
    <box_id>/device_key.pub.pem   the device key pinned at the box's first shipment
    <box_id>/heads.jsonl          every head received: when, via what, the head, the verdict
    <box_id>/alarms.jsonl         every refusal: when, kind, detail, the head or request refused

Invariants:
- Lines reach log.jsonl only through the judge and are fsynced before the box hears 204; then
  index.txt, a cache rebuilt from the log whenever it disagrees (a crash between the two).
- A crash may leave a torn last line in a file: it was never acknowledged and is cut when the
  box's directory is next loaded.
- A refusal is logged at error level (`audit custody alarm`) and recorded in alarms.jsonl before
  the box hears 409; `mvb-admin audit check` shows them.
- One thread at a time per box (a lock per box); callers run this off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from backoffice.audit_custody import (
    Claim,
    Custody,
    Outcome,
    Verdict,
    judge_append,
    judge_head,
)
from common.durable import append_line, append_lines, atomic_write_bytes, make_dirs
from common.faults import RemoteFault, StorageFault
from storage.audit import MAX_LINE_BYTES
from storage.audit_head import AuditHead, HeadFormatError, SignedHead, parse_signed_head
from storage.devicekey import DeviceKeyError, DevicePublicKey
from transport.audit_wire import AppendRefused, parse_batch, parse_key

log = logging.getLogger(__name__)

AUDIT_DIR: Final = "audit"
LOG_FILE: Final = "log.jsonl"
INDEX_FILE: Final = "index.txt"
KEY_FILE: Final = "device_key.pub.pem"
HEADS_FILE: Final = "heads.jsonl"
ALARMS_FILE: Final = "alarms.jsonl"
INDEX_LINE_BYTES: Final = 17


class AuditStoreError(StorageFault):
    """The box's directory cannot be read as this module writes it."""


class NotABoxId(ValueError, RemoteFault):
    """A client id that cannot name a directory ("." or "..")."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AppendAnswer:
    """What the box hears: the HTTP status, the held head, a one-line message."""

    status: int
    held: AuditHead
    message: str


class BoxAudit:
    """One box's directory (see the module docstring). Use `AuditStore.box`."""

    def __init__(self, directory: Path, box_id: str) -> None:
        self.directory = directory
        self.box_id = box_id
        self.lock = threading.Lock()
        self.custody = self._load()

    # -- loading ---------------------------------------------------------------------------------

    def _load(self) -> Custody:
        key = self._load_key()
        count = self._repair()
        held = AuditHead(count - 1, self._line_hash(count - 1)) if count else AuditHead.empty()
        claims: dict[int, Claim] = {}
        for record in self.heads():
            if record.get("outcome") != Outcome.PENDING:
                continue
            try:
                head = parse_signed_head(str(record["head"]))
                claim = Claim(head, str(record["via"]), int(record["at_ms"]))
            except (HeadFormatError, KeyError, ValueError):
                continue
            if head.seq > held.seq:
                claims.setdefault(head.seq, claim)
        return Custody(held, key, claims)

    def _load_key(self) -> DevicePublicKey | None:
        path = self.directory / KEY_FILE
        if not path.exists():
            return None
        try:
            return DevicePublicKey.load(path)
        except DeviceKeyError as exc:
            raise AuditStoreError(f"{path}: {exc}") from None

    def _repair(self) -> int:
        """How many entries are held. A torn tail of the log (never acknowledged) is cut, and
        the index rebuilt from the log when it does not end where the log ends."""
        log_path, index_path = self.directory / LOG_FILE, self.directory / INDEX_FILE
        size = _size(log_path)
        if size:
            window_bytes = min(size, MAX_LINE_BYTES + 1)
            with log_path.open("rb") as handle:
                handle.seek(size - window_bytes)
                window = handle.read(window_bytes)
            last_lf = window.rfind(b"\n")
            if last_lf < 0:
                raise AuditStoreError(f"{log_path}: no line ends in its last {window_bytes} bytes")
            complete = size - window_bytes + last_lf + 1
            if complete < size:
                log.warning("audit store box=%s: cutting a torn line", self.box_id)
                os.truncate(log_path, complete)
                size = complete
        index_size = _size(index_path)
        if index_size % INDEX_LINE_BYTES == 0 and self._index_end(index_size) == size:
            return index_size // INDEX_LINE_BYTES
        ends = bytearray()
        count, offset = 0, 0
        if size:
            with log_path.open("rb") as handle:
                while piece := handle.read(1024 * 1024):
                    start = 0
                    while (found := piece.find(b"\n", start)) >= 0:
                        ends += b"%016x\n" % (offset + found + 1)
                        count += 1
                        start = found + 1
                    offset += len(piece)
        log.warning("audit store box=%s: index rebuilt (%d entries)", self.box_id, count)
        atomic_write_bytes(index_path, bytes(ends))
        return count

    def _index_end(self, index_size: int) -> int:
        """The end offset the index's last line names (0 for an empty index)."""
        if index_size == 0:
            return 0
        with (self.directory / INDEX_FILE).open("rb") as index:
            index.seek(index_size - INDEX_LINE_BYTES)
            try:
                return int(index.read(INDEX_LINE_BYTES), 16)
            except ValueError:
                return -1

    # -- reading the held log --------------------------------------------------------------------

    def _line_hash(self, seq: int) -> str:
        return hashlib.sha256(self.held_line(seq)).hexdigest()

    def held_line(self, seq: int) -> bytes:
        """The held entry `seq` (without LF), found through the index."""
        with (self.directory / INDEX_FILE).open("rb") as index:
            index.seek(max(0, seq - 1) * INDEX_LINE_BYTES)
            pair = index.read(2 * INDEX_LINE_BYTES).split()
        start, end = (0, int(pair[0], 16)) if seq == 0 else (int(pair[0], 16), int(pair[1], 16))
        with (self.directory / LOG_FILE).open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start).rstrip(b"\n")

    def held_hash(self, seq: int) -> str:
        if seq == self.custody.held.seq:
            return self.custody.held.sha256_hex
        return self._line_hash(seq)

    def log_bytes(self) -> bytes:
        path = self.directory / LOG_FILE
        return path.read_bytes() if path.exists() else b""

    def heads(self) -> list[dict[str, Any]]:
        return records(self.directory / HEADS_FILE)

    def alarms(self) -> list[dict[str, Any]]:
        return records(self.directory / ALARMS_FILE)

    # -- writing ---------------------------------------------------------------------------------

    def take(self, verdict: Verdict, head: SignedHead, via: str, at_ms: int) -> None:
        """Make `verdict` durable: new lines, then the index, the key, the head's record, and
        for a refusal the alarm (logged at error level)."""
        make_dirs(self.directory)
        if verdict.new_lines:
            log_path = self.directory / LOG_FILE
            size = _size(log_path)
            ends = []
            for line in verdict.new_lines:
                size += len(line) + 1
                ends.append(b"%016x\n" % size)
            append_lines(log_path, b"".join(line + b"\n" for line in verdict.new_lines))
            append_lines(self.directory / INDEX_FILE, b"".join(ends))
        key = verdict.custody.device_key
        if key is not None and self.custody.device_key is None:
            atomic_write_bytes(self.directory / KEY_FILE, key.pem(), mode=0o644)
        record = {
            "at_ms": at_ms,
            "via": via,
            "head": head.render(),
            "outcome": str(verdict.outcome),
            "refusal": None if verdict.refusal is None else str(verdict.refusal),
        }
        _append_record(self.directory / HEADS_FILE, record)
        if verdict.refused:
            self.alarm(
                str(verdict.refusal), verdict.detail, via=via, head=head.render(), at_ms=at_ms
            )
        self.custody = verdict.custody

    def alarm(self, kind: str, detail: str, **facts: Any) -> None:
        log.error("audit custody alarm box=%s kind=%s: %s", self.box_id, kind, detail)
        make_dirs(self.directory)
        _append_record(self.directory / ALARMS_FILE, {"kind": kind, "detail": detail, **facts})


class AuditStore:
    """Every box's audit custody under `<root>/audit` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root / AUDIT_DIR
        self._boxes: dict[str, BoxAudit] = {}
        self._guard = threading.Lock()

    def box(self, box_id: str) -> BoxAudit:
        """The box's custody, loaded at its first use. NotABoxId for "." and ".."."""
        if box_id in (".", "..") or "/" in box_id or not box_id:
            raise NotABoxId(f"{box_id!r} cannot name a box's directory")
        with self._guard:
            box = self._boxes.get(box_id)
            if box is None:
                box = BoxAudit(self.root / box_id, box_id)
                self._boxes[box_id] = box
            return box

    def append(
        self,
        box_id: str,
        body: bytes,
        head_text: str | None,
        key_text: str | None,
        enrolled: DevicePublicKey | None = None,
    ) -> AppendAnswer:
        """`POST /audit/v1/append` from client `box_id` (blocking). AppendRefused (400) for a
        malformed request, or a carried device key other than the one the box enrolled at
        pairing (`enrolled`, when the pairing ledger has one); the rest is the judge's."""
        if head_text is None:
            raise AppendRefused("an append needs Mvb-Audit-Head")
        try:
            head = parse_signed_head(head_text.strip())
        except HeadFormatError as exc:
            raise AppendRefused(f"Mvb-Audit-Head: {exc}") from None
        key = parse_key(key_text)
        if enrolled is not None and key != enrolled:
            log.error(
                "audit custody alarm box=%s kind=foreign_device_key carried=%s enrolled=%s",
                box_id,
                key.key_id(),
                enrolled.key_id(),
            )
            raise AppendRefused("the device key is not the one this box enrolled at pairing")
        batch = parse_batch(body)
        box = self.box(box_id)
        with box.lock:
            at_ms = wall_ms()
            verdict = judge_append(box.custody, batch, head, key, box.held_hash, at_ms=at_ms)
            if verdict.outcome is Outcome.START_ELSEWHERE:
                return AppendAnswer(416, box.custody.held, verdict.detail)
            box.take(verdict, head, "append", at_ms)
            if verdict.refused:
                return AppendAnswer(409, box.custody.held, f"{verdict.refusal}: {verdict.detail}")
            return AppendAnswer(204, box.custody.held, "held")

    def observe(self, box_id: str, head_text: str, via: str) -> Verdict | None:
        """A head sent with an upload's creation or a report (blocking); None (and a warning)
        when it is not a signed head: the upload or report goes on either way."""
        try:
            head = parse_signed_head(head_text.strip())
        except HeadFormatError as exc:
            log.warning("audit head via %s from box=%s unreadable: %s", via, box_id, exc)
            return None
        box = self.box(box_id)
        with box.lock:
            at_ms = wall_ms()
            verdict = judge_head(box.custody, head, via, box.held_hash, at_ms=at_ms)
            box.take(verdict, head, via, at_ms)
            return verdict

    def held(self, box_id: str) -> AuditHead:
        box = self.box(box_id)
        with box.lock:
            return box.custody.held


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _append_record(path: Path, record: dict[str, Any]) -> None:
    append_line(path, (json.dumps(record, sort_keys=True) + "\n").encode())


def records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a record file; a torn last line (a crash) is skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
