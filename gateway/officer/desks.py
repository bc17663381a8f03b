"""The officer's shift and report book of one running box, as one recording observer.

The capture service (gateway/capture/service.py) calls it at every recording's start and end
and asks it for the shift's facts (RULES R5); the port's adapter (gateway/box_port.py) hands its
commands to the two desks. Both desks read their small files once, when the box starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.officer.reports_service import ReportDesk
from gateway.officer.shift_service import Sealing, ShiftDesk
from storage.audit_io import AuditLog
from storage.envelope import recipient_set
from storage.store import EvidenceStore


class OfficerDesks:
    """A RecordingObserver of the capture service: the shift gives every recording its facts,
    the report book notes every recording that needs a report."""

    def __init__(
        self, state_dir: Path, store: EvidenceStore, audit: AuditLog, tag_key: bytes
    ) -> None:
        """`tag_key`: what bodycam serials are tagged with in the shift history
        (gateway/officer/shift_history.py `tag_key`, from the device key)."""
        self.reports = ReportDesk.load(state_dir, store, audit, self._officer_id)
        recipients = recipient_set(store.recipients).keys  # each opens a sealed id alone
        sealing = Sealing(recipients, tag_key)
        self.shift = ShiftDesk.load(state_dir, audit, self.reports, sealing)

    def _officer_id(self) -> str | None:
        return self.shift.officer_id()

    def recording_facts(self) -> Mapping[str, Any]:
        return self.shift.recording_facts()

    def camera_facts(self, camera_serial: str) -> Mapping[str, Any]:
        return self.shift.camera_facts(camera_serial)

    async def recording_started(self, recording_id: str, facts: Mapping[str, Any]) -> None:
        await self.reports.note_started(recording_id, facts)

    async def recording_finished(self, recording_id: str, duration_s: float) -> None:
        await self.reports.note_finished(recording_id, duration_s)
