"""The box's health report from its status facts (gateway/health.py): what it says, and that
no position, officer or alarm message is in it."""

from __future__ import annotations

import json

from gateway.health import health_of
from gateway.status_facts import GpsFacts, RecordingFacts, StatusInputs, StorageFacts, UplinkIdle

AT_MS = 1_800_000_000_000


def inputs(alarms: dict[str, str]) -> StatusInputs:
    return StatusInputs(
        at_ms=AT_MS,
        device_serial="MVB-1",
        vehicle_id="car 12",
        uptime_s=90.7,
        service={"alarms": alarms},
        recording=RecordingFacts("ab" * 16, "officer", "P1", 1800.0),
        storage=StorageFacts(
            card_total_bytes=1000,
            card_free_bytes=250,
            reserve_bytes=0,
            retention_days=28,
            files_on_card=4,
            waiting_files={"P0": 1},
            waiting_bytes={"P0": 10},
            oldest_waiting_created_ms=AT_MS - 125_000,
        ),
        uplink=UplinkIdle("off", "off"),
        gps=GpsFacts("fix", mode=3, clock_offset_ms=40, fix_age_s=2.4, lat=52.37, lon=4.89),
        paired=True,
        fleet={"applied_serial": 3, "pending_serial": None, "last_outcome": "applied"},
        shift={"officers": ["officer 4411"]},
        reports={},
        software_version="1.2.3",
    )


def test_the_report_carries_the_fleet_facts_and_nothing_personal() -> None:
    alarms = {
        "uplink_file_0123456789ab": "file 0123456789ab blocked: hash mismatch",
        "card_full": "the card is full near Dorpsstraat 1",
        "Weird Code!": "not a code the report may carry",
    }
    health = health_of(inputs(alarms))
    assert health.recording
    assert (health.config_applied_serial, health.config_last_outcome) == (3, "applied")
    assert (health.uptime_s, health.oldest_waiting_age_s, health.gps_fix_age_s) == (90, 125, 2)
    assert health.queue["P0"].files == 1
    assert health.queue["P2"].files == 0
    assert health.blocked_files == 1
    assert health.alarms == ("card_full", "uplink_file_0123456789ab")
    text = json.dumps(health.to_json_object())
    for personal in ("52.37", "4.89", "4411", "car 12", "Dorpsstraat", "ab" * 16):
        assert personal not in text
