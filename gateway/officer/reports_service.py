"""The report book's shell: `ReportDesk` keeps the book in `state_dir/reports.json` (atomic
write) and files a report, a warning or a correction as an encrypted evidence file (storage/
store.py `write_report`), so only the back office can read it: a report and its corrections
under their recording's id, a warning under a fresh id of its own (an evidence "recording"
without media). The book's rules are gateway/officer/reports.py's, the fields'
reports_form.py's.

Invariants: two concurrent filings of one recording file one report, the other is refused
`already_filed`; a crash between sealing the report and saving the book leaves the recording
"missing": the officer files again, and the back office receives two reports, never none (the same
for a warning: registered twice, never lost). A correction is refused before the entry has its
first report (`not_filed`); the first report is never touched. Each filing is audited
`report.filed` with its kind (`report`, `warning`, `correction`), ids, the caller's channel and who
(`by`: "local", or the account's tag, never a login name), after the sealed file and the book are
durable: the chain registers every report and warning without anyone decrypting (Borsele 3.2.1),
and holds nothing the officer wrote.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.durable import atomic_write_bytes
from gateway.caller import Identity, RefusalKind, Refused, audit_name
from gateway.officer.reports import (
    MAX_CORRECTIONS,
    RECORDING_ID,
    TRIGGER_SOURCE_MAX_CHARS,
    BookEntry,
    BookFormatError,
    ReportBook,
    entry_metadata,
)
from gateway.officer.reports_form import (
    ReportRules,
    parse_correction,
    parse_report,
    parse_warning,
)
from storage.audit_io import AuditLog
from storage.space import CardFullError
from storage.store import EvidenceStore

log = logging.getLogger(__name__)

REPORTS_FILE = "reports.json"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _card_full() -> Refused:
    return Refused(RefusalKind.CONFLICT, "card_full", "the memory card is full")


def _unknown_recording() -> Refused:
    return Refused(
        RefusalKind.NOT_FOUND, "unknown_recording", "no recording of this shift has that id"
    )


class ReportDesk:
    """The book on disk and the filing of reports. Runs on the event loop; disk work goes to
    a thread. `officer_id()` names the officer of the running shift (None without one)."""

    def __init__(
        self,
        state_dir: Path,
        store: EvidenceStore,
        audit: AuditLog,
        officer_id: Callable[[], str | None],
        book: ReportBook,
    ) -> None:
        self.path = state_dir / REPORTS_FILE
        self.store = store
        self.audit = audit
        self.officer_id = officer_id
        self.book = book
        self._lock = asyncio.Lock()

    @classmethod
    def load(
        cls,
        state_dir: Path,
        store: EvidenceStore,
        audit: AuditLog,
        officer_id: Callable[[], str | None],
    ) -> ReportDesk:
        """Read the book (a small file, at start). An unreadable book starts empty and says so:
        the officer may be asked for fewer reports, but nothing stops recording."""
        path = state_dir / REPORTS_FILE
        try:
            book = ReportBook.from_json(path.read_bytes())
        except FileNotFoundError:
            book = ReportBook()
        except (OSError, BookFormatError) as exc:
            log.warning("%s unreadable, starting an empty report book: %s", path, exc)
            book = ReportBook()
        interrupted = book.close_interrupted()  # no recording runs before the recorder starts
        if interrupted:
            log.info(
                "%d recording(s) in the report book ended with the box's last run", interrupted
            )
        return cls(state_dir, store, audit, officer_id, book)

    async def _save(self) -> None:
        data = self.book.to_json()
        await asyncio.to_thread(atomic_write_bytes, self.path, data)

    async def note_started(self, recording_id: str, facts: Mapping[str, Any]) -> None:
        trigger = facts.get("trigger")
        trigger = trigger if isinstance(trigger, Mapping) else {}
        at_ms = trigger.get("at_ms")
        started_at_ms = at_ms if type(at_ms) is int else _wall_ms()  # not a bool
        source = str(trigger.get("source", ""))[:TRIGGER_SOURCE_MAX_CHARS]
        async with self._lock:
            self.book.started(recording_id, started_at_ms, source)
            await self._save()

    async def note_finished(self, recording_id: str, duration_s: float) -> None:
        async with self._lock:
            self.book.finished(recording_id, duration_s)
            await self._save()

    async def clear(self) -> None:
        """The shift ended: its recordings are done with (reported, or acknowledged)."""
        async with self._lock:
            self.book.clear()
            await self._save()

    def missing_ids(self) -> list[str]:
        return [e.recording_id for e in self.book.missing()]

    def view(self) -> dict[str, Any]:
        """GET /api/reports."""
        return {
            "missing": [e.view() for e in self.book.missing()],
            "filed": [e.view() for e in self.book.reported()],
        }

    def knows(self, recording_id: str) -> bool:
        """Whether a recording of this shift has that id (a report may be filed for it)."""
        return RECORDING_ID.fullmatch(recording_id) is not None and (
            self.book.get(recording_id) is not None
        )

    async def file(
        self,
        recording_id: str,
        body: Mapping[str, Any],
        caller: Identity,
        rules: ReportRules | None = None,
    ) -> dict[str, Any]:
        """File the report in `body`; refused `unknown_recording` (before the body is looked
        at), `invalid` (naming the member), `already_filed`, `card_full`."""
        if not self.knows(recording_id):
            raise _unknown_recording()
        report = parse_report(body, rules)
        async with self._lock:
            entry = self.book.get(recording_id)
            if entry is None:
                raise _unknown_recording()
            if entry.reported:
                raise Refused(
                    RefusalKind.CONFLICT, "already_filed", "this recording already has its report"
                )
            if entry.kind != "recording":  # a warning is reported when registered
                raise _unknown_recording()
            filed_at_ms = _wall_ms()
            metadata = entry_metadata(
                entry,
                report.fields(),
                officer_id=caller.officer_id or self.officer_id(),
                filed_at_ms=filed_at_ms,
            )
            file_id = await self._seal(recording_id, metadata)
            self.book.filed(recording_id, filed_at_ms, file_id)
            await self._save()
        await self._audit("report", recording_id, file_id, caller)
        return {"recording_id": recording_id, "filed_at_ms": filed_at_ms, "file_id": file_id}

    async def register_warning(
        self,
        body: Mapping[str, Any],
        caller: Identity,
        rules: ReportRules | None,
        place: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Register a warning given without a recording (RULES R7): sealed at once under a fresh
        id with the box's time and `place` (the GPS facts of this moment: `{"gps_status",
        "position"}`). Refused `invalid` (naming the member), `card_full`."""
        warning = parse_warning(body, rules)
        async with self._lock:
            warning_id = secrets.token_hex(16)
            at_ms = _wall_ms()
            entry = BookEntry(warning_id, at_ms, "", None, at_ms, "warning")
            metadata = entry_metadata(
                entry,
                {**warning.fields(), **place},
                officer_id=caller.officer_id or self.officer_id(),
                filed_at_ms=at_ms,
            )
            file_id = await self._seal(warning_id, metadata)
            self.book.warned(warning_id, at_ms, file_id)
            await self._save()
        await self._audit("warning", warning_id, file_id, caller)
        position_known = place.get("position") is not None
        return {
            "recording_id": warning_id,
            "at_ms": at_ms,
            "file_id": file_id,
            "position_known": position_known,
        }

    async def correct(
        self,
        recording_id: str,
        body: Mapping[str, Any],
        caller: Identity,
        rules: ReportRules | None = None,
    ) -> dict[str, Any]:
        """File a correction of an entry's report or warning: a later sealed file linked to the
        first, which stays. Refused `unknown_recording`, `not_filed` (no first report yet: file
        it instead), `invalid`, `too_many_corrections`, `card_full`."""
        if not self.knows(recording_id):
            raise _unknown_recording()
        async with self._lock:
            entry = self.book.get(recording_id)
            if entry is None:
                raise _unknown_recording()
            if not entry.reported:
                raise Refused(
                    RefusalKind.CONFLICT, "not_filed", "this recording has no report to correct"
                )
            reason, corrected = parse_correction(body, entry.kind, rules)
            if entry.corrections >= MAX_CORRECTIONS:
                raise Refused(
                    RefusalKind.CONFLICT, "too_many_corrections", "no more corrections possible"
                )
            filed_at_ms = _wall_ms()
            link = {
                "corrects_file_id": entry.report_file_id,
                "correction_no": entry.corrections + 1,
                "correction_reason": reason,
            }
            metadata = entry_metadata(
                entry,
                corrected.fields(),
                officer_id=caller.officer_id or self.officer_id(),
                filed_at_ms=filed_at_ms,
                correction=link,
            )
            file_id = await self._seal(recording_id, metadata)
            self.book.corrected(recording_id)
            await self._save()
        await self._audit("correction", recording_id, file_id, caller)
        return {
            "recording_id": recording_id,
            "filed_at_ms": filed_at_ms,
            "file_id": file_id,
            "corrects_file_id": entry.report_file_id,
            "correction_no": entry.corrections + 1,
        }

    async def _audit(self, kind: str, recording_id: str, file_id: str, caller: Identity) -> None:
        await asyncio.to_thread(
            self.audit.append,
            "report.filed",
            kind=kind,
            recording_id=recording_id,
            file_id=file_id,
            channel=caller.channel,
            by=audit_name(caller),
        )

    async def _seal(self, recording_id: str, metadata: dict[str, Any]) -> str:
        try:
            sealed = await asyncio.to_thread(self.store.write_report, recording_id, metadata)
        except CardFullError as exc:
            raise _card_full() from exc
        return sealed.sidecar.file_id
