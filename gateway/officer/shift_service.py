"""The shift's shell: `ShiftDesk` keeps the shift in `state_dir/shift.json` (tmp, fsync,
rename, fsync dir: a power cut leaves the old or the new shift, never a mix), audits
`shift.started` / `shift.bodycams_changed` / `shift.ended`, and gives every recording that
starts during the shift its facts: `officer_id` and `bodycam_serials` (inside the encryption,
next to device serial and vehicle id). The decisions are gateway/officer/shift.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from common.durable import atomic_write_bytes
from gateway.caller import Identity
from gateway.officer.reports_service import ReportDesk
from gateway.officer.shift import Shift, ShiftStart, decide_end, decide_start, shift_view
from storage.audit_io import AuditLog

log = logging.getLogger(__name__)

SHIFT_FILE = "shift.json"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ShiftDesk:
    """The running shift, on disk and in memory; the capture service asks it for facts."""

    def __init__(
        self, state_dir: Path, audit: AuditLog, reports: ReportDesk, shift: Shift | None
    ) -> None:
        self.path = state_dir / SHIFT_FILE
        self.audit = audit
        self.reports = reports
        self.shift = shift
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, state_dir: Path, audit: AuditLog, reports: ReportDesk) -> ShiftDesk:
        """Read the shift (a small file, at start). An unreadable file means no shift: the
        officer starts it again; recordings meanwhile carry no officer id."""
        path = state_dir / SHIFT_FILE
        try:
            document = json.loads(path.read_bytes())
            shift = None if document["shift"] is None else Shift.from_json(document["shift"])
        except FileNotFoundError:
            shift = None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s unreadable, no shift: %s", path, type(exc).__name__)
            shift = None
        return cls(state_dir, audit, reports, shift)

    def officer_id(self) -> str | None:
        return None if self.shift is None else self.shift.officer_id

    def recording_facts(self) -> dict[str, Any]:
        """R5: the facts every recording started now carries."""
        shift = self.shift
        return {
            "officer_id": None if shift is None else shift.officer_id,
            "bodycam_serials": [] if shift is None else list(shift.bodycam_serials),
        }

    def view(self) -> dict[str, Any]:
        return shift_view(self.shift, len(self.reports.missing_ids()))

    async def _save(self, shift: Shift | None) -> None:
        document = {"version": 1, "shift": None if shift is None else shift.to_json()}
        data = json.dumps(document, sort_keys=True).encode()
        await asyncio.to_thread(atomic_write_bytes, self.path, data)

    async def start(self, identity: Identity, request: ShiftStart) -> dict[str, Any]:
        async with self._lock:
            before = self.shift
            shift = decide_start(before, request, _wall_ms())
            await self._save(shift)
            self.shift = shift
            event = "shift.started" if before is None else "shift.bodycams_changed"
            await asyncio.to_thread(
                self.audit.append,
                event,
                officer_id=shift.officer_id,
                bodycams=len(shift.bodycam_serials),
                channel=identity.channel,
            )
        return self.view()

    async def end(self, identity: Identity, acknowledge: bool) -> dict[str, Any]:
        async with self._lock:
            missing = self.reports.missing_ids()
            shift = decide_end(self.shift, identity, acknowledge, missing)
            await self._save(None)
            self.shift = None
            await self.reports.clear()
            await asyncio.to_thread(
                self.audit.append,
                "shift.ended",
                officer_id=shift.officer_id,
                reports_missing=len(missing),
                acknowledged_missing=bool(missing),
                by_admin=identity.officer_id != shift.officer_id,
                channel=identity.channel,
            )
        return {**self.view(), "ended": True, "reports_missing_acknowledged": len(missing)}
