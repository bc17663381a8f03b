"""The report book and the report (RULES R4, docs/webui.md 4): the pure core, no box."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.caller import RefusalKind, Refused
from gateway.officer.reports import (
    REASON_MAX_CHARS,
    WHAT_MAX_CHARS,
    BookEntry,
    BookFormatError,
    ReportBook,
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
        b'{"version": 2, "entries": []}',
        b'{"version": 1, "entries": [{"recording_id": "../../x"}]}',
        b'{"version": 1, "entries": [{"recording_id": "0123456789abcdef0123456789abcdef",'
        b' "started_at_ms": true, "trigger_source": "x", "duration_s": null,'
        b' "reported_at_ms": null}]}',
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
    report = parse_report(
        {
            "what": "w" * WHAT_MAX_CHARS,
            "warned_beforehand": False,
            "not_warned_reason": "line one\nline\ttwo" + "r" * (REASON_MAX_CHARS - 17),
        }
    )
    assert len(report.what) == WHAT_MAX_CHARS
    assert report.not_warned_reason is not None
    assert parse_report({"what": "x", "warned_beforehand": True, "not_warned_reason": None})
