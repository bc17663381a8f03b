"""The audit log's head: what a box says its log ends with, signed; and a copy checked against
a head (pure: no file, no clock).

A verified log proves that no entry was altered, removed, inserted or reordered *before its
last one* (storage/audit.py). It cannot show that entries were cut off the end, or that the
whole file was emptied or rewritten and re-signed by someone holding the device key. A head
kept elsewhere can: the back office keeps every head a box sent (docs/audit-custody.md), and a
copy of the log must reach that head with the same entry.

Format, "MVB audit head v1"
===========================

Head
    ``seq``: the seq of the log's last entry, -1 for an empty log; ``sha256``: lowercase hex
    SHA-256 of that entry's line (without its LF), 64 zeros for an empty log (the `prev` of an
    entry with seq 0).

Signed head
    ``sig = Ed25519-Sign(device_key, b"MVB audit head v1\\n" || canonical({"seq": seq,
    "sha256": sha256}))`` with the device key that signs the log's entries (canonical as in
    storage/audit.py). The domain prefix keeps a head signature from passing for an entry's,
    or for anything else the key signs.

Text
    ``<seq>:<sha256>`` (a head) or ``<seq>:<sha256>:<sig>`` (a signed head: the signature in
    standard base64 with padding). At most MAX_HEAD_TEXT_CHARS characters, printable ASCII
    without spaces or commas: it travels in an HTTP header, a tus metadata value, a JSON string
    and on an admin's command line alike.

A signed head is a statement the box cannot deny: a signed head and a signed entry with another
hash at the same seq prove that the holder of the device key showed two histories.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from common.faults import RemoteFault
from storage.audit import (
    GENESIS_PREV_HEX,
    AuditVerifyReport,
    canonical_json,
    split_lines,
    verify_audit_log,
)
from storage.devicekey import SIGNATURE_BYTES, DeviceKey, DevicePublicKey

HEAD_DOMAIN: Final = b"MVB audit head v1\n"
EMPTY_SEQ: Final = -1
MAX_SEQ: Final = 2**63 - 1
MAX_HEAD_TEXT_CHARS: Final = 200
_TEXT: Final = re.compile(
    r"(?P<seq>-1|0|[1-9][0-9]{0,18}):(?P<sha256>[0-9a-f]{64})(?::(?P<sig>[A-Za-z0-9+/]{86}==))?"
)


class HeadFormatError(ValueError, RemoteFault):
    """A head's text is malformed, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The end of a log: its last entry's seq and line hash (EMPTY_SEQ, zeros: an empty log).

    Invariant (checked): EMPTY_SEQ <= seq <= MAX_SEQ; an empty log's hash is the genesis one.
    """

    seq: int
    sha256_hex: str

    def __post_init__(self) -> None:
        if not EMPTY_SEQ <= self.seq <= MAX_SEQ:
            raise HeadFormatError(f"head seq {self.seq} out of range")
        if re.fullmatch(r"[0-9a-f]{64}", self.sha256_hex) is None:
            raise HeadFormatError("head sha256 is not 64 lowercase hex digits")
        if self.seq == EMPTY_SEQ and self.sha256_hex != GENESIS_PREV_HEX:
            raise HeadFormatError("an empty log's head has the genesis hash")

    @classmethod
    def empty(cls) -> AuditHead:
        return cls(EMPTY_SEQ, GENESIS_PREV_HEX)

    def render(self) -> str:
        return f"{self.seq}:{self.sha256_hex}"

    def message(self) -> bytes:
        """The bytes the device key signs for this head."""
        return HEAD_DOMAIN + canonical_json({"seq": self.seq, "sha256": self.sha256_hex})

    def sign(self, device_key: DeviceKey) -> SignedHead:
        return SignedHead(self, base64.b64encode(device_key.sign(self.message())).decode("ascii"))


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A head with the device key's signature over it (see the module docstring)."""

    head: AuditHead
    sig_b64: str

    @property
    def seq(self) -> int:
        return self.head.seq

    @property
    def sha256_hex(self) -> str:
        return self.head.sha256_hex

    def render(self) -> str:
        return f"{self.head.render()}:{self.sig_b64}"

    def verifies(self, public_key: DevicePublicKey) -> bool:
        try:
            signature = base64.b64decode(self.sig_b64, validate=True)
        except (binascii.Error, ValueError):
            return False
        return len(signature) == SIGNATURE_BYTES and public_key.verify(
            self.head.message(), signature
        )


def parse_head(text: str) -> AuditHead | SignedHead:
    """A head or a signed head from its text; HeadFormatError says what is wrong."""
    if len(text) > MAX_HEAD_TEXT_CHARS:
        raise HeadFormatError(f"a head is at most {MAX_HEAD_TEXT_CHARS} characters")
    match = _TEXT.fullmatch(text)
    if match is None:
        raise HeadFormatError("a head is SEQ:SHA256 or SEQ:SHA256:SIGNATURE")
    head = AuditHead(int(match["seq"]), match["sha256"])
    sig = match["sig"]
    return head if sig is None else SignedHead(head, sig)


def parse_signed_head(text: str, public_key: DevicePublicKey | None = None) -> SignedHead:
    """A signed head from its text, its signature checked when `public_key` is given."""
    parsed = parse_head(text)
    if not isinstance(parsed, SignedHead):
        raise HeadFormatError("the head is not signed")
    if public_key is not None and not parsed.verifies(public_key):
        raise HeadFormatError("the head's signature does not verify with the device key")
    return parsed


def head_of_line(seq: int, line: bytes) -> AuditHead:
    """The head of a log whose last entry (seq `seq`) is `line` (without its LF)."""
    return AuditHead(seq, hashlib.sha256(line).hexdigest())


def verify_against_head(
    data: bytes, public_key: DevicePublicKey, head: AuditHead
) -> AuditVerifyReport:
    """Verify a copy of a log (storage/audit.py) and that it reaches `head` with the same entry.

    A copy that ends before the head's seq was cut short (truncated, emptied); one whose entry
    at that seq has another hash was rewritten. Entries after the head are the log's growth
    since, checked like the rest. The report's `first_problem` names what failed."""
    report = verify_audit_log(data, public_key)
    if head.seq == EMPTY_SEQ:
        return report  # an empty head holds nothing a copy could have lost
    lines, _torn = split_lines(data)
    if head.seq >= report.entries:  # the verified prefix ends before the head
        if not report.ok:
            problem = f"{report.first_problem}; the head names seq {head.seq}, beyond that"
        elif report.last_seq is None:
            problem = f"the log is empty, but the head names seq {head.seq}: it was emptied"
        else:
            problem = (
                f"the log ends at seq {report.last_seq}, but the head names seq {head.seq}: "
                f"entries {report.last_seq + 1}..{head.seq} were cut off the end"
            )
        return _broken(report, problem)
    # In a verified prefix the line at index i is the entry with seq i.
    if hashlib.sha256(lines[head.seq]).hexdigest() != head.sha256_hex:
        return _broken(
            report,
            f"entry {head.seq} differs from the head (the log was rewritten from there or "
            "before, and signed again)",
        )
    return report


def _broken(report: AuditVerifyReport, problem: str) -> AuditVerifyReport:
    return AuditVerifyReport(
        ok=False,
        entries=report.entries,
        first_problem=problem,
        last_seq=report.last_seq,
        head_sha256_hex=report.head_sha256_hex,
    )


def format_head_report(report: AuditVerifyReport, head: AuditHead | None) -> str:
    """What `mvb-admin audit verify` prints: one line, and without a head a second that says
    what cannot be known without one."""
    if not report.ok:
        return f"audit log BROKEN: {report.first_problem}"
    line = f"audit log OK: {report.entries} entries, chain and signatures verify"
    if head is None:
        return (
            f"{line}\nwithout --head: entries cut off the end, an emptied file or a log "
            "rewritten and signed again with the device key cannot be detected; pass "
            "--head with the head the back office holds (mvb-admin audit check)"
        )
    return f"{line}, and it reaches the head at seq {head.seq}"
