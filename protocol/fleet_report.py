"""The box's signed statement of what became of a fleet configuration document
(docs/fleet-config.md 10): applied, refused for good, or deferred (the box's state, not the
document, kept it from being judged; the box tries again by itself).

`POST /fleet/report` on the mutual-TLS listener carries one JSON object with exactly
REPORT_FIELDS. The signature is the box's device key (Ed25519) over `signed_message`:
b"mvb-config-report-v2" then the box id, serial, sha256, target path, at_ms, outcome and reason,
one per line (so a reason is one line: `one_line` makes it so). The box id is the client
certificate's CN, never a member of the body, so a box cannot sign for another.

A report may also carry AUDIT_HEAD: the box's signed audit head as the report leaves
(storage/audit_head.py, docs/audit-custody.md), signed by itself and so not part of the
report's signed bytes; a back office that does not know the member refuses the report (400).

Version 1 (REPORT_FIELDS_V1, label "mvb-config-report-v1", no outcome or reason: an applied
document) is what boxes before this version send; the back office still accepts it.
"""

from __future__ import annotations

from typing import Final

MAX_REPORT_BYTES: Final = 8 * 1024
MAX_REASON_CHARS: Final = 300
REPORT_LABEL_V1: Final = "mvb-config-report-v1"
REPORT_LABEL: Final = "mvb-config-report-v2"
OUTCOMES: Final = ("applied", "refused", "deferred")
REPORT_FIELDS_V1: Final = frozenset(
    {"config_serial", "sha256", "target_path", "at_ms", "device_public_key", "signature"}
)
REPORT_FIELDS: Final = REPORT_FIELDS_V1 | {"outcome", "reason"}
AUDIT_HEAD: Final = "audit_head"
MAX_AUDIT_HEAD_CHARS: Final = 200


def one_line(reason: str) -> str:
    """A reason as a report carries it: control characters as spaces, at most
    MAX_REASON_CHARS characters."""
    flat = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in reason)
    return flat[:MAX_REASON_CHARS]


def signed_message(
    box_id: str,
    serial: int,
    sha256: str,
    target_path: str,
    at_ms: int,
    outcome: str,
    reason: str,
) -> bytes:
    """The bytes the device key signs for one report (the same on both sides, byte for byte)."""
    lines = [REPORT_LABEL, box_id, str(serial), sha256, target_path, str(at_ms), outcome, reason]
    return "\n".join(lines).encode()


def signed_message_v1(box_id: str, serial: int, sha256: str, target_path: str, at_ms: int) -> bytes:
    """What a version 1 report signed (an applied document, no outcome or reason)."""
    lines = [REPORT_LABEL_V1, box_id, str(serial), sha256, target_path, str(at_ms)]
    return "\n".join(lines).encode()
