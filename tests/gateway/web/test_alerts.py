"""alerts(document, now_ms): one rule per code of the table in docs/webui.md 3, judged on a
document built by the real builder; a quiet box raises none, each condition raises its code,
and a document judged later ages (gps, uploads, long recordings)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from gateway.officer.shift import Member, Shift, shift_view
from gateway.status_facts import GpsFacts, LinkBudget, StatusInputs, UplinkFacts
from gateway.web import status_view
from gateway.web.status_view import ALERT_CODES, alerts, build_status
from tests.gateway.web.test_status_view import NOW_MS, facts, link
from transport import uplink_files, withdrawal

Document = dict[str, Any]


def quiet() -> Document:
    """A healthy, paired box: a camera delivering, a GPS fix, an uplink that is up, a shift."""
    camera = {"connected": True, "last_packet_age_s": 0.04}
    uplink = UplinkFacts(
        {
            "links": [link("wifi", uploads=0, goodput_mbit_s=8.0)],
            "uploading": [],
            "waiting": [],
            "uploaded_unattested": {"files": 0},
            "uploaded_files": 0,
        },
        {"wifi": LinkBudget(None, 0)},
    )
    inputs: StatusInputs = facts(
        service={
            "state": "standby",
            "recording_for_s": 0.0,
            "cameras": {"dashcam": camera},
            "alarms": {},
        },
        gps=GpsFacts("fix", mode=3, fix_age_s=0.5, lat=52.0, lon=6.0),
        uplink=uplink,
        paired=True,
        fleet={"applied_serial": 3, "reported_serial": 3, "last_check": "ok", "last_outcome": None},
        shift=shift_view(Shift((Member("BOA-1", ()),), NOW_MS), missing=0),
    )
    return build_status(inputs)


def codes(document: Document, now_ms: int = NOW_MS) -> list[str]:
    return [alert["code"] for alert in alerts(document, now_ms)]


def set_path(path: str, value: Any) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        *parents, last = path.split(".")
        target = document
        for name in parents:
            target = target[name]
        target[last] = value

    return change


def pin_blocked(document: Document) -> None:
    document["uplink"]["links"][0]["pin_blocked"] = True


def recording_for(seconds: float) -> Callable[[Document], None]:
    def change(document: Document) -> None:
        document["state"] = document["recording"]["state"] = "recording"
        document["recording"]["elapsed_s"] = seconds

    return change


CASES: list[tuple[str, str, Callable[[Document], None]]] = [
    ("pin_mismatch", "critical", pin_blocked),
    (
        "credentials_withdrawn",
        "critical",
        set_path("alarms.uplink_credentials", "the back office refuses this box's certificate"),
    ),
    ("card_full", "critical", set_path("alarms.card_full", "recording refused: card full")),
    (
        "card_write_failed",
        "critical",
        set_path("alarms.card_write_failed", "write of evidence file 01ab failed: I/O error"),
    ),
    (
        "card_missing",
        "critical",
        set_path("alarms.card_missing", "the memory card is missing or unreachable"),
    ),
    (
        "card_read_only",
        "critical",
        set_path("alarms.card_read_only", "the memory card turned read-only: replace it"),
    ),
    ("camera_down", "critical", set_path("cameras.dashcam.last_packet_age_s", 7.0)),
    ("camera_down", "critical", set_path("cameras.dashcam.connected", False)),
    (
        "camera_refused",
        "critical",
        set_path("alarms.camera_refused_bodycam", "camera bodycam: 1 sender(s) refused"),
    ),
    ("gps_stale", "warning", set_path("gps", {**quiet()["gps"], "fix": False, "fix_age_s": 45.0})),
    ("report_missing", "warning", set_path("reports.missing", 2)),
    ("no_shift", "warning", set_path("shift", shift_view(None, missing=0))),
    ("report_not_sent", "warning", set_path("fleet.reported_serial", 2)),
    ("upload_blocked", "warning", set_path("alarms.uplink_file_0123456789ab", "blocked: x")),
    ("not_paired", "warning", set_path("uplink", {"state": "not paired", "reason": "-"})),
    ("upload_behind", "warning", set_path("storage.oldest_waiting_age_s", 15 * 86_400.0)),
    ("recording_long", "warning", recording_for(1800.0)),
    (
        "retention_imminent",
        "critical",
        set_path("alarms.retention_imminent", "1 file(s) not uploaded reach the limit"),
    ),
    (
        "retention_near",
        "warning",
        set_path("alarms.retention_near", "2 file(s) not uploaded reach the limit"),
    ),
    (
        "retention_time_unknown",
        "warning",
        set_path("alarms.retention_time_unknown", "1 file(s) not uploaded are kept"),
    ),
    ("time_conflict", "warning", set_path("alarms.time_conflict", "GPS time is 40 s away")),
    ("unpaired", "critical", set_path("alarms.unpaired", "the back office removed this box")),
    (
        "evidence_suspect",
        "critical",
        set_path("alarms.evidence_suspect", "1 file(s) on the card were not this box's to close"),
    ),
]


def test_a_quiet_box_raises_no_alert() -> None:
    assert alerts(quiet(), NOW_MS) == []


@pytest.mark.parametrize(("code", "severity", "change"), CASES)
def test_each_condition_raises_its_alert(
    code: str, severity: str, change: Callable[[Document], None]
) -> None:
    document = quiet()
    change(document)
    (alert,) = alerts(document, NOW_MS)
    assert (alert["code"], alert["severity"]) == (code, severity)
    assert alert["detail"]


def test_every_code_of_the_table_has_a_case() -> None:
    assert sorted({code for code, _, _ in CASES}) == sorted(ALERT_CODES)


def test_every_blocked_file_is_counted_in_one_alert() -> None:
    document = quiet()
    for code in ("uplink_file_0123456789ab", "uplink_file_ba9876543210", "uplink_pin_wifi"):
        document["alarms"][code] = "x"

    blocked = [a for a in alerts(document, NOW_MS) if a["code"] == "upload_blocked"]

    assert [a["detail"] for a in blocked] == [
        "2 file(s) blocked for integrity: a person must release them"
    ]


def test_the_alarm_codes_are_the_uplinks() -> None:
    """The face cannot import transport: its copies of the alarm codes must match."""
    assert status_view.CREDENTIALS_ALARM == withdrawal.ALARM
    assert uplink_files.alarm_code("0" * 32).startswith(status_view.BLOCKED_PREFIX)


def test_just_below_each_threshold_nothing_is_raised() -> None:
    for change in (
        set_path("cameras.dashcam.last_packet_age_s", 4.9),
        set_path("gps", {**quiet()["gps"], "fix": False, "fix_age_s": 29.0}),
        set_path("storage.oldest_waiting_age_s", 14 * 86_400.0),
        recording_for(1799.0),
    ):
        document = quiet()
        change(document)
        assert alerts(document, NOW_MS) == []


def test_a_document_judged_later_ages() -> None:
    document = quiet()
    set_path("gps", {**quiet()["gps"], "fix": False, "fix_age_s": 20.0})(document)
    recording_for(1790.0)(document)
    assert codes(document) == []
    assert codes(document, NOW_MS + 11_000) == ["camera_down", "gps_stale", "recording_long"]
    assert codes(document, NOW_MS - 60_000) == []  # a clock that stepped back ages nothing


def test_critical_alerts_come_first_and_one_per_camera() -> None:
    document = quiet()
    document["cameras"]["bodycam"] = copy.deepcopy(document["cameras"]["dashcam"])
    for camera in document["cameras"].values():
        camera["connected"] = False
    document["reports"]["missing"] = 1
    document["alarms"]["card_full"] = "full"
    raised = alerts(document, NOW_MS)
    assert [a["code"] for a in raised] == [
        "card_full",
        "camera_down",
        "camera_down",
        "report_missing",
    ]
    assert [a["detail"] for a in raised if a["code"] == "camera_down"] == ["bodycam", "dashcam"]


def test_a_camera_gets_time_to_deliver_after_start() -> None:
    document = quiet()
    document["cameras"]["dashcam"] = {"connected": False, "last_packet_age_s": None}
    document["box"]["uptime_s"] = 3.0
    assert codes(document) == []
    document["box"]["uptime_s"] = 12.0
    assert codes(document) == ["camera_down"]


def test_an_unpaired_box_shows_unpaired_not_the_plain_not_paired() -> None:
    document = quiet()
    document["uplink"] = {"state": "not paired", "reason": "-"}
    assert codes(document) == ["not_paired"]
    document["alarms"]["unpaired"] = "the back office removed this box"
    assert codes(document) == ["unpaired"]
