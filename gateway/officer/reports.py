"""The officer's reports (RULES R4, H2O art. 3; docs/webui.md section 4): the pure core.

`ReportBook` knows which recordings need a report and which have one (no report text ever);
`Report` is what the officer reports about one recording and `report_metadata` what the sealed
report file carries. The shell is `reports_service.py`; the web face parses request bodies into
a `Report` (gateway/web/report_routes.py).

Invariants:
- the book holds the recordings since the last end of a shift, in order of start, with their
  start time, trigger source and duration, and whether a report was filed: ids, times and
  sources only, never what the officer wrote (that exists only inside the encrypted file);
- a report is filed at most once per recording (evidence is never altered: a correction is a
  later report).
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
    """One recording that needs a report. `duration_s` is None while it runs, and stays None
    for a recording the box never saw end (a power cut): `interrupted` then says it ended with
    the box, not that it still runs."""

    recording_id: str
    started_at_ms: int
    trigger_source: str
    duration_s: float | None = None
    reported_at_ms: int | None = None
    interrupted: bool = False

    @property
    def running(self) -> bool:
        return self.duration_s is None and not self.interrupted

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


def with_held_flags(view: Mapping[str, Any], held: frozenset[str]) -> dict[str, Any]:
    """A view of the book (`{"missing": [...], "filed": [...]}`) with each entry's `held` flag:
    the officer sees that a recording is held (RULES S4), never why."""
    return {
        name: [{**entry, "held": entry["recording_id"] in held} for entry in entries]
        for name, entries in view.items()
    }


def _replace(entry: BookEntry, **changes: Any) -> BookEntry:
    return BookEntry(**{**asdict(entry), **changes})


_OPTIONAL_MEMBERS = frozenset({"interrupted"})  # absent in books written before it existed


def _entry_from(item: Any) -> BookEntry:
    members = set(BookEntry.__dataclass_fields__)
    if not isinstance(item, dict) or not members - _OPTIONAL_MEMBERS <= set(item) <= members:
        raise ValueError("entry shape")
    entry = BookEntry(**item)
    ok = (
        isinstance(entry.recording_id, str)
        and RECORDING_ID.fullmatch(entry.recording_id) is not None
        and _is_int(entry.started_at_ms)
        and isinstance(entry.trigger_source, str)
        and (entry.duration_s is None or _is_number(entry.duration_s))
        and (entry.reported_at_ms is None or _is_int(entry.reported_at_ms))
        and isinstance(entry.interrupted, bool)
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


def parse_report(body: Mapping[str, Any]) -> Report:
    """The report in `body` (a JSON object), or Refused `invalid` naming the first member at
    fault in `field`."""
    unknown = sorted(set(body) - REPORT_MEMBERS)
    if unknown:
        raise invalid(unknown[0], f"unknown member {unknown[0][:64]!r}")
    what = text_member(body, "what", WHAT_MAX_CHARS)
    warned = body.get("warned_beforehand")
    if not isinstance(warned, bool):
        raise invalid("warned_beforehand", "warned_beforehand must be true or false")
    if warned:
        if body.get("not_warned_reason") is not None:
            raise invalid("not_warned_reason", "not_warned_reason only when not warned")
        return Report(what, True, None)
    reason = text_member(body, "not_warned_reason", REASON_MAX_CHARS)
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
