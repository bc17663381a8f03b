"""Holds on the running box (RULES S4): the admin's commands and the fleet's documents.

The book and its rules are storage/holds.py; the store keeps it on the card and copies it into
the catalog (storage/store.py `change_holds`). Here, the shell for the box's callers:

- `hold` / `release`: an admin on the loopback channel (`mvb hold`) or an admin account on the
  web channel (anyone else: Refused `forbidden`). Audited as `hold.set` / `hold.released` with
  the channel and who (`audit_name`: never a login name). The reason the admin types may be
  personal (a complainant's name): it is never logged, audited or kept in plaintext; it is sealed
  as an encrypted note file of the recording (`EvidenceStore.write_hold_note`), which only the
  back office can read and which reaches it with the recording. When the card cannot take the
  note, the hold is still set and the answer says that the reason was not kept.
- `fleet_named` / `fleet_applied`: the holds of a signed fleet document (gateway/fleet_apply.py
  calls them): named holds hold at once, releases wait until the document is applied.
- `held_ids` for the faces: a hold shows as a flag, never with its reason or ground.

One change at a time (an asyncio lock); card work runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.caller import Identity, RefusalKind, Refused, audit_name
from gateway.officer.reports import text_member
from storage.audit_io import AuditLog
from storage.holds import RECORDING_ID, HoldBook, LocalHold
from storage.models import FileRecord, FileState
from storage.space import CardFullError
from storage.store import EvidenceStore

REASON_MAX_CHARS = 1000
HOLD_MEMBERS = frozenset({"reason"})


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _unknown() -> Refused:
    return Refused(
        RefusalKind.NOT_FOUND, "unknown_recording", "no recording on the card has that id"
    )


def parse_hold_body(body: Mapping[str, Any]) -> str:
    """The reason in `{"reason": TEXT}` (1 to REASON_MAX_CHARS characters); Refused `invalid`
    naming the member at fault."""
    unknown = sorted(set(body) - HOLD_MEMBERS)
    if unknown:
        name = unknown[0][:64]
        raise Refused(RefusalKind.INVALID, "invalid", f"unknown member {name!r}", field=name)
    return text_member(body, "reason", REASON_MAX_CHARS)


class HoldDesk:
    """The box's holds, as its callers see them."""

    def __init__(
        self, store: EvidenceStore, audit: AuditLog, clock_ms: Callable[[], int] = _wall_ms
    ) -> None:
        self.store = store
        self.audit = audit
        self.clock_ms = clock_ms
        self._lock = asyncio.Lock()

    def held_ids(self) -> frozenset[str]:
        """The recordings held now (memory only: cheap enough for every status build)."""
        return self.store.holds.held()

    async def hold(
        self, caller: Identity, recording_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Hold every file of the recording, now and later; refused `forbidden`,
        `unknown_recording`, `invalid` (the reason), `recording_deleted`, `already_held`."""
        _require_admin(caller)
        files = await self._files_on_card(recording_id)
        reason = parse_hold_body(body)
        async with self._lock:
            if recording_id in self.store.holds.local:
                message = "the recording is already held on this box"
                raise Refused(RefusalKind.CONFLICT, "already_held", message)
            since_ms = self.clock_ms()
            hold = LocalHold(since_ms, caller.channel, audit_name(caller))
            await self._change(lambda book: book.with_local(recording_id, hold))
            note_file_id = await self._seal_reason(caller, recording_id, reason, since_ms)
            if note_file_id is not None:
                noted = LocalHold(since_ms, hold.channel, hold.by, note_file_id)
                await self._change(lambda book: book.with_local(recording_id, noted))
            await asyncio.to_thread(
                self.audit.append,
                "hold.set",
                recording_id=recording_id,
                source="local",
                channel=caller.channel,
                by=hold.by,
                files=len(files),
                note_file_id=note_file_id,
            )
        return {
            **self._view_of(
                recording_id, self.store.holds, len(files) + (note_file_id is not None)
            ),
            "reason_sealed": note_file_id is not None,
            "note_file_id": note_file_id,
        }

    async def release(self, caller: Identity, recording_id: str) -> dict[str, Any]:
        """Release the box's own hold; refused `forbidden`, `unknown_recording`, `not_held`,
        `held_by_fleet` (only a fleet document releases what the fleet holds)."""
        _require_admin(caller)
        if RECORDING_ID.fullmatch(recording_id) is None:
            raise _unknown()
        async with self._lock:
            book = self.store.holds
            if recording_id not in book.local:
                if recording_id in book.fleet:
                    message = "the fleet holds this recording: only a fleet document releases it"
                    raise Refused(RefusalKind.CONFLICT, "held_by_fleet", message)
                raise Refused(RefusalKind.CONFLICT, "not_held", "the recording is not held")
            after = await self._change(lambda current: current.without_local(recording_id))
            files = await asyncio.to_thread(self.store.recording_files, recording_id)
            await asyncio.to_thread(
                self.audit.append,
                "hold.released",
                recording_id=recording_id,
                source="local",
                channel=caller.channel,
                by=audit_name(caller),
                still_held=after.is_held(recording_id),
            )
        return self._view_of(recording_id, after, _count_on_card(files))

    async def view(self, caller: Identity) -> dict[str, Any]:
        """Every hold with who holds it (local, fleet), since when and the fleet's ground code;
        admins only (`forbidden`). Never a reason: only the back office can read those."""
        _require_admin(caller)
        book = self.store.holds
        counts = await asyncio.to_thread(self._counts, sorted(book.held()))
        return {"holds": [self._view_of(rid, book, counts[rid]) for rid in sorted(book.held())]}

    # -- the fleet (gateway/fleet_apply.py) ------------------------------------------------------

    async def fleet_named(self, config_serial: int, grounds: Mapping[str, str]) -> None:
        """A verified, valid fleet document names these holds: hold them now."""
        async with self._lock:
            before = self.store.holds
            after = await self._change(lambda book: book.with_fleet_named(config_serial, grounds))
            await self._audit_fleet(before, after, config_serial)

    async def fleet_applied(self, config_serial: int, grounds: Mapping[str, str]) -> None:
        """The document is applied: the fleet holds exactly what it names."""
        async with self._lock:
            before = self.store.holds
            after = await self._change(lambda book: book.with_fleet_applied(config_serial, grounds))
            await self._audit_fleet(before, after, config_serial)

    async def _audit_fleet(self, before: HoldBook, after: HoldBook, config_serial: int) -> None:
        for recording_id in sorted(set(after.fleet) - set(before.fleet)):
            await asyncio.to_thread(
                self.audit.append,
                "hold.set",
                recording_id=recording_id,
                source="fleet",
                config_serial=config_serial,
                ground=after.fleet[recording_id].ground,
            )
        for recording_id in sorted(set(before.fleet) - set(after.fleet)):
            await asyncio.to_thread(
                self.audit.append,
                "hold.released",
                recording_id=recording_id,
                source="fleet",
                config_serial=config_serial,
                still_held=after.is_held(recording_id),
            )

    # -- internals -------------------------------------------------------------------------------

    async def _change(self, change: Callable[[HoldBook], HoldBook]) -> HoldBook:
        _, after = await asyncio.to_thread(self.store.change_holds, change)
        return after

    async def _files_on_card(self, recording_id: str) -> list[FileRecord]:
        if RECORDING_ID.fullmatch(recording_id) is None:
            raise _unknown()
        files = await asyncio.to_thread(self.store.recording_files, recording_id)
        if not files:
            raise _unknown()
        on_card = [f for f in files if f.state is not FileState.DELETED]
        if not on_card:
            message = "every file of the recording is already deleted from the card"
            raise Refused(RefusalKind.CONFLICT, "recording_deleted", message)
        return on_card

    async def _seal_reason(
        self, caller: Identity, recording_id: str, reason: str, since_ms: int
    ) -> str | None:
        note = {
            "recording_id": recording_id,
            "reason": reason,
            "held_at_ms": since_ms,
            "channel": caller.channel,
            "by": audit_name(caller),
            "officer_id": caller.officer_id or None,
        }
        try:
            sealed = await asyncio.to_thread(self.store.write_hold_note, recording_id, note)
        except CardFullError:
            return None  # the hold stands; the answer says the reason was not kept
        return sealed.sidecar.file_id

    def _counts(self, recording_ids: list[str]) -> dict[str, int]:
        return {rid: _count_on_card(self.store.recording_files(rid)) for rid in recording_ids}

    @staticmethod
    def _view_of(recording_id: str, book: HoldBook, files_on_card: int) -> dict[str, Any]:
        local, fleet = book.local.get(recording_id), book.fleet.get(recording_id)
        return {
            "recording_id": recording_id,
            "held": book.is_held(recording_id),
            "sources": list(book.sources(recording_id)),
            "since_ms": None if local is None else local.since_ms,
            "ground": None if fleet is None else fleet.ground,
            "files_on_card": files_on_card,
        }


def _require_admin(caller: Identity) -> None:
    if caller.role != "admin":
        message = "only an admin may hold or release a recording"
        raise Refused(RefusalKind.FORBIDDEN, "forbidden", message)


def _count_on_card(files: list[FileRecord]) -> int:
    return sum(1 for f in files if f.state is not FileState.DELETED)
