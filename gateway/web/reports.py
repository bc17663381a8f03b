"""The officer's reports (RULES R4, H2O art. 3; docs/webui.md section 4).

Pure core: `ReportBook` (which recordings need a report, which have one; no report text ever)
and `parse_report` (a request body -> a valid Report, or 422 naming the field). Shell:
`ReportDesk` keeps the book in `state_dir/reports.json` (atomic write) and files a report as an
encrypted evidence file of its recording (storage/store.py `write_report`), so only the back
office can read it; `routes` serves GET /api/reports and PUT /api/reports/{recording_id}.

Invariants:
- the book holds the recordings since the last end of a shift, in order of start, with their
  start time, trigger source and duration, and whether a report was filed: ids, times and
  sources only, never what the officer wrote (that exists only inside the encrypted file);
- a report is filed at most once per recording (evidence is never altered: a correction is a
  later report); two concurrent PUTs of one recording file one report, the other gets 409;
- a crash between sealing the report and saving the book leaves the recording "missing": the
  officer files again, and the back office receives two reports, never none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from common.durable import atomic_write_bytes
from gateway.web.identity import identity_of
from gateway.web.jsonbody import (
    ApiError,
    error_response,
    invalid,
    read_json_object,
    reject_unknown,
)
from storage.space import CardFullError
from storage.store import EvidenceStore

log = logging.getLogger(__name__)

REPORTS_FILE = "reports.json"
RECORDING_ID = re.compile(r"[0-9a-f]{32}")
WHAT_MAX_CHARS = 4000
REASON_MAX_CHARS = 1000
MAX_BOOK_ENTRIES = 512  # far above a shift's recordings; bounds the file whatever happens
TRIGGER_SOURCE_MAX_CHARS = 32
# Text the officer types may hold line breaks and tabs; other control characters are refused,
# and it must hold something besides blanks. Both sets are spelled out (not str.strip / \s)
# so docs/api.yaml's pattern means the same in every regex dialect a client may use.
_BLANKS = "\t\n\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTENT = re.compile(f"[^{_BLANKS}\x00-\x1f\x7f]")


# -- the book (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One recording that needs a report. `duration_s` is None while it runs."""

    recording_id: str
    started_at_ms: int
    trigger_source: str
    duration_s: float | None = None
    reported_at_ms: int | None = None

    @property
    def reported(self) -> bool:
        return self.reported_at_ms is not None

    def view(self) -> dict[str, Any]:
        return asdict(self)


class BookFormatError(ValueError):
    """reports.json is not a book this code wrote."""


class ReportBook:
    """The recordings since the last end of a shift and whether each has its report.

    Mutations return nothing and never do I/O; the shell saves `to_json()` after each one.
    At most MAX_BOOK_ENTRIES are kept: beyond, the oldest reported entries go first.
    """

    def __init__(self, entries: list[BookEntry] | None = None) -> None:
        self._entries: dict[str, BookEntry] = {e.recording_id: e for e in entries or []}

    def started(self, recording_id: str, started_at_ms: int, trigger_source: str) -> None:
        if recording_id not in self._entries:
            self._entries[recording_id] = BookEntry(recording_id, started_at_ms, trigger_source)
            self._bound()

    def finished(self, recording_id: str, duration_s: float) -> None:
        entry = self._entries.get(recording_id)
        if entry is not None:
            self._entries[recording_id] = _replace(entry, duration_s=round(duration_s, 1))

    def filed(self, recording_id: str, at_ms: int) -> None:
        entry = self._entries[recording_id]
        self._entries[recording_id] = _replace(entry, reported_at_ms=at_ms)

    def get(self, recording_id: str) -> BookEntry | None:
        return self._entries.get(recording_id)

    def missing(self) -> list[BookEntry]:
        return [e for e in self._entries.values() if not e.reported]

    def reported(self) -> list[BookEntry]:
        return [e for e in self._entries.values() if e.reported]

    def clear(self) -> None:
        self._entries.clear()

    def summary(self) -> dict[str, int]:
        """The status document's `reports` member."""
        missing = len(self.missing())
        return {"missing": missing, "filed": len(self._entries) - missing}

    def _bound(self) -> None:
        while len(self._entries) > MAX_BOOK_ENTRIES:
            reported = self.reported()
            oldest = reported[0] if reported else next(iter(self._entries.values()))
            del self._entries[oldest.recording_id]
            log.warning("report book full: forgot the oldest entry")

    def to_json(self) -> bytes:
        entries = [e.view() for e in self._entries.values()]
        return json.dumps({"version": 1, "entries": entries}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ReportBook:
        try:
            document = json.loads(raw)
            entries = [_entry_from(item) for item in document["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BookFormatError(f"not a report book: {type(exc).__name__}") from exc
        if document.get("version") != 1:
            raise BookFormatError("unknown report book version")
        return cls(entries[-MAX_BOOK_ENTRIES:])


def _replace(entry: BookEntry, **changes: Any) -> BookEntry:
    return BookEntry(**{**asdict(entry), **changes})


def _entry_from(item: Any) -> BookEntry:
    if not isinstance(item, dict) or set(item) != set(BookEntry.__dataclass_fields__):
        raise ValueError("entry shape")
    entry = BookEntry(**item)
    ok = (
        isinstance(entry.recording_id, str)
        and RECORDING_ID.fullmatch(entry.recording_id) is not None
        and _is_int(entry.started_at_ms)
        and isinstance(entry.trigger_source, str)
        and (entry.duration_s is None or _is_number(entry.duration_s))
        and (entry.reported_at_ms is None or _is_int(entry.reported_at_ms))
    )
    if not ok:
        raise ValueError("entry values")
    return entry


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- the report (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What the officer reports about one recording (H2O art. 3). Invariant: a reason exactly
    when the person was not warned beforehand."""

    what: str
    warned_beforehand: bool
    not_warned_reason: str | None


REPORT_MEMBERS = frozenset({"what", "warned_beforehand", "not_warned_reason"})


def _text(body: Mapping[str, Any], name: str, max_chars: int) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise invalid(name, f"{name} must be text")
    if _CONTENT.search(value) is None:
        raise invalid(name, f"{name} must not be empty")
    if len(value) > max_chars:
        raise invalid(name, f"{name} may be at most {max_chars} characters")
    if _CONTROL.search(value):
        raise invalid(name, f"{name} holds control characters")
    return value


def parse_report(body: Mapping[str, Any]) -> Report:
    """The report in `body`, or ApiError 422 naming the first member at fault."""
    reject_unknown(dict(body), REPORT_MEMBERS)
    what = _text(body, "what", WHAT_MAX_CHARS)
    warned = body.get("warned_beforehand")
    if not isinstance(warned, bool):
        raise invalid("warned_beforehand", "warned_beforehand must be true or false")
    if warned:
        if body.get("not_warned_reason") is not None:
            raise invalid("not_warned_reason", "not_warned_reason only when not warned")
        return Report(what, True, None)
    reason = _text(body, "not_warned_reason", REASON_MAX_CHARS)
    return Report(what, False, reason)


def report_metadata(
    report: Report, entry: BookEntry, *, officer_id: str | None, filed_at_ms: int
) -> dict[str, Any]:
    """What the encrypted report file carries (next to the recording facts of its header)."""
    return {
        "recording_id": entry.recording_id,
        "recording_started_at_ms": entry.started_at_ms,
        "trigger_source": entry.trigger_source,
        "officer_id": officer_id,
        "filed_at_ms": filed_at_ms,
        "what": report.what,
        "warned_beforehand": report.warned_beforehand,
        "not_warned_reason": report.not_warned_reason,
    }


# -- the shell -----------------------------------------------------------------------------------


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
        return cls(state_dir, store, officer_id, book)

    async def _save(self) -> None:
        data = self.book.to_json()
        await asyncio.to_thread(atomic_write_bytes, self.path, data)

    async def note_started(self, recording_id: str, facts: Mapping[str, Any]) -> None:
        trigger = facts.get("trigger")
        trigger = trigger if isinstance(trigger, Mapping) else {}
        at_ms = trigger.get("at_ms")
        started_at_ms = at_ms if isinstance(at_ms, int) and _is_int(at_ms) else _wall_ms()
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

    async def file(
        self, recording_id: str, body: Mapping[str, Any], officer_id: str
    ) -> dict[str, Any]:
        """File the report; 404 unknown recording, 409 already filed, 422 invalid."""
        entry = self.book.get(recording_id) if RECORDING_ID.fullmatch(recording_id) else None
        if entry is None:
            raise ApiError(404, "unknown_recording", "no recording of this shift has that id")
        report = parse_report(body)
        async with self._lock:
            entry = self.book.get(recording_id)
            if entry is None:
                raise ApiError(404, "unknown_recording", "no recording of this shift has that id")
            if entry.reported:
                raise ApiError(409, "already_filed", "this recording already has its report")
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
                raise ApiError(409, "card_full", "the memory card is full") from exc
            self.book.filed(recording_id, filed_at_ms)
            await self._save()
        return {
            "recording_id": recording_id,
            "filed_at_ms": filed_at_ms,
            "file_id": sealed.sidecar.file_id,
        }


def routes(desk: ReportDesk) -> list[web.RouteDef]:
    async def list_reports(_request: web.Request) -> web.Response:
        return web.json_response(desk.view())

    async def file_report(request: web.Request) -> web.Response:
        identity = identity_of(request)
        try:
            body = await read_json_object(request)
            answer = await desk.file(request.match_info["recording_id"], body, identity.officer_id)
        except ApiError as error:
            return error_response(error)
        return web.json_response(answer)

    return [
        web.get("/api/reports", list_reports),
        web.put("/api/reports/{recording_id}", file_report),
    ]
