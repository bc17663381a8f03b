"""A box tells its back office that it blocked a file: `POST /uplink/blocked` (pure, shared).

The box blocks a file only for integrity (docs/uplink.md): the back office attested other bytes,
or broke the protocol. Besides the box's own sticky alarm, the back office is told, once per
block, on the mutual-TLS listener: the box id is the client certificate's CN (never a member of
the body), the body is one JSON object with exactly REPORT_FIELDS. The reference back office
appends it to `uplink-blocked.jsonl` and logs it (backoffice/server.py); a back office without
the route (404, 405: a plain tus server) is not asked again.

Shared by the box (transport/uplink_files.py) and the back office: one format, one parser.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Final

from common.faults import RemoteFault

BLOCKED_PATH: Final = "/uplink/blocked"
MAX_REPORT_BYTES: Final = 2048
MAX_REASON_CHARS: Final = 300
REPORT_FIELDS: Final = frozenset({"file_id", "recording_id", "reason", "at_ms"})
_HEX_ID: Final = re.compile(r"[0-9a-f]{32}")
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]{1,300}")


class BlockedReportRefused(ValueError, RemoteFault):
    """The body is not a blocked-file report (400)."""


@dataclass(frozen=True, slots=True)
class BlockedReport:
    """One blocked file: ids, why (printable ASCII, at most MAX_REASON_CHARS), and when by the
    box's wall clock (ms)."""

    file_id: str
    recording_id: str
    reason: str
    at_ms: int

    @classmethod
    def of(cls, file_id: str, recording_id: str, reason: str, at_ms: int) -> BlockedReport:
        """A report from the box's own values, the reason made printable and bounded."""
        printable = "".join(c if " " <= c <= "~" else "?" for c in reason)[:MAX_REASON_CHARS]
        return cls(file_id, recording_id, printable or "blocked", at_ms)

    def render(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def parse_report(body: bytes) -> BlockedReport:
    """Check a report's body; BlockedReportRefused says what is wrong."""
    if len(body) > MAX_REPORT_BYTES:
        raise BlockedReportRefused("report too large")
    try:
        raw: Any = json.loads(body)
    except ValueError as exc:
        raise BlockedReportRefused("report is not JSON") from exc
    if not isinstance(raw, dict) or set(raw) != REPORT_FIELDS:
        raise BlockedReportRefused(f"report must have exactly {sorted(REPORT_FIELDS)}")
    file_id, recording_id, reason, at_ms = (
        raw["file_id"],
        raw["recording_id"],
        raw["reason"],
        raw["at_ms"],
    )
    for name, value in (("file_id", file_id), ("recording_id", recording_id)):
        if not (isinstance(value, str) and _HEX_ID.fullmatch(value)):
            raise BlockedReportRefused(f"{name} must be 32 lower-case hex digits")
    if not (isinstance(reason, str) and _PRINTABLE.fullmatch(reason)):
        raise BlockedReportRefused("reason must be 1 to 300 printable ASCII characters")
    if not (isinstance(at_ms, int) and not isinstance(at_ms, bool)):
        raise BlockedReportRefused("at_ms must be an integer")
    return BlockedReport(file_id, recording_id, reason, at_ms)
