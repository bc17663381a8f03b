"""The back office's incidents: what a person must look at, one fsynced JSONL line each.

Beside the uploads (`incidents.jsonl`), next to the boxes' own reports of blocked files
(`uplink-blocked.jsonl`, backoffice/blocked_log.py). Each line is one incident: `kind`, the
`client_id` of the box whose request caused it, `at` (ISO 8601 UTC) and the ids that locate it
(upload id, file id, the owner of a file id). Every incident is also an ERROR log line, so log
alerting sees it at once and the file keeps it for whoever reviews later
(docs/deploy-backoffice.md, What to monitor).

Kinds:
- `file_id_claimed`: a box created an upload naming a file id another box owns (refused, 409;
  backoffice/file_claims.py). A paired box does not do that by mistake: its file ids are its
  own. Either a box is misbehaving or its certificate is in someone else's hands.
- `sha256_mismatch`, `file_id_conflict`: a finished upload was kept under `corrupt/`
  (backoffice/upload_store.py Incident).

Invariants: only ids, hashes and sizes are written (never metadata values or bodies); a line is
durable when `append` returns (common/durable.py append_line); a torn last line is skipped by
`entries`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from common.durable import append_line

log = logging.getLogger(__name__)

INCIDENTS_FILE: Final = "incidents.jsonl"
FILE_ID_CLAIMED: Final = "file_id_claimed"


class IncidentLog:
    """Appends incidents to `path`; `entries()` reads them back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, kind: str, client_id: str, **ids: str | int | None) -> None:
        """Record one incident (blocking: an fsync; incidents are rare)."""
        entry: dict[str, Any] = {
            "kind": kind,
            "client_id": client_id,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            **ids,
        }
        append_line(self.path, (json.dumps(entry, sort_keys=True) + "\n").encode(), mode=0o600)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")[:-1]  # a line without its newline: torn
        return [json.loads(line) for line in lines]
