"""The audit log on the wire: how a box ships its log and its signed head (pure, shared).

Shared by the box (transport/audit_shipping.py) and the back office (backoffice/audit_store.py,
backoffice/audit_routes.py): one format, one parser. The protocol is docs/audit-custody.md,
normative; in short, on the mutual-TLS listener (the box id is the client certificate's CN, never
a member of a request):

- `POST /audit/v1/append`: the body is whole lines of the box's `audit.jsonl` (storage/audit.py
  format, byte for byte), contiguous seqs, at most MAX_APPEND_BYTES; `Mvb-Audit-Head` is the box's
  signed head as the request leaves (storage/audit_head.py); `Mvb-Device-Key` the device key's
  public half (base64 of its 32 raw bytes). Answers: 204 (held), 416 (start elsewhere), 409
  (refused: the log does not extend what the back office holds), each with `Mvb-Audit-Held`.
- `GET /audit/v1/head`: 204 with `Mvb-Audit-Held`, what the back office holds.
- Every tus creation carries the signed head as the Upload-Metadata value METADATA_KEY, and
  every configuration report as its member REPORT_MEMBER.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from common.faults import RemoteFault
from storage.audit import MAX_LINE_BYTES, AuditEntry, parse_line, split_lines
from storage.audit_head import AuditHead, HeadFormatError, parse_head
from storage.devicekey import DeviceKeyError, DevicePublicKey

AUDIT_PREFIX: Final = "/audit/v1/"
APPEND_PATH: Final = "/audit/v1/append"
HEAD_PATH: Final = "/audit/v1/head"
HEAD_HEADER: Final = "Mvb-Audit-Head"
HELD_HEADER: Final = "Mvb-Audit-Held"
KEY_HEADER: Final = "Mvb-Device-Key"
CONTENT_TYPE: Final = "application/jsonl"
METADATA_KEY: Final = "audit_head"
REPORT_MEMBER: Final = "audit_head"
MAX_APPEND_BYTES: Final = MAX_LINE_BYTES
"""A request's body bound. Every line is shorter than MAX_LINE_BYTES with its LF, so a request
always carries at least one entry; most entries are a few hundred bytes."""

STATUS_HELD: Final = 204
STATUS_REFUSED: Final = 409
STATUS_START_ELSEWHERE: Final = 416


class AppendRefused(ValueError, RemoteFault):
    """An append request's body or headers are malformed (400)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Entries of one append request: parsed, contiguous, each with its line (without LF)."""

    entries: tuple[AuditEntry, ...]
    lines: tuple[bytes, ...]

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq


def whole_lines(data: bytes) -> bytes:
    """The bytes of `data` up to and including its last LF (a read may end mid-line)."""
    return data[: data.rfind(b"\n") + 1]


def parse_batch(body: bytes) -> Batch | None:
    """The entries of an append body (None: no entries, a head-only request). Shape, canonical
    form, contiguity and the chain between them are checked here; signatures and the link to
    what is held are the back office's (backoffice/audit_custody.py). AppendRefused otherwise."""
    if len(body) > MAX_APPEND_BYTES:
        raise AppendRefused(f"an append body is at most {MAX_APPEND_BYTES} bytes")
    if not body:
        return None
    lines, torn = split_lines(body)
    if torn or not lines:
        raise AppendRefused("an append body is whole lines, each ending in LF")
    entries: list[AuditEntry] = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = parse_line(line)
        except ValueError as exc:
            raise AppendRefused(f"line {number}: {exc}") from None
        if entries and entry.seq != entries[-1].seq + 1:
            raise AppendRefused(f"line {number}: seq {entry.seq} does not follow {entries[-1].seq}")
        if entries and entry.prev_hex != entries[-1].line_sha256_hex:
            raise AppendRefused(f"line {number}: prev does not match the line before")
        entries.append(entry)
    return Batch(tuple(entries), tuple(lines))


def parse_held(value: str | None) -> AuditHead:
    """The back office's `Mvb-Audit-Held` answer; AppendRefused when absent or malformed."""
    if value is None:
        raise AppendRefused(f"the answer has no {HELD_HEADER}")
    try:
        head = parse_head(value.strip())
    except HeadFormatError as exc:
        raise AppendRefused(f"{HELD_HEADER}: {exc}") from None
    if not isinstance(head, AuditHead):
        raise AppendRefused(f"{HELD_HEADER} is a head, not a signed head")
    return head


def render_key(public_key: DevicePublicKey) -> str:
    return base64.b64encode(public_key.raw()).decode("ascii")


def parse_key(value: str | None) -> DevicePublicKey:
    """The `Mvb-Device-Key` header; AppendRefused when absent or not an Ed25519 key."""
    if value is None:
        raise AppendRefused(f"an append needs {KEY_HEADER}")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
        return DevicePublicKey.from_raw(raw, source=KEY_HEADER)
    except (binascii.Error, ValueError, DeviceKeyError):
        raise AppendRefused(f"{KEY_HEADER} is not base64 of a 32-byte Ed25519 key") from None
