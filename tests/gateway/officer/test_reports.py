"""The report book and the report (RULES R4, docs/webui.md 4): the pure core, no box."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.caller import RefusalKind, Refused
from gateway.officer.reports import BookEntry, BookFormatError, ReportBook
from gateway.officer.reports_form import (
    REASON_MAX_CHARS,
    WHAT_MAX_CHARS,
    ReportRules,
    parse_report,
)

WHAT = "Verbal threat at the market square; subject calmed down after the recording started."
REASON = "No time: the subject approached the colleague at once."
RID = "0123456789abcdef0123456789abcdef"


def test_the_book_tracks_recordings_and_survives_its_file() -> None:
    book = ReportBook()
    book.started(RID, 1000, "lights")
    book.started("f" * 32, 2000, "officer")
    book.finished(RID, 12.34)
    book.filed(RID, 5000)
    assert book.summary() == {"missing": 1, "filed": 1, "running": 1}
    assert [e.recording_id for e in book.missing()] == ["f" * 32]
    again = ReportBook.from_json(book.to_json())
    assert again.get(RID) == BookEntry(RID, 1000, "lights", 12.3, 5000)
    assert again.summary() == book.summary()


def test_warnings_and_corrections_are_in_the_book_and_survive_its_file() -> None:
    book = ReportBook()
    book.started(RID, 1000, "officer")
    book.filed(RID, 2000, "a" * 32)
    book.warned("b" * 32, 3000, "c" * 32)
    book.corrected(RID)
    book.corrected(RID)
    assert book.missing() == []
    assert [e.recording_id for e in book.warnings()] == ["b" * 32]
    again = ReportBook.from_json(book.to_json())
    assert again.get(RID) == BookEntry(RID, 1000, "officer", None, 2000, "recording", "a" * 32, 2)
    assert again.get("b" * 32) == BookEntry("b" * 32, 3000, "", None, 3000, "warning", "c" * 32)


def test_a_version_1_book_is_read_as_recordings_without_file_ids() -> None:
    entry = {
        "recording_id": RID,
        "started_at_ms": 1000,
        "trigger_source": "officer",
        "duration_s": 3.0,
        "reported_at_ms": None,
    }
    book = ReportBook.from_json(json.dumps({"version": 1, "entries": [entry]}).encode())
    assert book.get(RID) == BookEntry(RID, 1000, "officer", 3.0)
    assert json.loads(book.to_json())["version"] == 2


def test_a_recording_the_box_never_saw_end_reads_as_interrupted_after_a_restart() -> None:
    """Issue 16 item 7: a power cut kills a recording; the book on disk still has it without a
    duration. At the next start no recording runs, so it ended with the box: interrupted, still
    missing its report, no longer "running"."""
    book = ReportBook()
    book.started(RID, 1000, "officer")
    book.started("f" * 32, 2000, "lights")
    book.finished("f" * 32, 3.0)
    assert book.summary() == {"missing": 2, "filed": 0, "running": 1}
    after_cut = ReportBook.from_json(book.to_json())
    assert after_cut.close_interrupted() == 1
    assert after_cut.close_interrupted() == 0  # once is enough: nothing runs any more
    entry = after_cut.get(RID)
    assert entry is not None
    assert (entry.interrupted, entry.running, entry.duration_s) == (True, False, None)
    assert after_cut.get("f" * 32) == BookEntry("f" * 32, 2000, "lights", 3.0)
    assert after_cut.summary() == {"missing": 2, "filed": 0, "running": 0}
    assert ReportBook.from_json(after_cut.to_json()).get(RID) == entry


def test_a_book_written_before_interrupted_existed_still_reads() -> None:
    old = (
        b'{"version": 1, "entries": [{"recording_id": "' + RID.encode() + b'",'
        b' "started_at_ms": 1, "trigger_source": "x", "duration_s": null,'
        b' "reported_at_ms": null}]}'
    )
    book = ReportBook.from_json(old)
    assert book.get(RID) == BookEntry(RID, 1, "x")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"version": 3, "entries": []}',
        b'{"entries": []}',
        b'{"version": 1, "entries": [{"recording_id": "../../x"}]}',
        b'{"version": 1, "entries": [{"recording_id": "0123456789abcdef0123456789abcdef",'
        b' "started_at_ms": true, "trigger_source": "x", "duration_s": null,'
        b' "reported_at_ms": null}]}',
        # version 2 shape rules: a warning is always reported; corrections are bounded
        b'{"version": 2, "entries": [{"recording_id": "0123456789abcdef0123456789abcdef",'
        b' "started_at_ms": 1, "trigger_source": "", "duration_s": null,'
        b' "reported_at_ms": null, "kind": "warning", "report_file_id": null, "corrections": 0}]}',
        b'{"version": 2, "entries": [{"recording_id": "0123456789abcdef0123456789abcdef",'
        b' "started_at_ms": 1, "trigger_source": "", "duration_s": null,'
        b' "reported_at_ms": 1, "kind": "recording", "report_file_id": "../x",'
        b' "corrections": 0}]}',
        b'{"version": 2, "entries": [{"recording_id": "0123456789abcdef0123456789abcdef",'
        b' "started_at_ms": 1, "trigger_source": "", "duration_s": null,'
        b' "reported_at_ms": 1, "kind": "recording", "report_file_id": null,'
        b' "corrections": 33}]}',
        # a version 1 book never held version 2 members
        b'{"version": 1, "entries": [{"recording_id": "0123456789abcdef0123456789abcdef",'
        b' "started_at_ms": 1, "trigger_source": "", "duration_s": null,'
        b' "reported_at_ms": 1, "kind": "recording", "report_file_id": null,'
        b' "corrections": 0}]}',
    ],
)
def test_a_damaged_book_is_refused(raw: bytes) -> None:
    with pytest.raises(BookFormatError):
        ReportBook.from_json(raw)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "what"),
        ({"what": "", "warned_beforehand": True}, "what"),
        ({"what": "   \n ", "warned_beforehand": True}, "what"),
        ({"what": "x" * (WHAT_MAX_CHARS + 1), "warned_beforehand": True}, "what"),
        ({"what": 42, "warned_beforehand": True}, "what"),
        ({"what": "bell\x07", "warned_beforehand": True}, "what"),
        ({"what": WHAT}, "warned_beforehand"),
        ({"what": WHAT, "warned_beforehand": "no"}, "warned_beforehand"),
        ({"what": WHAT, "warned_beforehand": False}, "not_warned_reason"),
        ({"what": WHAT, "warned_beforehand": False, "not_warned_reason": ""}, "not_warned_reason"),
        (
            {"what": WHAT, "warned_beforehand": False, "not_warned_reason": "x" * 1001},
            "not_warned_reason",
        ),
        (
            {"what": WHAT, "warned_beforehand": True, "not_warned_reason": REASON},
            "not_warned_reason",
        ),
        ({"what": WHAT, "warned_beforehand": True, "extra": 1}, "extra"),
    ],
)
def test_an_invalid_report_names_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(Refused) as raised:
        parse_report(body)
    assert raised.value.kind is RefusalKind.INVALID
    assert (raised.value.code, raised.value.extra["field"]) == ("invalid", field)


def test_a_valid_report_at_the_bounds() -> None:
    lenient = ReportRules(require_informed_afterwards=False, require_premises=False)
    report = parse_report(
        {
            "what": "w" * WHAT_MAX_CHARS,
            "warned_beforehand": False,
            "not_warned_reason": "line one\nline\ttwo" + "r" * (REASON_MAX_CHARS - 17),
        },
        lenient,
    )
    assert len(report.what) == WHAT_MAX_CHARS
    assert report.not_warned_reason is not None
    body = {"what": "x", "warned_beforehand": True, "not_warned_reason": None}
    assert parse_report(body, lenient)
