"""The blocked-file report both sides share (transport/blocked_report.py): pure."""

from __future__ import annotations

import json

import pytest

from transport.blocked_report import (
    MAX_REASON_CHARS,
    MAX_REPORT_BYTES,
    BlockedReport,
    BlockedReportRefused,
    parse_report,
)

FILE_ID = "0123456789abcdef0123456789abcdef"
RECORDING_ID = "fedcba9876543210fedcba9876543210"


def test_what_the_box_renders_the_back_office_parses() -> None:
    report = BlockedReport.of(FILE_ID, RECORDING_ID, "the back office holds other bytes", 17)

    assert parse_report(report.render()) == report


def test_the_box_makes_any_reason_printable_and_bounded() -> None:
    report = BlockedReport.of(FILE_ID, RECORDING_ID, "line\nbreak \u00e9" + "x" * 1000, 1)

    assert report.reason.startswith("line?break ?")
    assert len(report.reason) == MAX_REASON_CHARS
    assert len(report.render()) <= MAX_REPORT_BYTES
    assert parse_report(report.render()) == report


def body(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "file_id": FILE_ID,
        "recording_id": RECORDING_ID,
        "reason": "r",
        "at_ms": 1,
    }
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "exactly"),
        (body(extra=1), "exactly"),
        (body(at_ms=None), "exactly"),
        (body(file_id="ABC"), "file_id"),
        (body(recording_id=FILE_ID.upper()), "recording_id"),
        (body(reason=""), "reason"),
        (body(reason="tab\there"), "reason"),
        (body(reason="x" * 301), "reason"),
        (body(at_ms="1"), "at_ms"),
        (body(at_ms=True), "at_ms"),
        (b" " * (MAX_REPORT_BYTES + 1), "too large"),
    ],
)
def test_the_back_office_refuses_what_is_not_a_report(raw: bytes, why: str) -> None:
    with pytest.raises(BlockedReportRefused, match=why):
        parse_report(raw)
