"""Append-only, hash-chained, signed audit log (RULES S5: the whole chain is logged; audit records
cannot be edited, even by administrators): the format and its verification, pure.

This module is the pure core: the format below, encoding and signing an entry
(`encode_entry`), parsing and checking one line (`parse_line`), and verifying a whole log
(`verify_audit_log`, given its bytes). It opens no file and reads no clock. The shell, the one
appender of a log file with its lock and fsync, is `AuditLog` in storage/audit_io.py; the back
office's `mvb-admin audit verify` needs only this module.

Format specification, "MVB audit v1"
====================================

File
    JSON Lines, UTF-8. Every entry is exactly one line terminated by one LF (0x0A). A file MUST
    end with LF; bytes after the last LF are a *torn* line (an append cut off by a power loss).

Entry
    A JSON object with exactly these members::

        {"at_ms":1700000000000,"event":"recording.started","fields":{"source":"button"},
         "prev":"<64 hex>","seq":0,"sig":"<base64>"}

    - ``seq``: integer, 0 for the first entry, then each entry's seq is the previous one's plus 1.
    - ``at_ms``: integer, wall-clock time of the append in milliseconds since the Unix epoch. It is
      a stamp, not an ordering: the order is given by ``seq`` (wall clocks step backwards).
    - ``event``: string matching ``^[a-z][a-z0-9_.]{0,63}$``.
    - ``fields``: object of at most 16 members; names match ``^[a-z][a-z0-9_]{0,63}$``; values are
      JSON scalars: string (at most 1536 characters: a value sealed to 8 key holders fits),
      integer in [-2**63, 2**63-1], finite number, true, false or null.
    - ``prev``: lowercase hex SHA-256 of the previous entry's complete line bytes (without its LF);
      64 zeros for seq 0.
    - ``sig``: standard base64 (with padding) of a 64-byte pure Ed25519 signature (RFC 8032) made
      with the device key (`storage.devicekey`).

Canonical form
    ``canonical(obj)`` is the UTF-8 encoding of Python's
    ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``:
    members sorted by name, no whitespace, non-ASCII characters unescaped, ``"``, ``\\`` and control
    characters escaped (``\\n``, ``\\t``, ... or ``\\u00XX``). Every line MUST be the canonical form
    of its entry, so a line has exactly one valid spelling and its hash is well defined.

Signature
    ``sig = Ed25519-Sign(device_key, b"MVB audit v1\\n" || canonical(entry without "sig"))``.
    The domain prefix keeps an audit signature from being valid for anything else the key signs.

What verification proves (`verify_audit_log`)
    Each entry was written by the holder of the device key; no entry was altered, removed,
    inserted or reordered before the last one. It cannot notice that whole entries were cut off
    the *end* of the file: compare ``last_seq``/``head_sha256_hex`` of the report with a later
    anchor (e.g. what the back office last received) for that.

Writing (`AuditLog`, storage/audit_io.py)
    One process appends (an exclusive ``flock``), one line per ``os.write`` on an ``O_APPEND``
    descriptor, then ``fsync``: an entry is durable when ``append`` returns. A torn tail left by a
    power cut was never acknowledged, so ``AuditLog.open`` drops it and records that it did, in an
    ``audit_torn_tail_repaired`` entry with ``{"dropped_bytes": n}``.

An entry holds only what its callers pass in; nothing here adds keys or other secrets to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import cast

from common.faults import RemoteFault
from storage.devicekey import SIGNATURE_BYTES, DeviceKey, DevicePublicKey

DOMAIN = b"MVB audit v1\n"
GENESIS_PREV_HEX = "0" * 64
EVENT_PATTERN = re.compile(r"[a-z][a-z0-9_.]{0,63}")
FIELD_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
HEX_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_STRING_CHARS = 1536
MAX_FIELDS = 16
# Upper bound of one line; also bounds how far `AuditLog.open` reads back from the end.
MAX_LINE_BYTES = 64 * 1024
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
TORN_TAIL_EVENT = "audit_torn_tail_repaired"

ENTRY_MEMBERS = frozenset({"seq", "at_ms", "event", "fields", "prev", "sig"})

Scalar = str | int | float | bool | None


class _LineError(RemoteFault):
    """Internal: why one line is not a well-formed entry. `seq` is set once it is known."""

    def __init__(self, problem: str, seq: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.seq = seq


def canonical_json(obj: object) -> bytes:
    """The canonical encoding defined in the module docstring."""
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def signed_message(unsigned_entry: Mapping[str, object]) -> bytes:
    """The exact bytes the device key signs for an entry (given without its "sig" member)."""
    return DOMAIN + canonical_json(unsigned_entry)


@dataclass(frozen=True)
class AuditEntry:
    """One entry as written or read. `line_sha256_hex` is what the next entry's `prev` must be."""

    seq: int
    at_ms: int
    event: str
    fields: Mapping[str, Scalar]
    prev_hex: str
    sig_b64: str
    line_sha256_hex: str

    def unsigned(self) -> dict[str, object]:
        """The entry without "sig": the object the signature covers."""
        return {
            "seq": self.seq,
            "at_ms": self.at_ms,
            "event": self.event,
            "fields": dict(self.fields),
            "prev": self.prev_hex,
        }

    def signature(self) -> bytes:
        return base64.b64decode(self.sig_b64)


# --- validation shared by the writer (raises ValueError) and the verifier (reports) -------------


def _event_problem(event: object) -> str | None:
    if not isinstance(event, str) or EVENT_PATTERN.fullmatch(event) is None:
        return f"event name {event!r} does not match {EVENT_PATTERN.pattern}"
    return None


def _value_problem(value: object) -> str | None:
    """Why `value` is not an allowed field value, or None. bool is tested before int on purpose:
    bool is an int subclass and must not be range-checked as one."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if INT_MIN <= value <= INT_MAX else "integer out of 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "number is not finite"
    if isinstance(value, str):
        return _string_problem(value)
    return f"{type(value).__name__} is not a JSON scalar"


def _string_problem(value: str) -> str | None:
    if len(value) > MAX_STRING_CHARS:
        return f"string longer than {MAX_STRING_CHARS} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "string is not valid Unicode (lone surrogate)"
    return None


def _fields_problem(fields: Mapping[str, object]) -> str | None:
    """First problem with a fields mapping, naming the offending key."""
    if len(fields) > MAX_FIELDS:
        return f"more than {MAX_FIELDS} fields"
    for key, value in fields.items():
        if not isinstance(key, str) or FIELD_NAME_PATTERN.fullmatch(key) is None:
            return f"field name {key!r} does not match {FIELD_NAME_PATTERN.pattern}"
        problem = _value_problem(value)
        if problem is not None:
            return f"field {key!r}: {problem}"
    return None


def validate_entry(event: str, fields: Mapping[str, object]) -> None:
    """Raise ValueError (naming the event or key) before anything is written."""
    problem = _event_problem(event) or _fields_problem(fields)
    if problem is not None:
        raise ValueError(f"audit entry rejected: {problem}")


# --- encoding and parsing -----------------------------------------------------------------------


def encode_entry(
    seq: int,
    at_ms: int,
    event: str,
    fields: Mapping[str, Scalar],
    prev_hex: str,
    device_key: DeviceKey,
) -> tuple[AuditEntry, bytes]:
    """Sign and encode one entry; returns it with its line (without LF)."""
    unsigned: dict[str, object] = {
        "seq": seq,
        "at_ms": at_ms,
        "event": event,
        "fields": dict(fields),
        "prev": prev_hex,
    }
    sig_b64 = base64.b64encode(device_key.sign(signed_message(unsigned))).decode("ascii")
    line = canonical_json({**unsigned, "sig": sig_b64})
    entry = AuditEntry(
        seq=seq,
        at_ms=at_ms,
        event=event,
        fields=MappingProxyType(dict(fields)),
        prev_hex=prev_hex,
        sig_b64=sig_b64,
        line_sha256_hex=hashlib.sha256(line).hexdigest(),
    )
    return entry, line


def parse_line(line: bytes) -> AuditEntry:
    """Parse one line (without LF) into an entry, checking shape and canonical form but NOT the
    signature or the chain. Raises ValueError with a one-line reason."""
    try:
        return _parse_line(line)
    except _LineError as exc:
        raise ValueError(exc.problem) from None


def _parse_line(line: bytes) -> AuditEntry:
    if not line:
        raise _LineError("empty line")
    obj = _load_json_object(line)
    seq = obj.get("seq")
    if type(seq) is not int or seq < 0:
        raise _LineError("malformed entry (seq is not a non-negative integer)")
    problem = _members_problem(obj)
    if problem is not None:
        raise _LineError(f"malformed entry ({problem})", seq)
    # Canonical form makes the line's hash a function of its content: no re-spelling is possible.
    if canonical_json(obj) != line:
        raise _LineError("entry is not in canonical form", seq)
    # _members_problem has checked every member's type; the casts only tell mypy.
    return AuditEntry(
        seq=seq,
        at_ms=cast(int, obj["at_ms"]),
        event=cast(str, obj["event"]),
        fields=MappingProxyType(cast(dict[str, Scalar], obj["fields"])),
        prev_hex=cast(str, obj["prev"]),
        sig_b64=cast(str, obj["sig"]),
        line_sha256_hex=hashlib.sha256(line).hexdigest(),
    )


def _load_json_object(line: bytes) -> dict[str, object]:
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError also covers JSONDecodeError and over-long integer literals.
        raise _LineError("not valid JSON") from None
    if not isinstance(obj, dict):
        raise _LineError("not a JSON object")
    return obj


def _members_problem(obj: Mapping[str, object]) -> str | None:
    """Shape of every member except seq (checked first, so later messages can name it)."""
    if set(obj) != ENTRY_MEMBERS:
        missing = sorted(ENTRY_MEMBERS - set(obj))
        extra = sorted(set(obj) - ENTRY_MEMBERS)
        return f"missing members {missing}, unexpected members {extra}"
    if type(obj["at_ms"]) is not int:
        return "at_ms is not an integer"
    fields = obj["fields"]
    if not isinstance(fields, dict):
        return "fields is not an object"
    prev = obj["prev"]
    if not isinstance(prev, str) or HEX_SHA256_PATTERN.fullmatch(prev) is None:
        return "prev is not 64 lowercase hex digits"
    return _event_problem(obj["event"]) or _fields_problem(fields) or _sig_problem(obj["sig"])


def _sig_problem(sig: object) -> str | None:
    if not isinstance(sig, str):
        return "sig is not a string"
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return "sig is not base64"
    return None if len(raw) == SIGNATURE_BYTES else f"sig is not {SIGNATURE_BYTES} bytes"


def signature_verifies(entry: AuditEntry, public_key: DevicePublicKey) -> bool:
    return public_key.verify(signed_message(entry.unsigned()), entry.signature())


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditVerifyReport:
    """Result of `verify_audit_log`.

    `entries` counts the entries that verified before the first problem (all of them when `ok`);
    `last_seq` and `head_sha256_hex` describe the last of those, for comparison with an anchor.
    """

    ok: bool
    entries: int
    first_problem: str | None
    last_seq: int | None = None
    head_sha256_hex: str | None = None


def verify_audit_log(data: bytes, public_key: DevicePublicKey) -> AuditVerifyReport:
    """Check a whole log (pure, no I/O) and report the FIRST broken or missing link."""
    lines, torn = split_lines(data)
    chain = _Chain(public_key, lines)
    for index in range(len(lines)):
        problem = chain.check(index)
        if problem is not None:
            return chain.report(problem)
    if torn:
        return chain.report(f"line {len(lines) + 1}: last line is torn (no newline)")
    return chain.report(None)


def split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """Complete lines (without LF) and whether bytes follow the last LF."""
    complete_end = data.rfind(b"\n") + 1
    lines = data[: complete_end - 1].split(b"\n") if complete_end else []
    return lines, complete_end < len(data)


class _Chain:
    """Walks lines in order, holding the last entry that verified."""

    def __init__(self, public_key: DevicePublicKey, lines: list[bytes]) -> None:
        self._public_key = public_key
        self._lines = lines
        self._last: AuditEntry | None = None
        self._count = 0

    def check(self, index: int) -> str | None:
        """Problem with line `index` (0-based), or None after accepting it as the new last."""
        line_no = index + 1
        try:
            entry = _parse_line(self._lines[index])
        except _LineError as exc:
            where = f"line {line_no}" if exc.seq is None else f"line {line_no} (seq {exc.seq})"
            return f"{where}: {exc.problem}"
        problem = self._sequence_problem(index, entry) or self._link_problem(line_no, entry)
        if problem is not None:
            return problem
        if not signature_verifies(entry, self._public_key):
            return f"line {line_no} (seq {entry.seq}): signature does not verify"
        self._last = entry
        self._count += 1
        return None

    def _sequence_problem(self, index: int, entry: AuditEntry) -> str | None:
        line_no = index + 1
        if self._last is None:
            if entry.seq == 0:
                return None
            return (
                f"line {line_no}: first entry has seq {entry.seq}, expected 0 "
                "(log does not start at the beginning)"
            )
        before = self._last.seq
        if entry.seq == before + 1:
            return None
        if entry.seq <= before:
            return (
                f"line {line_no}: seq {entry.seq} follows seq {before} (out of order or repeated)"
            )
        gap = self._gap(index, before, entry.seq)
        return f"line {line_no}: seq {entry.seq} follows seq {before} ({gap})"

    def _gap(self, index: int, before: int, after: int) -> str:
        """Describe the seqs between `before` and `after`: absent, or present later (reordered)."""
        first_missing, last_missing = before + 1, after - 1
        found = self._find_later(index + 1, first_missing)
        if found is not None:
            return f"entry {first_missing} out of order, found at line {found + 1}"
        if first_missing == last_missing:
            return f"entry {first_missing} missing"
        return f"entries {first_missing}..{last_missing} missing"

    def _find_later(self, start: int, seq: int) -> int | None:
        """Index of the first line at or after `start` whose seq is `seq`; unparsable lines skip."""
        for index in range(start, len(self._lines)):
            try:
                if _parse_line(self._lines[index]).seq == seq:
                    return index
            except _LineError:
                continue
        return None

    def _link_problem(self, line_no: int, entry: AuditEntry) -> str | None:
        if self._last is None:
            if entry.prev_hex == GENESIS_PREV_HEX:
                return None
            return f"line {line_no} (seq {entry.seq}): prev-hash of the first entry is not zero"
        if entry.prev_hex == self._last.line_sha256_hex:
            return None
        return (
            f"line {line_no} (seq {entry.seq}): prev-hash does not match line {line_no - 1} "
            "(entry altered or removed)"
        )

    def report(self, problem: str | None) -> AuditVerifyReport:
        last = self._last
        return AuditVerifyReport(
            ok=problem is None,
            entries=self._count,
            first_problem=problem,
            last_seq=None if last is None else last.seq,
            head_sha256_hex=None if last is None else last.line_sha256_hex,
        )


def format_report(report: AuditVerifyReport) -> str:
    """One line for `mvb-admin audit verify`."""
    if report.ok:
        return f"audit log OK: {report.entries} entries, chain and signatures verify"
    return f"audit log BROKEN: {report.first_problem}"
