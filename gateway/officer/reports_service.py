"""The report book's shell: `ReportDesk` keeps the book in `state_dir/reports.json` (atomic
write) and files a report as an encrypted evidence file of its recording (storage/store.py
`write_report`), so only the back office can read it. The book's rules are
gateway/officer/reports.py's.

Invariants: two concurrent filings of one recording file one report, the other is refused
`already_filed`; a crash between sealing the report and saving the book leaves the recording
"missing": the officer files again, and the back office receives two reports, never none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.durable import atomic_write_bytes
from gateway.caller import RefusalKind, Refused
from gateway.officer.reports import (
    RECORDING_ID,
    TRIGGER_SOURCE_MAX_CHARS,
    BookFormatError,
    ReportBook,
    parse_report,
    report_metadata,
)
from storage.space import CardFullError
from storage.store import EvidenceStore

log = logging.getLogger(__name__)

REPORTS_FILE = "reports.json"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
        officer_id: Callable[[], str | None],
        book: ReportBook,
    ) -> None:
        self.path = state_dir / REPORTS_FILE
        self.store = store
        self.officer_id = officer_id
        self.book = book
        self._lock = asyncio.Lock()

    @classmethod
    def load(
        cls, state_dir: Path, store: EvidenceStore, officer_id: Callable[[], str | None]
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
        return cls(state_dir, store, officer_id, book)

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
        self, recording_id: str, body: Mapping[str, Any], officer_id: str
    ) -> dict[str, Any]:
        """File the report in `body`; refused `unknown_recording` (before the body is looked
        at), `invalid` (naming the member), `already_filed`, `card_full`."""
        if not self.knows(recording_id):
            raise _unknown_recording()
        report = parse_report(body)
        async with self._lock:
            entry = self.book.get(recording_id)
            if entry is None:
                raise _unknown_recording()
            if entry.reported:
                raise Refused(
                    RefusalKind.CONFLICT, "already_filed", "this recording already has its report"
                )
            filed_at_ms = _wall_ms()
            metadata = report_metadata(
                report,
                entry,
                officer_id=officer_id or self.officer_id(),
                filed_at_ms=filed_at_ms,
            )
            try:
                sealed = await asyncio.to_thread(self.store.write_report, recording_id, metadata)
            except CardFullError as exc:
                raise Refused(RefusalKind.CONFLICT, "card_full", "the memory card is full") from exc
            self.book.filed(recording_id, filed_at_ms)
            await self._save()
        return {
            "recording_id": recording_id,
            "filed_at_ms": filed_at_ms,
            "file_id": sealed.sidecar.file_id,
        }
