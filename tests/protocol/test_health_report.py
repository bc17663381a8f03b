"""The health report's wire format (protocol/health_report.py): round trip, bounds, refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest

from protocol.health_report import (
    Health,
    HealthRefused,
    QueueClass,
    parse_health,
    signed_message,
    wire,
)

SIGNATURE = bytes(range(64))


def health(**changes: object) -> Health:
    base = Health(
        at_ms=1_700_000_000_000,
        software_version="0.1.0",
        uptime_s=3600,
        recording=False,
        config_applied_serial=7,
        config_pending_serial=None,
        config_last_outcome="applied",
        config_reports_waiting=0,
        card_total_bytes=64 * 10**9,
        card_free_bytes=60 * 10**9,
        files_on_card=3,
        interrupted_files=0,
        queue={"P0": QueueClass(1, 4096), "P1": QueueClass(0, 0), "P2": QueueClass(2, 9000)},
        oldest_waiting_age_s=120,
        blocked_files=0,
        alarms=("card_full",),
        gps_status="fix",
        gps_fix_age_s=1,
        clock_offset_ms=-250,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def tampered(**members: object) -> bytes:
    document = json.loads(wire(health(), SIGNATURE))
    document["health"].update(members)
    return json.dumps(document).encode()


def test_a_report_reads_back_as_itself() -> None:
    report = health()
    assert parse_health(wire(report, SIGNATURE)) == (report, SIGNATURE)


def test_the_signed_bytes_bind_the_box() -> None:
    body = health().body()
    assert signed_message("MVB-1", body) != signed_message("MVB-2", body)
    assert body == health().body(), "canonical: equal reports, equal bytes"


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ({"lat": 52.1}, "unknown members"),
        ({"alarms": ["a detail with spaces"]}, "alarm codes only"),
        ({"alarms": ["x"] * 65}, "at most 64"),
        ({"recording": 1}, "true or false"),
        ({"uptime_s": -1}, "uptime_s"),
        ({"queue": {"P9": {"files": 1, "bytes": 1}}}, "queue"),
        ({"software_version": "1.0 evil"}, "software_version"),
        ({"clock_offset_ms": 1.5}, "clock_offset_ms"),
    ],
)
def test_a_report_outside_its_rules_is_refused_naming_the_member(
    members: dict[str, object], named: str
) -> None:
    with pytest.raises(HealthRefused, match=named):
        parse_health(tampered(**members))


def test_oversized_or_not_json_is_refused() -> None:
    with pytest.raises(HealthRefused, match="bytes"):
        parse_health(b"{" + b" " * 20_000 + b"}")
    with pytest.raises(HealthRefused, match="JSON"):
        parse_health(b"\xff")


def test_a_change_is_what_the_admin_acts_on_not_what_the_clock_moves() -> None:
    report = health()
    assert report.changed_from(None)
    moved = health(at_ms=report.at_ms + 60_000, uptime_s=3660, oldest_waiting_age_s=180)
    assert not moved.changed_from(report)
    assert not health(card_free_bytes=report.card_free_bytes - 10**6).changed_from(report)
    assert health(card_free_bytes=10 * 10**9).changed_from(report), "fill moved a 5 % step"
    assert health(alarms=()).changed_from(report)
    assert health(config_applied_serial=8).changed_from(report)
    assert health(queue={"P0": QueueClass(2, 9000)}).changed_from(report)
