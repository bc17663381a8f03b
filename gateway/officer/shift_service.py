"""The shift's shell: `ShiftDesk` keeps the shift in `state_dir/shift.json` (tmp, fsync,
rename, fsync dir: a power cut leaves the old or the new shift, never a mix) and who held which
bodycam in the shift history (`shift_history_io.py`), audits `shift.started` / `shift.joined`
/ `shift.bodycams_changed` / `shift.resumed` / `shift.left` / `shift.ended`, and gives every
recording that starts during the shift its facts. The decisions are gateway/officer/shift.py's.

Personal data (docs/audit-custody.md 6): officer ids and bodycam serials are never written in
plaintext. The state file holds the start time, the number of officers and bodycams and the
shift sealed to the back office's recording keys (storage/sealed.py: the box cannot open it);
audit entries carry the officer id sealed afresh each time (`officer_id_sealed`); the history
holds sealed ids and keyed tags of the serials. The plain ids live only in this process's
memory, for the comparisons the desk makes and the recordings' encrypted facts. After a restart
the desk knows that a shift runs, not who works it: new recordings carry the sealed shift
(`shift_sealed`, opened by the back office), and the first officer who starts the shift again
resumes it (`shift.resumed`).

State file, version 3: `{"version": 3, "shift": null | {"since_ms": int, "officers": int,
"bodycams": int, "sealed": "<sealed 'shift': Shift.to_json()>"}}`. A version 2 file (one
officer, no `officers`) is read as one officer; a version 1 file (plain ids, written by older
boxes) is read once and written again as version 3 at load.

Order of writes on a change: the history with every holding closed, the shift file, the history
with the new shift's holdings opened, the audit entry. A power cut between any two leaves the
history naming nobody for the moments around the change (an import is then attributed to no
officer), never a holder the shift did not have.
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
from gateway.officer.shift import (
    Shift,
    ShiftStart,
    camera_officers,
    decide_end,
    decide_leave,
    decide_start,
    shift_view,
)
from gateway.officer.shift_history import Holding, after_change, bodycam_tag
from gateway.officer.shift_history_io import load_history, save_history
from storage.audit_io import AuditLog
from storage.envelope import RecipientPublicKey
from storage.sealed import is_sealed, label_of, seal

log = logging.getLogger(__name__)

SHIFT_FILE = "shift.json"
STATE_VERSION = 3
READABLE_VERSIONS = (2, 3)
SHIFT_LABEL = "shift"
OFFICER_LABEL = "officer_id"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SavedShift:
    """The shift as the state file holds it: no plain id, the rest sealed."""

    since_ms: int
    officers: int
    bodycams: int
    sealed: str


@dataclass(frozen=True, slots=True)
class Sealing:
    """What the desk seals with: the back office's recording keys, and the key bodycam tags
    are made with (gateway/officer/shift_history.py `tag_key`)."""

    recipients: tuple[RecipientPublicKey, ...]
    tag_key: bytes


class ShiftDesk:
    """The running shift, on disk (sealed) and in memory; the capture service asks it for
    facts."""

    def __init__(
        self,
        state_dir: Path,
        audit: AuditLog,
        reports: ReportDesk,
        sealing: Sealing,
        shift: Shift | None,
        saved: SavedShift | None,
    ) -> None:
        self.state_dir = state_dir
        self.path = state_dir / SHIFT_FILE
        self.audit = audit
        self.reports = reports
        self.sealing = sealing
        self.shift = shift
        self.saved = saved
        self.history: tuple[Holding, ...] = ()
        self._lock = asyncio.Lock()

    @property
    def recipients(self) -> tuple[RecipientPublicKey, ...]:
        return self.sealing.recipients

    @classmethod
    def load(
        cls, state_dir: Path, audit: AuditLog, reports: ReportDesk, sealing: Sealing
    ) -> ShiftDesk:
        """Read the shift and its history (small files, at start). An unreadable shift file
        means no shift: the officer starts it again; recordings meanwhile carry no officer id.
        A version 1 file is sealed and written again at once."""
        path = state_dir / SHIFT_FILE
        shift: Shift | None = None
        saved: SavedShift | None = None
        try:
            document = json.loads(path.read_bytes())
            if document.get("version") in READABLE_VERSIONS:
                saved = _saved_of(document["shift"])
                shift = None if saved is None else Shift((), saved.since_ms)
            else:
                shift = None if document["shift"] is None else Shift.from_json(document["shift"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s unreadable, no shift: %s", path, type(exc).__name__)
            shift, saved = None, None
        desk = cls(state_dir, audit, reports, sealing, shift, saved)
        desk.history = load_history(state_dir)
        if shift is not None and shift.known:
            desk.saved = desk._sealed(shift)
            atomic_write_bytes(path, desk._document())  # the plain ids leave the disk now
        return desk

    def officer_id(self) -> str | None:
        """The shift's officer when exactly one is known (the report book's default author);
        None without a shift, for a duo, or before a restarted shift is resumed."""
        shift = self.shift
        return (
            shift.members[0].officer_id if shift is not None and len(shift.members) == 1 else None
        )

    def recording_facts(self) -> dict[str, Any]:
        """R5: the facts every recording started now carries (inside its encryption): the
        shift's officers with their bodycams; after a restart, the sealed shift for the back
        office to open."""
        shift = self.shift
        facts: dict[str, Any] = {
            "shift_officers": [] if shift is None else [m.to_json() for m in shift.members],
        }
        if shift is not None and not shift.known and self.saved is not None:
            facts["shift_sealed"] = self.saved.sealed
        return facts

    def camera_facts(self, camera_serial: str) -> dict[str, Any]:
        """R5, per camera: a bodycam's footage names its officer, the dashcam's every officer."""
        return {"officer_ids": camera_officers(self.shift, camera_serial)}

    def view(self) -> dict[str, Any]:
        unknown = 0 if self.saved is None else self.saved.officers
        return shift_view(self.shift, len(self.reports.missing_ids()), unknown)

    def _sealed(self, shift: Shift) -> SavedShift:
        plain = json.dumps(shift.to_json(), sort_keys=True).encode()
        token = seal(plain, SHIFT_LABEL, self.recipients)
        bodycams = sum(len(m.bodycam_serials) for m in shift.members)
        return SavedShift(shift.since_ms, len(shift.members), bodycams, token)

    def _officer_id_sealed(self, officer_id: str | None) -> str:
        """An officer id sealed afresh for one audit entry (the shift's sealed state when this
        process does not know it)."""
        if officer_id is None:
            return "" if self.saved is None else self.saved.sealed
        return seal(officer_id.encode(), OFFICER_LABEL, self.recipients)

    def _document(self) -> bytes:
        saved = self.saved
        body = None
        if saved is not None:
            body = {
                "since_ms": saved.since_ms,
                "officers": saved.officers,
                "bodycams": saved.bodycams,
                "sealed": saved.sealed,
            }
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

    async def _close_holdings(self, now_ms: int) -> None:
        """Before a change: nobody holds a bodycam from `now_ms` on (durable)."""
        history = after_change(self.history, [], now_ms)
        await asyncio.to_thread(save_history, self.state_dir, history)
        self.history = history

    async def _open_holdings(self, shift: Shift | None, now_ms: int) -> None:
        """After a change: who holds which bodycam from `now_ms` on (durable)."""
        history = await asyncio.to_thread(self._after_change, shift, now_ms)
        await asyncio.to_thread(save_history, self.state_dir, history)
        self.history = history

    def _after_change(self, shift: Shift | None, now_ms: int) -> tuple[Holding, ...]:
        opened = [
            (bodycam_tag(self.sealing.tag_key, serial), self._officer_id_sealed(m.officer_id))
            for m in (() if shift is None else shift.members)
            for serial in m.bodycam_serials
        ]
        return after_change(self.history, opened, now_ms)

    async def start(self, identity: Identity, request: ShiftStart) -> dict[str, Any]:
        async with self._lock:
            now_ms = _wall_ms()
            change = decide_start(self.shift, request, now_ms)
            await self._close_holdings(now_ms)
            await self._save(change.shift)
            self.shift = change.shift
            await self._open_holdings(change.shift, now_ms)
            sealed = await asyncio.to_thread(self._officer_id_sealed, request.officer_id)
            await asyncio.to_thread(
                self.audit.append,
                change.event,
                officer_id_sealed=sealed,
                bodycams=len(request.bodycam_serials),
                officers=len(change.shift.members),
                channel=identity.channel,
            )
        return self.view()

    async def leave(self, identity: Identity, officer_id: str) -> dict[str, Any]:
        """One officer of a duo goes off duty; the other works the shift on."""
        async with self._lock:
            now_ms = _wall_ms()
            change = decide_leave(self.shift, identity, officer_id)
            await self._close_holdings(now_ms)
            await self._save(change.shift)
            self.shift = change.shift
            await self._open_holdings(change.shift, now_ms)
            sealed = await asyncio.to_thread(self._officer_id_sealed, officer_id)
            await asyncio.to_thread(
                self.audit.append,
                change.event,
                officer_id_sealed=sealed,
                officers=len(change.shift.members),
                by_admin=identity.officer_id != officer_id,
                channel=identity.channel,
            )
        return self.view()

    async def end(self, identity: Identity, acknowledge: bool) -> dict[str, Any]:
        async with self._lock:
            missing = self.reports.missing_ids()
            shift = decide_end(self.shift, identity, acknowledge, missing)
            sealed = [
                await asyncio.to_thread(self._officer_id_sealed, officer_id)
                for officer_id in (shift.officer_ids or (None,))
            ]
            await self._close_holdings(_wall_ms())
            await self._save(None)
            self.shift = None
            await self.reports.clear()
            await asyncio.to_thread(
                self.audit.append,
                "shift.ended",
                officer_id_sealed=sealed[0],
                partner_id_sealed=sealed[1] if len(sealed) > 1 else None,
                reports_missing=len(missing),
                acknowledged_missing=bool(missing),
                by_admin=identity.officer_id not in shift.officer_ids,
                channel=identity.channel,
            )
        return {**self.view(), "ended": True, "reports_missing_acknowledged": len(missing)}


def _saved_of(value: object) -> SavedShift | None:
    """A version 2 or 3 file's shift (ValueError when it is not one)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("not a saved shift")
    if set(value) == {"since_ms", "bodycams", "sealed"}:
        value = {**value, "officers": 1}  # version 2: one officer per shift
    if set(value) != {"since_ms", "officers", "bodycams", "sealed"}:
        raise ValueError("not a saved shift")
    since_ms, officers, bodycams = value["since_ms"], value["officers"], value["bodycams"]
    sealed = value["sealed"]
    numbers_ok = all(type(n) is int for n in (since_ms, officers, bodycams))
    if not numbers_ok or not is_sealed(sealed):
        raise ValueError("not a saved shift")
    if label_of(sealed) != SHIFT_LABEL:
        raise ValueError("the sealed value is not a shift")
    return SavedShift(since_ms, officers, bodycams, sealed)
