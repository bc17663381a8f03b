"""The shift's shell: `ShiftDesk` keeps the shift in `state_dir/shift.json` (tmp, fsync,
rename, fsync dir: a power cut leaves the old or the new shift, never a mix), audits
`shift.started` / `shift.bodycams_changed` / `shift.resumed` / `shift.ended`, and gives every
recording that starts during the shift its facts. The decisions are gateway/officer/shift.py's.

Personal data (docs/audit-custody.md 6): the officer id and the bodycam serials are never
written in plaintext. The state file holds the start time, the number of bodycams and the
shift sealed to the back office's recording keys (storage/sealed.py: the box cannot open it);
audit entries carry the officer id sealed afresh each time (`officer_id_sealed`). The plain id
lives only in this process's memory, for the comparisons the desk makes and the recordings'
encrypted facts. After a restart the desk knows that a shift runs, not who works it: new
recordings carry the sealed shift (`shift_sealed`, opened by the back office), and the first
officer who starts the shift again resumes it (`shift.resumed`).

State file, version 2: `{"version": 2, "shift": null | {"since_ms": int, "bodycams": int,
"sealed": "<sealed 'shift': {"officer_id", "bodycam_serials"}>"}}`. A version 1 file (plain
ids, written by older boxes) is read once and written again as version 2 at load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.durable import atomic_write_bytes
from gateway.caller import Identity
from gateway.officer.reports_service import ReportDesk
from gateway.officer.shift import Shift, ShiftStart, decide_end, decide_start, shift_view
from storage.audit_io import AuditLog
from storage.envelope import RecipientPublicKey
from storage.sealed import is_sealed, label_of, seal

log = logging.getLogger(__name__)

SHIFT_FILE = "shift.json"
STATE_VERSION = 2
SHIFT_LABEL = "shift"
OFFICER_LABEL = "officer_id"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SavedShift:
    """The shift as the state file holds it: no plain id, the rest sealed."""

    since_ms: int
    bodycams: int
    sealed: str


class ShiftDesk:
    """The running shift, on disk (sealed) and in memory; the capture service asks it for
    facts."""

    def __init__(
        self,
        state_dir: Path,
        audit: AuditLog,
        reports: ReportDesk,
        recipients: tuple[RecipientPublicKey, ...],
        shift: Shift | None,
        saved: SavedShift | None,
    ) -> None:
        self.path = state_dir / SHIFT_FILE
        self.audit = audit
        self.reports = reports
        self.recipients = recipients
        self.shift = shift
        self.saved = saved
        self._lock = asyncio.Lock()

    @classmethod
    def load(
        cls,
        state_dir: Path,
        audit: AuditLog,
        reports: ReportDesk,
        recipients: tuple[RecipientPublicKey, ...],
    ) -> ShiftDesk:
        """Read the shift (a small file, at start). An unreadable file means no shift: the
        officer starts it again; recordings meanwhile carry no officer id. A version 1 file
        is sealed and written again at once."""
        path = state_dir / SHIFT_FILE
        shift: Shift | None = None
        saved: SavedShift | None = None
        try:
            document = json.loads(path.read_bytes())
            if document.get("version") == STATE_VERSION:
                saved = _saved_of(document["shift"])
                shift = None if saved is None else Shift(None, (), saved.since_ms)
            else:
                shift = None if document["shift"] is None else Shift.from_json(document["shift"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s unreadable, no shift: %s", path, type(exc).__name__)
            shift, saved = None, None
        desk = cls(state_dir, audit, reports, recipients, shift, saved)
        if shift is not None and shift.known:
            desk.saved = desk._sealed(shift)
            atomic_write_bytes(path, desk._document())  # the plain ids leave the disk now
        return desk

    def officer_id(self) -> str | None:
        return None if self.shift is None else self.shift.officer_id

    def recording_facts(self) -> dict[str, Any]:
        """R5: the facts every recording started now carries (inside its encryption); after a
        restart, the sealed shift for the back office to open."""
        shift = self.shift
        facts: dict[str, Any] = {
            "officer_id": None if shift is None else shift.officer_id,
            "bodycam_serials": [] if shift is None else list(shift.bodycam_serials),
        }
        if shift is not None and not shift.known and self.saved is not None:
            facts["shift_sealed"] = self.saved.sealed
        return facts

    def view(self) -> dict[str, Any]:
        return shift_view(self.shift, len(self.reports.missing_ids()))

    def _sealed(self, shift: Shift) -> SavedShift:
        plain = json.dumps(shift.to_json(), sort_keys=True).encode()
        token = seal(plain, SHIFT_LABEL, self.recipients)
        return SavedShift(shift.since_ms, len(shift.bodycam_serials), token)

    def _officer_id_sealed(self, shift: Shift) -> str:
        """The officer id sealed afresh for one audit entry (the shift's sealed state when this
        process does not know it)."""
        if shift.officer_id is None:
            return "" if self.saved is None else self.saved.sealed
        return seal(shift.officer_id.encode(), OFFICER_LABEL, self.recipients)

    def _document(self) -> bytes:
        saved = self.saved
        body = None
        if saved is not None:
            body = {"since_ms": saved.since_ms, "bodycams": saved.bodycams, "sealed": saved.sealed}
        return json.dumps({"version": STATE_VERSION, "shift": body}, sort_keys=True).encode()

    async def _save(self, shift: Shift | None) -> None:
        saved = None if shift is None else await asyncio.to_thread(self._sealed, shift)
        before = self.saved
        self.saved = saved
        try:
            await asyncio.to_thread(atomic_write_bytes, self.path, self._document())
        except BaseException:
            self.saved = before
            raise

    async def start(self, identity: Identity, request: ShiftStart) -> dict[str, Any]:
        async with self._lock:
            before = self.shift
            shift = decide_start(before, request, _wall_ms())
            await self._save(shift)
            self.shift = shift
            if before is None:
                event = "shift.started"
            elif not before.known:
                event = "shift.resumed"
            else:
                event = "shift.bodycams_changed"
            sealed = await asyncio.to_thread(self._officer_id_sealed, shift)
            await asyncio.to_thread(
                self.audit.append,
                event,
                officer_id_sealed=sealed,
                bodycams=len(shift.bodycam_serials),
                channel=identity.channel,
            )
        return self.view()

    async def end(self, identity: Identity, acknowledge: bool) -> dict[str, Any]:
        async with self._lock:
            missing = self.reports.missing_ids()
            shift = decide_end(self.shift, identity, acknowledge, missing)
            sealed = await asyncio.to_thread(self._officer_id_sealed, shift)
            await self._save(None)
            self.shift = None
            await self.reports.clear()
            await asyncio.to_thread(
                self.audit.append,
                "shift.ended",
                officer_id_sealed=sealed,
                reports_missing=len(missing),
                acknowledged_missing=bool(missing),
                by_admin=identity.officer_id != shift.officer_id,
                channel=identity.channel,
            )
        return {**self.view(), "ended": True, "reports_missing_acknowledged": len(missing)}


def _saved_of(value: object) -> SavedShift | None:
    """A version 2 file's shift (ValueError when it is not one)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"since_ms", "bodycams", "sealed"}:
        raise ValueError("not a saved shift")
    since_ms, bodycams, sealed = value["since_ms"], value["bodycams"], value["sealed"]
    if type(since_ms) is not int or type(bodycams) is not int or not is_sealed(sealed):
        raise ValueError("not a saved shift")
    if label_of(sealed) != SHIFT_LABEL:
        raise ValueError("the sealed value is not a shift")
    return SavedShift(since_ms, bodycams, sealed)
