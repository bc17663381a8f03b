"""The officer's report book (RULES R4, R7; H2O art. 3; docs/webui.md section 4): the pure core.

`ReportBook` knows which recordings need a report and which have one, and which warnings were
registered without a recording (no report text ever); `metadata` builds what a sealed report,
warning or correction file carries. What the officer writes is parsed in `reports_form.py`; the
shell is `reports_service.py`; the web face is gateway/web/report_routes.py.

Invariants:
- the book holds the entries since the last end of a shift, in order: recordings (with their
  start time, trigger source and duration) and warnings (with the moment they were registered);
  ids, times, sources, file ids and counts only, never what the officer wrote (that exists only
  inside the encrypted files);
- a recording's report is filed at most once, a warning is its own report (filed when
  registered); evidence is never altered: a correction is a later, sealed file linked to the
  first (`corrects_file_id`), which stays as it was.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from common.faults import StorageFault
from gateway.caller import RefusalKind, Refused

log = logging.getLogger(__name__)

RECORDING_ID = re.compile(r"[0-9a-f]{32}")
ENTRY_KINDS = ("recording", "warning")
BOOK_VERSION = 2
MAX_CORRECTIONS = 32  # per entry: a bound on the book's numbers, far above honest use
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
    """One entry of the book: a recording that needs a report (`duration_s` None while it runs,
    and still None for a recording the box never saw end, a power cut: `interrupted` then says
    it ended with the box, not that it still runs), or a warning registered without a recording
    (`kind` "warning": reported when registered, `started_at_ms` is that moment, no trigger, no
    duration). `report_file_id` is the sealed first report (None before it, and for entries of
    a version 1 book); `corrections` counts the corrections filed after it."""

    recording_id: str
    started_at_ms: int
    trigger_source: str
    duration_s: float | None = None
    reported_at_ms: int | None = None
    kind: str = "recording"
    report_file_id: str | None = None
    corrections: int = 0
    interrupted: bool = False

    @property
    def running(self) -> bool:
        return self.kind == "recording" and self.duration_s is None and not self.interrupted

    @property
    def reported(self) -> bool:
        return self.reported_at_ms is not None

    def view(self) -> dict[str, Any]:
        return asdict(self)


class BookFormatError(StorageFault, ValueError):
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

    def filed(self, recording_id: str, at_ms: int, file_id: str | None = None) -> None:
        entry = self._entries[recording_id]
        self._entries[recording_id] = _replace(entry, reported_at_ms=at_ms, report_file_id=file_id)

    def warned(self, warning_id: str, at_ms: int, file_id: str) -> None:
        """A warning registered (and sealed) without a recording."""
        self._entries[warning_id] = BookEntry(
            warning_id, at_ms, "", None, at_ms, "warning", file_id, 0
        )
        self._bound()

    def corrected(self, recording_id: str) -> None:
        entry = self._entries[recording_id]
        self._entries[recording_id] = _replace(entry, corrections=entry.corrections + 1)

    def get(self, recording_id: str) -> BookEntry | None:
        return self._entries.get(recording_id)

    def warnings(self) -> list[BookEntry]:
        return [e for e in self._entries.values() if e.kind == "warning"]

    def missing(self) -> list[BookEntry]:
        return [e for e in self._entries.values() if not e.reported]

    def reported(self) -> list[BookEntry]:
        return [e for e in self._entries.values() if e.reported]

    def clear(self) -> None:
        self._entries.clear()

    def close_interrupted(self) -> int:
        """At the box's start no recording runs: an entry still running is one the box never
        saw end (power cut, crash). Marks those `interrupted`; how many it marked."""
        open_ids = [e.recording_id for e in self._entries.values() if e.running]
        for recording_id in open_ids:
            self._entries[recording_id] = _replace(self._entries[recording_id], interrupted=True)
        return len(open_ids)

    def summary(self) -> dict[str, int]:
        """The status document's `reports` member; `running` of the `missing` still run (the
        page asks for their report once they end)."""
        missing = self.missing()
        running = sum(1 for entry in missing if entry.running)
        return {
            "missing": len(missing),
            "filed": len(self._entries) - len(missing),
            "running": running,
        }

    def _bound(self) -> None:
        while len(self._entries) > MAX_BOOK_ENTRIES:
            reported = self.reported()
            oldest = reported[0] if reported else next(iter(self._entries.values()))
            del self._entries[oldest.recording_id]
            log.warning("report book full: forgot the oldest entry")

    def to_json(self) -> bytes:
        entries = [e.view() for e in self._entries.values()]
        document = {"version": BOOK_VERSION, "entries": entries}
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ReportBook:
        try:
            document = json.loads(raw)
            version = document["version"]
            if version not in (1, BOOK_VERSION):
                raise BookFormatError("unknown report book version")
            entries = [_entry_from(item, version) for item in document["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, BookFormatError):
                raise
            raise BookFormatError(f"not a report book: {type(exc).__name__}") from exc
        return cls(entries[-MAX_BOOK_ENTRIES:])


def with_held_flags(view: Mapping[str, Any], held: frozenset[str]) -> dict[str, Any]:
    """A view of the book (`{"missing": [...], "filed": [...]}`) with each entry's `held` flag:
    the officer sees that a recording is held (RULES S4), never why."""
    return {
        name: [{**entry, "held": entry["recording_id"] in held} for entry in entries]
        for name, entries in view.items()
    }


def _replace(entry: BookEntry, **changes: Any) -> BookEntry:
    return BookEntry(**{**asdict(entry), **changes})


_VERSION_1_FIELDS = frozenset(
    {"recording_id", "started_at_ms", "trigger_source", "duration_s", "reported_at_ms"}
)
_OPTIONAL_MEMBERS = frozenset({"interrupted"})  # absent in books written before it existed


def _entry_from(item: Any, version: int) -> BookEntry:
    """An entry as written by `version` (1: recordings only, before warnings and corrections)."""
    shape = _VERSION_1_FIELDS if version == 1 else set(BookEntry.__dataclass_fields__)
    optional = _OPTIONAL_MEMBERS & shape if version > 1 else frozenset()
    if not isinstance(item, dict) or not shape - optional <= set(item) <= shape:
        raise ValueError("entry shape")
    entry = BookEntry(**item)
    ok = (
        isinstance(entry.recording_id, str)
        and RECORDING_ID.fullmatch(entry.recording_id) is not None
        and _is_int(entry.started_at_ms)
        and isinstance(entry.trigger_source, str)
        and (entry.duration_s is None or _is_number(entry.duration_s))
        and (entry.reported_at_ms is None or _is_int(entry.reported_at_ms))
        and entry.kind in ENTRY_KINDS
        and (entry.kind == "recording" or entry.reported_at_ms is not None)
        and (
            entry.report_file_id is None
            or (
                isinstance(entry.report_file_id, str)
                and RECORDING_ID.fullmatch(entry.report_file_id) is not None
            )
        )
        and _is_int(entry.corrections)
        and 0 <= entry.corrections <= MAX_CORRECTIONS
        and isinstance(entry.interrupted, bool)
    )
    if not ok:
        raise ValueError("entry values")
    return entry


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- the form's text members (pure) ---------------------------------------------------------------


def invalid(field: str, message: str) -> Refused:
    """The refusal naming the member at fault (the page shows the message next to it)."""
    return Refused(RefusalKind.INVALID, "invalid", message, field=field)


def text_member(body: Mapping[str, Any], name: str, max_chars: int) -> str:
    """Member `name` of `body` as text the officer or an admin typed: not blank, at most
    `max_chars`, line breaks and tabs allowed, no other control characters; Refused `invalid`
    naming the member otherwise."""
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


# -- what a sealed file carries (pure) -------------------------------------------------------------


def entry_metadata(
    entry: BookEntry,
    fields: Mapping[str, Any],
    *,
    officer_id: str | None,
    filed_at_ms: int,
    correction: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the encrypted file of a report, a warning or a correction carries: the entry's facts,
    who filed it and when, the officer's `fields` (reports_form.py), and for a correction its
    link: `{"corrects_file_id", "correction_no", "correction_reason"}`."""
    facts: dict[str, Any] = {"entry_kind": entry.kind, "recording_id": entry.recording_id}
    if entry.kind == "warning":
        facts["warned_at_ms"] = entry.started_at_ms
    else:
        facts["recording_started_at_ms"] = entry.started_at_ms
        facts["trigger_source"] = entry.trigger_source
    return {
        **facts,
        "officer_id": officer_id,
        "filed_at_ms": filed_at_ms,
        **fields,
        **(correction or {"corrects_file_id": None}),
    }
