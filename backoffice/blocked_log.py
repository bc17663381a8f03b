"""The files boxes blocked for integrity, as they reported them (`POST /uplink/blocked`,
transport/blocked_report.py): one fsynced JSONL line each, with the box id from the client
certificate, beside the uploads. Each one needs a person, like an `integrity incident`
(docs/deploy-backoffice.md, What to monitor)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from common.durable import append_line
from transport.blocked_report import BlockedReport

log = logging.getLogger(__name__)

BLOCKED_FILE: Final = "uplink-blocked.jsonl"


class BlockedLog:
    """Appends reports to `path`; `entries()` reads them back (a torn last line is skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, box_id: str, report: BlockedReport) -> None:
        entry = {"box_id": box_id, **asdict(report)}
        append_line(self.path, (json.dumps(entry, sort_keys=True) + "\n").encode())
        log.warning(
            "box reported a blocked upload client_id=%s file_id=%s recording_id=%s reason=%s",
            box_id,
            report.file_id,
            report.recording_id,
            json.dumps(report.reason),  # quoted: it is the box's text, on one line
        )

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")[:-1]  # a line without its newline: torn
        return [json.loads(line) for line in lines]
